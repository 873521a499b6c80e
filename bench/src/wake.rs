//! `wake`: a request to an app at zero through the operator's activator, which wakes it by starting a hello-http
//! pod through CRI under our shim, waits until the pod answers, then proxies — timed from send to full response.
//! Then, with the pod running, requests through the activator against requests straight to the pod.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde_json::json;
use wasmkube_harness::cri::{CriClient, Pod};
use wasmkube_harness::http;
use wasmkube_operator::activator::{
    serve, Activator, ActivatorMetrics, ActivatorSettings, AppKey, WakeError, Waker, Woken,
};

use crate::hello_http;
use crate::report::{self, NodeArgs};
use crate::stats::Summary;

/// A pod subnet of its own, apart from the `http` bench's and the tests' ranges.
const SUBNET: &str = "10.88.61.0/24";
/// The `Host` a client in the cluster sends to the app's Service.
const HOST_NAME: &str = "hello.apps.svc.cluster.local";
/// How often the bench's stand-in for the kubelet's readiness probe asks the pod.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// The probe's `User-Agent`: the shim serves kubelet probes without counting them as demand.
const PROBE_USER_AGENT: &str = "kube-probe/1.33 (wasmkube-bench)";
/// Longest a woken pod may take to answer, and a request to be held.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two wakes of the app: the runs are spaced by it, so each one's wake is let through.
const WAKE_INTERVAL: Duration = Duration::from_millis(200);

/// Options of the `wake` benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured wake-ups (after one warm-up).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Requests through the activator, and as many straight to the pod, once it is awake.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// When each step of one wake-up ended.
#[derive(Debug, Clone, Copy)]
struct WakeTimes {
    /// The activator called the waker.
    called: Instant,
    /// StartContainer returned with the container running.
    started: Instant,
    /// The pod answered the readiness probe and became the app's backend.
    ready: Instant,
}

/// A woken pod, the address it serves on, and when each step ended; or why waking failed.
type WokenPod = Result<(Pod, SocketAddr, WakeTimes), String>;

/// The app's pod as the waker knows it.
#[derive(Default)]
enum Replica {
    /// Scaled to zero: the next wake starts a pod.
    #[default]
    None,
    /// A pod is starting.
    Starting,
    /// The last wake-up finished.
    Woken(Box<WokenPod>),
}

type Current = Arc<Mutex<Replica>>;

/// Wakes the app as Kubernetes would for a scaled-to-zero app: a pod started through CRI, ready once it answers
/// HTTP, then set as the app's backend. Like the scale patch's `test` op, a wake while a pod exists is a no-op.
struct PodWaker {
    cri: Arc<CriClient>,
    activator: OnceLock<Weak<Activator>>,
    pods_started: AtomicUsize,
    current: Current,
}

fn lock(current: &Current) -> std::sync::MutexGuard<'_, Replica> {
    current.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodWaker {
    fn new(cri: Arc<CriClient>) -> Arc<Self> {
        Arc::new(Self {
            cri,
            activator: OnceLock::new(),
            pods_started: AtomicUsize::new(0),
            current: Current::default(),
        })
    }

    /// Takes the wake-up once it has finished, leaving the app at zero as far as the waker knows.
    fn take_finished(&self) -> Option<WokenPod> {
        let mut current = lock(&self.current);
        match std::mem::take(&mut *current) {
            Replica::Woken(woken) => Some(*woken),
            other => {
                *current = other;
                None
            }
        }
    }
}

#[async_trait]
impl Waker for PodWaker {
    async fn wake(&self, app: &AppKey) -> Result<Woken, WakeError> {
        let called = Instant::now();
        {
            let mut current = lock(&self.current);
            if !matches!(*current, Replica::None) {
                return Ok(Woken::AlreadyAwake(1));
            }
            *current = Replica::Starting;
        }
        let name = format!("wake-{}", self.pods_started.fetch_add(1, Ordering::Relaxed));
        let (cri, current, app) = (self.cri.clone(), self.current.clone(), app.clone());
        let activator = self.activator.get().cloned();
        // Why: the waker only signals demand, as the scale patch does; the pod starts while requests wait.
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || start_until_ready(&cri, &name, called))
                .await
                .map_err(|e| format!("the wake task failed: {e}"))
                .and_then(|r| r.map_err(|e| format!("{e:#}")));
            let backend = result.as_ref().ok().map(|(_, addr, _)| *addr);
            if let Err(e) = &result {
                tracing::warn!(%app, error = %e, "waking the app failed");
            }
            // Why: recorded before the backend is set, so it is there when the held request's response arrives.
            *lock(&current) = Replica::Woken(Box::new(result));
            match (backend, activator.as_ref().and_then(Weak::upgrade)) {
                (Some(addr), Some(activator)) => activator.state().set_backends(&app, vec![addr]),
                (Some(_), None) => tracing::warn!(%app, "the activator is gone; the woken pod is not routed"),
                (None, _) => {}
            }
        });
        Ok(Woken::Scaled)
    }
}

/// Starts a hello-http pod and probes it until it answers `GET /` with 200.
fn start_until_ready(cri: &CriClient, name: &str, called: Instant) -> Result<(Pod, SocketAddr, WakeTimes)> {
    let hello_http::Started { pod, addr, .. } = hello_http::start_pod(cri, name, Default::default())?;
    let started = Instant::now();
    let deadline = started + READY_TIMEOUT;
    loop {
        // Why: stands in for the kubelet's readiness probe, which Kubernetes waits for before the pod is a backend.
        match http::get_as(addr, PROBE_USER_AGENT, "/", Duration::from_secs(1)) {
            Ok(r) if r.status == 200 => break,
            Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(PROBE_INTERVAL),
            Ok(r) => bail!("pod {name} at {addr} still answers {} after {READY_TIMEOUT:?}", r.status),
            Err(e) => return Err(e).with_context(|| format!("pod {name} at {addr} not ready in {READY_TIMEOUT:?}")),
        }
    }
    Ok((pod, addr, WakeTimes { called, started, ready: Instant::now() }))
}

/// Milliseconds of one wake-up: in total, and split at the waker's call, the container running and the pod ready.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WakeSample {
    total: f64,
    to_waker: f64,
    pod_start: f64,
    ready: f64,
    proxy: f64,
}

impl WakeSample {
    fn new(sent: Instant, times: WakeTimes, answered: Instant) -> Self {
        let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1000.0;
        Self {
            total: ms(sent, answered),
            to_waker: ms(sent, times.called),
            pod_start: ms(times.called, times.started),
            ready: ms(times.started, times.ready),
            proxy: ms(times.ready, answered),
        }
    }
}

/// What the benchmark measured.
struct Measured {
    wakes: Vec<WakeSample>,
    via_activator: Vec<f64>,
    direct: Vec<f64>,
}

/// Runs the benchmark and writes its result.
pub fn run(args: Args) -> Result<()> {
    ensure!(args.runs > 0 && args.requests > 0, "--runs and --requests must be at least 1");
    if !nix::unistd::geteuid().is_root() {
        bail!("wake starts a private containerd with CNI and needs root");
    }
    let shim = args.node.shim_binary()?;
    let (ctrd, cri, _) = hello_http::node(&shim, SUBNET)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("building the tokio runtime")?;
    // Why: the last handle of the CRI client, which owns a runtime of its own, must drop outside async code.
    let cri = Arc::new(cri);
    let measured = runtime.block_on(measure(&cri, &args))?;

    let wake = |part: fn(&WakeSample) -> f64| {
        Summary::of(&measured.wakes.iter().map(part).collect::<Vec<_>>()).context("no wake-ups measured")
    };
    let total = wake(|s| s.total)?;
    let to_waker = wake(|s| s.to_waker)?;
    let pod_start = wake(|s| s.pod_start)?;
    let ready = wake(|s| s.ready)?;
    let proxy = wake(|s| s.proxy)?;
    let via = Summary::of(&measured.via_activator).context("no requests through the activator")?;
    let direct = Summary::of(&measured.direct).context("no direct requests")?;
    let ratio = via.median_ms / direct.median_ms;

    println!("{:<34} {:>10} {:>10} {:>10}", "ms", "median", "min", "max");
    for (name, s) in [
        ("wake-up: send -> full response", &total),
        ("  send -> waker called", &to_waker),
        ("  waker -> container running (CRI)", &pod_start),
        ("  running -> answers (probe)", &ready),
        ("  ready -> response (proxy)", &proxy),
        ("awake: through the activator", &via),
        ("awake: straight to the pod", &direct),
    ] {
        println!("{name:<34} {:>10.2} {:>10.2} {:>10.2}", s.median_ms, s.min_ms, s.max_ms);
    }
    println!("activator / direct (median): {ratio:.2}");
    println!(
        "readiness: the bench probes the pod every {} ms in place of the kubelet's readiness probe",
        PROBE_INTERVAL.as_millis()
    );

    let release = report::is_release_build(&shim);
    let result = json!({
        "name": "wake",
        "description": "GET / (Host: hello.apps.svc.cluster.local) to the operator's activator on 127.0.0.1 while \
                        the app has no pod; the activator holds it and calls a bench Waker that does what Kubernetes \
                        does for a scaled-to-zero app: RunPodSandbox + CreateContainer + StartContainer of hello-http \
                        through CRI under the wasmkube handler (component cached, one warm-up), then probes the pod's \
                        GET / every 5 ms in place of the kubelet's readiness probe and sets it as the app's backend; \
                        timed from send to full 200 response; the pod is removed after each run. Then, with the pod \
                        running, requests on one keep-alive connection through the activator and straight to the \
                        pod IP, interleaved",
        "build": if release { "release" } else { "debug" },
        "runs": args.runs,
        "warmup_runs": 1,
        "probe_interval_ms": PROBE_INTERVAL.as_secs_f64() * 1000.0,
        "wake": {
            "total": total,
            "split": { "to_waker": to_waker, "pod_start": pod_start, "ready": ready, "proxy": proxy },
            "split_definition": "to_waker: send until the activator calls the waker; pod_start: CRI calls until \
                                 the container runs and the pod IP is known; ready: until the pod answers the probe; proxy: backend set \
                                 until the full response",
        },
        "awake": {
            "requests": args.requests,
            "via_activator": via,
            "direct": direct,
            "ratio": ratio,
            "ratio_definition": "median(via activator) / median(direct)",
        },
        "environment": report::environment(&ctrd, &shim)?,
    });
    let out = args.node.out_or(|| report::result_path("wake", release));
    report::write_json(&out, &result)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Serves the activator on loopback and measures wake-ups, then the awake app through it and directly.
async fn measure(cri: &Arc<CriClient>, args: &Args) -> Result<Measured> {
    let waker = PodWaker::new(cri.clone());
    let settings =
        ActivatorSettings { hold_timeout: READY_TIMEOUT, wake_interval: WAKE_INTERVAL, ..Default::default() };
    let activator = Activator::new(settings, waker.clone(), ActivatorMetrics::default());
    let _ = waker.activator.set(Arc::downgrade(&activator));
    let app = AppKey::new("apps", "hello");
    // Why: the activator serves only apps that have a Service; its ClusterIP is never dialled here.
    let cluster_ip = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 80), 80));
    activator.state().set_routes(HashMap::from([(cluster_ip, app.clone())]));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.context("binding the activator")?;
    let addr = listener.local_addr().context("the activator's address")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(activator.clone(), listener, async {
        let _ = stopped.await;
    }));

    let mut wakes = Vec::with_capacity(args.runs);
    // Why: the first run compiles and caches the component, as on a node that already ran the app.
    for run in 0..=args.runs {
        let (pod, sample) = request_at_zero(&waker, addr).await?;
        println!("run {run}{}: {:.1} ms", if run == 0 { " (warm-up)" } else { "" }, sample.total);
        if run > 0 {
            wakes.push(sample);
        }
        activator.state().set_backends(&app, Vec::new());
        remove_pod(cri, pod).await?;
        // Why: spacing, not measurement: the activator wakes an app at most once per interval.
        tokio::time::sleep(WAKE_INTERVAL).await;
    }

    let (pod, backend) = {
        let (pod, _) = request_at_zero(&waker, addr).await?;
        let backend =
            activator.state().backends_in_order(&app).first().copied().context("the woken app has no backend")?;
        (pod, backend)
    };
    let (via_activator, direct) = awake(addr, backend, args.requests).await?;
    activator.state().set_backends(&app, Vec::new());
    remove_pod(cri, pod).await?;
    let _ = stop.send(());
    server.await.context("the activator task failed")?;
    Ok(Measured { wakes, via_activator, direct })
}

/// One request to the app at zero: sent to the activator on a new connection, timed to its full response.
async fn request_at_zero(waker: &PodWaker, activator: SocketAddr) -> Result<(Pod, WakeSample)> {
    let sent = Instant::now();
    let mut client = connect(activator).await?;
    let (status, body) = get(&mut client, HOST_NAME).await?;
    let answered = Instant::now();
    let woken = waker.take_finished().context("the activator answered but no wake-up has finished")?;
    let (pod, _, times) = woken.map_err(|e| anyhow!("waking the app failed: {e}"))?;
    ensure!((status, body.as_str()) == (200, hello_http::GREETING), "the request at zero got {status}: {body:?}");
    Ok((pod, WakeSample::new(sent, times, answered)))
}

/// `requests` timed requests each through the activator and straight to `backend`, interleaved, each on one
/// keep-alive connection, after a few untimed ones.
async fn awake(activator: SocketAddr, backend: SocketAddr, requests: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let backend_host = backend.to_string();
    let mut targets = [(connect(activator).await?, HOST_NAME), (connect(backend).await?, backend_host.as_str())];
    let mut samples = [Vec::with_capacity(requests), Vec::with_capacity(requests)];
    for i in 0..requests + 10 {
        for ((client, host), samples) in targets.iter_mut().zip(samples.iter_mut()) {
            let sent = Instant::now();
            let (status, body) = get(client, host).await?;
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            ensure!(status == 200, "GET / with Host {host} got {status}: {body:?}");
            if i >= 10 {
                samples.push(ms);
            }
        }
    }
    let [via_activator, direct] = samples;
    Ok((via_activator, direct))
}

async fn remove_pod(cri: &Arc<CriClient>, pod: Pod) -> Result<()> {
    let cri = cri.clone();
    tokio::task::spawn_blocking(move || cri.remove_pod(&pod))
        .await
        .context("the pod removal task failed")?
        .context("removing the woken pod")
}

/// An HTTP/1.1 client connection to `addr`.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).with_context(|| format!("setting TCP_NODELAY towards {addr}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "client connection ended with an error");
        }
    });
    Ok(sender)
}

/// `GET /` with `Host: host`; the status and the whole body.
async fn get(client: &mut SendRequest<Empty<Bytes>>, host: &str) -> Result<(u16, String)> {
    client.ready().await.context("the connection closed")?;
    let request = hyper::Request::get("/")
        .header(HOST, host)
        .header(USER_AGENT, "wasmkube-bench")
        .body(Empty::new())
        .context("building GET /")?;
    let response = client.send_request(request).await.with_context(|| format!("GET / with Host {host}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.context("reading the response body")?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_is_split_at_its_steps() {
        let sent = Instant::now();
        let at = |ms| sent + Duration::from_millis(ms);
        let times = WakeTimes { called: at(2), started: at(30), ready: at(45) };
        let s = WakeSample::new(sent, times, at(50));
        assert_eq!((s.total, s.to_waker, s.pod_start, s.ready, s.proxy), (50.0, 2.0, 28.0, 15.0, 5.0));
        assert_eq!(s.to_waker + s.pod_start + s.ready + s.proxy, s.total);
    }
}
