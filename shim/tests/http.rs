//! wasi:http components through CRI with CNI networking, as the kubelet and a Service would reach them:
//! the pod IP from `PodSandboxStatus`, the port the operator renders (or the node default).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use wasmkube_contract::env::{HTTP_ACCESS_LOG, HTTP_PORT};
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::log::stream_lines;
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient, DnsConfig, Pod, PodOptions};
use wasmkube_harness::dns::DnsServer;
use wasmkube_harness::http::{self, FixedServer};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::packages::{self, Package};
use wasmkube_harness::{guests, require_root, wait_until, ContainerdOpts, PrivateContainerd};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1");
const HELLO_HTTP: &str = "docker.io/wasmkube/hello-http:test";
const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per container on the test nodes (node config `http_max_in_flight_requests`).
const MAX_IN_FLIGHT: usize = 3;
/// Largest request body on the test nodes (node config `http_max_request_body_bytes`).
const MAX_BODY: usize = 4096;
/// Longest a request may run in a guest on the test nodes (node config `http_request_timeout_seconds`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);

/// A private containerd on `subnet` whose shim config bounds requests in flight, with the pause image
/// and the hello-http component imported for CRI.
fn http_node(subnet: &str) -> Result<(PrivateContainerd, CriClient)> {
    let mut opts = ContainerdOpts::with_shim(SHIM);
    opts.cni = Some(CniOpts { subnet: subnet.into() });
    opts.shim_settings = vec![
        format!("http_max_in_flight_requests = {MAX_IN_FLIGHT}"),
        format!("http_max_request_body_bytes = {MAX_BODY}"),
        format!("http_request_timeout_seconds = {}", REQUEST_TIMEOUT.as_secs()),
    ];
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    // A cdylib guest: cargo names the file after the crate with an underscore.
    let wasm = std::fs::read(guests::guest_wasm("hello_http")?)?;
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(HELLO_HTTP, wasm, "/hello-http.wasm"))?;
    let cri = ctrd.cri()?;
    for image in [PAUSE_IMAGE, HELLO_HTTP] {
        wait_until(&format!("CRI sees {image}"), Duration::from_secs(10), || {
            cri.image_id(image).is_ok_and(|id| id.is_some())
        })?;
    }
    Ok((ctrd, cri))
}

/// A running hello-http container in a pod of its own, answering on its pod IP.
struct HttpPod {
    pod: Pod,
    id: String,
    addr: SocketAddr,
}

/// hello-http prints a line per request only when asked: the tests see from it that a request is in the guest.
const LOG_REQUESTS: (&str, &str) = ("HELLO_HTTP_LOG_REQUESTS", "true");

fn start_http_pod(cri: &CriClient, name: &str, env: Vec<(String, String)>) -> Result<HttpPod> {
    start_http_pod_with(cri, name, ContainerSpec { env, ..Default::default() })
}

/// A hello-http pod with the env and mounts of `container`.
fn start_http_pod_with(cri: &CriClient, name: &str, container: ContainerSpec) -> Result<HttpPod> {
    let pod = cri.run_pod_sandbox(name, WASMKUBE_HANDLER)?;
    let spec = ContainerSpec { name: "web".into(), image: HELLO_HTTP.into(), ..container };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    cri.wait_container_state(&id, ContainerState::Running, TIMEOUT)?;
    let addr = SocketAddr::new(cri.pod_ip(&pod)?, PORT);
    Ok(HttpPod { pod, id, addr })
}

fn remove(cri: &CriClient, pod: &HttpPod) -> Result<()> {
    cri.stop_pod_sandbox(&pod.pod.id)?;
    cri.remove_pod_sandbox(&pod.pod.id)?;
    Ok(())
}

fn get(addr: SocketAddr, path: &str) -> Result<http::Response> {
    Ok(http::get(addr, path, TIMEOUT)?)
}

/// The bridge's address on the pod network (host-local hands out `.1` as the gateway).
fn gateway(subnet_ip: IpAddr) -> Result<IpAddr> {
    match subnet_ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Ok(IpAddr::from([a, b, c, 1]))
        }
        IpAddr::V6(_) => anyhow::bail!("the test network is IPv4"),
    }
}

fn stdout_of(cri: &CriClient, id: &str) -> Vec<String> {
    cri.read_log(id).map(|log| stream_lines(&log, "stdout").iter().map(|l| l.to_string()).collect()).unwrap_or_default()
}

fn stderr_of(cri: &CriClient, id: &str) -> Vec<String> {
    cri.read_log(id).map(|log| stream_lines(&log, "stderr").iter().map(|l| l.to_string()).collect()).unwrap_or_default()
}

#[test]
fn http_components_serve_on_their_pod_ip_with_limits_traps_and_an_outbound_allowlist() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = http_node("10.88.41.0/24")?;
    // Test servers on the host, reached from the pods through the bridge.
    let allowed = FixedServer::start("0.0.0.0:0".parse()?, "from the allowed host")?;
    let forbidden = FixedServer::start("0.0.0.0:0".parse()?, "from a forbidden host")?;

    // One pod names its port, the other gets the node default: both 8080, each on its own IP. Pod a asks for
    // the access log and for the guest's own line per request; pod b has neither, as by default.
    let a_env =
        [(HTTP_PORT, PORT.to_string()), (HTTP_ACCESS_LOG, "true".into()), (LOG_REQUESTS.0, LOG_REQUESTS.1.into())];
    // Pod a also has a read-only volume (as a ConfigMap) and a writable one (as an emptyDir).
    let (config, scratch) = (tempfile::tempdir()?, tempfile::tempdir()?);
    std::fs::write(config.path().join("site.toml"), "title = \"hello\"\n")?;
    let mounts = vec![
        ("/config".to_string(), config.path().to_path_buf(), true),
        ("/tmp".to_string(), scratch.path().to_path_buf(), false),
    ];
    let a_env = a_env.map(|(k, v)| (k.to_string(), v)).to_vec();
    let a = start_http_pod_with(&cri, "web-a", ContainerSpec { env: a_env, mounts, ..Default::default() })?;
    let gw = gateway(a.addr.ip())?;
    let allowlist = format!("{gw}:{}", allowed.addr().port());
    let b = start_http_pod(&cri, "web-b", vec![("WASMKUBE_ALLOWED_OUTBOUND_HOSTS".into(), allowlist)])?;
    assert_ne!(a.addr, b.addr, "two pods, two IPs");
    assert_eq!(ctrd.shim_daemons().len(), 1, "both pods are served by the one node daemon");

    for pod in [&a, &b] {
        let r = get(pod.addr, "/")?;
        assert_eq!((r.status, r.body.as_str()), (200, "hello from wasmkube"), "{}", pod.addr);
    }
    // Every request's instance sees the volumes opened at create, with their modes, and nothing else.
    let r = get(a.addr, "/file?path=/config/site.toml")?;
    assert_eq!((r.status, r.body.as_str()), (200, "title = \"hello\"\n"));
    let r = http::request(a.addr, "PUT", "/file?path=/tmp/note.txt", b"from the guest", TIMEOUT)?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(std::fs::read_to_string(scratch.path().join("note.txt"))?, "from the guest");
    assert_eq!(get(a.addr, "/file?path=/tmp/note.txt")?.body, "from the guest");
    let r = http::request(a.addr, "PUT", "/file?path=/config/new.txt", b"x", TIMEOUT)?;
    assert_eq!(r.status, 403, "a read-only volume takes no writes: {r:?}");
    assert!(!config.path().join("new.txt").exists());
    assert_eq!(get(a.addr, "/file?path=/etc/passwd")?.status, 404, "nothing outside the volumes");
    // h2c (HTTP/2 with prior knowledge), as a mesh sidecar or gRPC-style client would speak it.
    packages::ensure_installed(&[Package::Curl])?;
    let h2 = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-w", " %{http_version}", "--max-time", "10"])
        .arg(format!("http://{}/", a.addr))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "hello from wasmkube 2", "{h2:?}");
    // Keep-alive: several requests on one connection, one instance each.
    let mut conn = http::Connection::open(a.addr, TIMEOUT)?;
    for i in 0..3 {
        let body = format!("echo number {i}");
        let r = conn.request("POST", "/echo", body.as_bytes())?;
        assert_eq!((r.status, r.body), (200, body));
    }

    let at_limit = "x".repeat(MAX_BODY);
    assert_eq!(conn.request("POST", "/echo", at_limit.as_bytes())?.body.len(), MAX_BODY);
    let over = http::request(a.addr, "POST", "/echo", "x".repeat(MAX_BODY + 1).as_bytes(), TIMEOUT)?;
    assert_eq!(over.status, 413, "{over:?}");

    // A trap fails only its own request.
    let trapped = get(a.addr, "/trap")?;
    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert_eq!(get(a.addr, "/")?.status, 200, "the request after a trap is served");
    wait_until("the trap reaches the container's stderr", Duration::from_secs(5), || {
        stderr_of(&cri, &a.id).iter().any(|l| l.contains("GET /trap: the component trapped: wasm trap: "))
    })?;
    wait_until("guest stdout reaches the container log", Duration::from_secs(5), || {
        stdout_of(&cri, &a.id).iter().any(|l| l == "hello-http: GET /")
    })?;

    // Outbound: only the allowlisted host:port; nothing at all without an allowlist.
    let ok = get(b.addr, &format!("/fetch?url=http://{}/", SocketAddr::new(gw, allowed.addr().port())))?;
    assert_eq!((ok.status, ok.body.as_str()), (200, "status 200"), "{ok:?}");
    let denied = get(b.addr, &format!("/fetch?url=http://{}/", SocketAddr::new(gw, forbidden.addr().port())))?;
    assert_eq!(denied.status, 502, "{denied:?}");
    assert!(denied.body.contains("HttpRequestDenied"), "the guest sees the denial: {denied:?}");
    let none = get(a.addr, &format!("/fetch?url=http://{}/", SocketAddr::new(gw, allowed.addr().port())))?;
    assert!(none.body.contains("HttpRequestDenied"), "no allowlist, no outbound: {none:?}");
    assert_eq!((allowed.served(), forbidden.served()), (1, 0), "denied requests never leave the node");
    let from: Vec<IpAddr> = allowed.peers().iter().map(SocketAddr::ip).collect();
    assert_eq!(from, [b.addr.ip()], "outbound requests leave from the pod's IP, inside its network namespace");

    // The access log: one line per request where asked for; none by default (pod b served three requests).
    wait_until("pod a's access log has its last request", Duration::from_secs(5), || {
        stdout_of(&cri, &a.id).iter().any(|l| l.contains(" \"GET /fetch?url=") && l.contains(" 502 "))
    })?;
    let a_access: Vec<String> = stdout_of(&cri, &a.id).into_iter().filter(|l| l.contains(" HTTP/1.1\" ")).collect();
    assert!(a_access.iter().any(|l| l.contains(" \"GET /trap HTTP/1.1\" 500 ")), "{a_access:?}");
    assert!(a_access.iter().any(|l| l.contains(" \"POST /echo HTTP/1.1\" 413 ")), "{a_access:?}");
    assert_eq!(stdout_of(&cri, &b.id), Vec::<String>::new(), "no access log and no guest lines by default");

    // Over the in-flight bound: 503 at once while the slow requests run; they still succeed.
    let addr = a.addr;
    let slow: Vec<_> =
        (0..MAX_IN_FLIGHT).map(|_| std::thread::spawn(move || http::get(addr, "/slow?ms=4000", TIMEOUT))).collect();
    // Each guest prints its request line first: then it holds its in-flight slot.
    wait_until("the slow requests are all in their guests", Duration::from_secs(10), || {
        stdout_of(&cri, &a.id).iter().filter(|l| l.starts_with("hello-http: GET /slow")).count() == MAX_IN_FLIGHT
    })?;
    let refused = get(a.addr, "/")?;
    assert_eq!(refused.status, 503, "a request over the in-flight bound is refused while the others run");
    assert!(refused.body.contains("too many requests"), "{refused:?}");
    for handle in slow {
        let r = handle.join().map_err(|_| anyhow::anyhow!("slow request thread panicked"))??;
        assert_eq!((r.status, r.body.as_str()), (200, "slept 4000 ms"));
    }
    assert_eq!(get(a.addr, "/")?.status, 200, "room again after the slow requests");

    // Past the request deadline the instance is stopped and the client gets 504.
    let started = Instant::now();
    let late = get(a.addr, "/slow?ms=20000")?;
    assert_eq!(late.status, 504, "{late:?}");
    assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(3), "stopped at the deadline");
    assert_eq!(get(a.addr, "/")?.status, 200, "served again after a timeout");

    remove(&cri, &a)?;
    remove(&cri, &b)?;
    Ok(())
}

#[test]
fn sigterm_drains_requests_in_flight_and_sigkill_ends_at_once() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (_ctrd, cri) = http_node("10.88.42.0/24")?;
    let guest_log = || vec![(LOG_REQUESTS.0.to_string(), LOG_REQUESTS.1.to_string())];
    let a = start_http_pod(&cri, "drain-a", guest_log())?;
    let b = start_http_pod(&cri, "kill-b", guest_log())?;

    // StopContainer with a grace period: SIGTERM, and the slow request in flight still completes.
    let addr = a.addr;
    let slow = std::thread::spawn(move || http::get(addr, "/slow?ms=3000", TIMEOUT));
    wait_until("the slow request is in the guest", Duration::from_secs(10), || {
        stdout_of(&cri, &a.id).iter().any(|l| l.starts_with("hello-http: GET /slow"))
    })?;
    cri.stop_container(&a.id, 20)?;
    let drained = slow.join().map_err(|_| anyhow::anyhow!("slow request thread panicked"))??;
    assert_eq!((drained.status, drained.body.as_str()), (200, "slept 3000 ms"), "drained across StopContainer");
    let status = cri.wait_container_state(&a.id, ContainerState::Exited, TIMEOUT)?;
    assert_eq!(status.exit_code, 0, "a drained HTTP component exits 0: {status:?}");
    assert!(http::get(a.addr, "/", Duration::from_secs(2)).is_err(), "the listener is closed after the drain");

    // No grace period: SIGKILL ends the container and its request at once.
    let addr = b.addr;
    let doomed = std::thread::spawn(move || http::get(addr, "/slow?ms=20000", TIMEOUT));
    wait_until("the doomed request is in the guest", Duration::from_secs(10), || {
        stdout_of(&cri, &b.id).iter().any(|l| l.starts_with("hello-http: GET /slow"))
    })?;
    let killed_at = Instant::now();
    cri.stop_container(&b.id, 0)?;
    let status = cri.wait_container_state(&b.id, ContainerState::Exited, TIMEOUT)?;
    assert_eq!(status.exit_code, 137, "{status:?}");
    let outcome = doomed.join().map_err(|_| anyhow::anyhow!("doomed request thread panicked"))?;
    // Under the request deadline too, so that only the kill can explain the early end.
    ensure!(killed_at.elapsed() < REQUEST_TIMEOUT - Duration::from_secs(2), "SIGKILL did not wait for the request");
    assert!(!outcome.as_ref().is_ok_and(|r| r.status == 200), "the killed request did not complete: {outcome:?}");

    remove(&cri, &a)?;
    remove(&cri, &b)?;
    Ok(())
}

/// The value of `metric` for the series with exactly `labels` in the exposition `text`.
fn series_value(text: &str, metric: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{metric}{labels} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

fn scrape(metrics: SocketAddr) -> Result<String> {
    let r = get(metrics, "/metrics")?;
    ensure!(r.status == 200, "GET /metrics answered {r:?}");
    Ok(r.body)
}

#[test]
fn the_node_endpoint_counts_each_containers_requests_but_not_kubelet_probes() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    const REQUESTS: u64 = 5;
    let (ctrd, cri) = http_node("10.88.43.0/24")?;
    let metrics = ctrd.shim_metrics_addr().ok_or_else(|| anyhow::anyhow!("the harness wrote no metrics_address"))?;
    let env = vec![("WASMKUBE_APP".to_string(), "hello".to_string()), ("WASMKUBE_NAMESPACE".into(), "apps".into())];
    let a = start_http_pod(&cri, "metrics-a", env)?;
    // The operator's env names the app and namespace; the pod and container names come from CRI.
    let labels = r#"{namespace="apps",wasmapp="hello",pod="metrics-a",container="web"}"#;
    let total = |text: &str| series_value(text, "wasmkube_http_requests_total", labels);
    let in_flight = |text: &str| series_value(text, "wasmkube_http_requests_in_flight", labels);

    let before = scrape(metrics)?;
    assert_eq!((total(&before), in_flight(&before)), (Some(0), Some(0)), "{before}");
    for _ in 0..REQUESTS {
        assert_eq!(get(a.addr, "/")?.status, 200);
    }
    let probe = http::get_as(a.addr, "kube-probe/1.33", "/", TIMEOUT)?;
    assert_eq!(probe.status, 200, "a probe is served as usual: {probe:?}");
    let counted = scrape(metrics)?;
    assert_eq!(total(&counted), Some(REQUESTS), "the probe is not counted: {counted}");
    // A guest's in-flight slot is freed when its task ends, a moment after the client has its answer.
    wait_until("no request in flight", Duration::from_secs(5), || {
        scrape(metrics).is_ok_and(|t| in_flight(&t) == Some(0))
    })?;

    let addr = a.addr;
    let slow = std::thread::spawn(move || http::get(addr, "/slow?ms=3000", TIMEOUT));
    wait_until("the slow request is in flight", Duration::from_secs(10), || {
        scrape(metrics).is_ok_and(|t| in_flight(&t) == Some(1))
    })?;
    assert!(!slow.is_finished(), "in flight while the guest still runs");
    let r = slow.join().map_err(|_| anyhow::anyhow!("slow request thread panicked"))??;
    assert_eq!((r.status, r.body.as_str()), (200, "slept 3000 ms"));
    wait_until("the slow request is done", Duration::from_secs(5), || {
        scrape(metrics).is_ok_and(|t| in_flight(&t) == Some(0))
    })?;
    assert_eq!(total(&scrape(metrics)?), Some(REQUESTS + 1));

    remove(&cri, &a)?;
    wait_until("the removed container's series are gone", Duration::from_secs(10), || {
        scrape(metrics).is_ok_and(|t| !t.contains(r#"pod="metrics-a""#))
    })?;
    Ok(())
}

#[test]
fn outbound_names_resolve_with_the_pods_dns_settings_from_inside_its_namespace() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = http_node("10.88.44.0/24")?;
    let backend = FixedServer::start("0.0.0.0:0".parse()?, "from the backend")?;
    // As the kubelet configures a pod with `dnsPolicy: ClusterFirst`: the cluster's nameserver, the pod's
    // namespace first among the search domains, ndots 5.
    let nameserver = std::net::Ipv4Addr::new(10, 88, 44, 1);
    let dns = DnsConfig {
        servers: vec![nameserver.to_string()],
        searches: vec!["apps.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    };
    let pod = cri.run_pod_sandbox_with(
        "resolver",
        WASMKUBE_HANDLER,
        PodOptions { dns_config: Some(dns), ..Default::default() },
    )?;
    // The bridge, and so the nameserver's address on it, exists once the pod has its network.
    let records = HashMap::from([("backend.apps.svc.cluster.local".to_string(), nameserver)]);
    let server = DnsServer::start(SocketAddr::new(nameserver.into(), 53), records)?;
    let port = backend.addr().port();
    let env = vec![("WASMKUBE_ALLOWED_OUTBOUND_HOSTS".to_string(), format!("backend:{port}"))];
    let spec = ContainerSpec { name: "web".into(), image: HELLO_HTTP.into(), env, ..Default::default() };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    cri.wait_container_state(&id, ContainerState::Running, TIMEOUT)?;
    let addr = SocketAddr::new(cri.pod_ip(&pod)?, PORT);

    // A short name, as code in a cluster calls a Service of its own namespace.
    let r = get(addr, &format!("/fetch?url=http://backend:{port}/"))?;
    assert_eq!((r.status, r.body.as_str()), (200, "status 200"), "{r:?}, queries {:?}", server.queries());
    assert_eq!(backend.served(), 1);
    let asked: Vec<_> = server.queries().into_iter().filter(|q| q.name == "backend.apps.svc.cluster.local").collect();
    assert!(!asked.is_empty(), "the pod's search domain was applied: {:?}", server.queries());
    assert!(
        asked.iter().all(|q| q.from.ip() == addr.ip()),
        "the look-up left from the pod's IP, inside its network namespace: {asked:?}"
    );

    // Nothing of the pod's resolver settings reaches the daemon's own mount namespace.
    for pid in ctrd.shim_daemons() {
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        ensure!(!mounts.contains(" /etc/resolv.conf "), "the daemon's namespace has a resolv.conf mount: {mounts}");
    }
    cri.stop_pod_sandbox(&pod.id)?;
    cri.remove_pod_sandbox(&pod.id)?;
    Ok(())
}
