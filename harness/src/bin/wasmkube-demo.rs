//! `make demo`: the node path, step by step, on a fresh machine as root. A private containerd with CRI
//! and CNI and a local registry start; `wasmkube push` publishes the hello-http component; a pod under
//! RuntimeClass handler `wasmkube` runs it from `oci://`, and its pod IP answers HTTP. Before that, a
//! wasi:cli component runs with `ctr run --rm`. Everything is torn down at the end.
//!
//! Usage: `wasmkube-demo --shim PATH --cli PATH` (the Makefile passes the freshly built binaries).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::{ContainerSpec, ContainerState};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::registry::Registry;
use wasmkube_harness::{guests, http, wait_until, ContainerdOpts, PrivateContainerd};

use wasmkube_contract::component::oci_uri;
use wasmkube_contract::env::ContainerEnv;
use wasmkube_contract::metrics::{LABEL_NAMESPACE, LABEL_WASMAPP, REQUESTS_TOTAL};
use wasmkube_contract::runtime::RUNTIME_TYPE as RUNTIME;
const SUBNET: &str = "10.91.0.0/24";
const HTTP_PORT: u16 = 8080;

struct Args {
    shim: PathBuf,
    cli: PathBuf,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo starts a private containerd and needs root");
    }
    let t0 = Instant::now();
    let step = |what: &str| println!("==> [{:>6.2}s] {what}", t0.elapsed().as_secs_f64());

    step("starting a local registry (Debian's docker-registry on 127.0.0.1)");
    let registry = Registry::start()?;
    println!("    registry at {}", registry.host());

    step("starting a private containerd (CRI, CNI bridge) with containerd-shim-wasmkube-v1 registered");
    let mut opts = ContainerdOpts::with_shim(&args.shim);
    opts.cni = Some(CniOpts { subnet: SUBNET.into() });
    opts.insecure_registries.push(registry.host());
    let ctrd = PrivateContainerd::start(opts)?;
    println!("    containerd {} at {}", ctrd.server_version()?, ctrd.socket().display());

    step("ctr run --rm of hello-cli (a wasi:cli component in an image's rootfs)");
    run_hello_cli(&ctrd)?;

    step("wasmkube push of hello-http (a wasi:http component) to the registry");
    let reference = format!("{}/wasmkube/hello-http:demo", registry.host());
    let wasm = guests::guest_wasm("hello_http")?;
    let out = Command::new(&args.cli)
        .arg("push")
        .arg(&wasm)
        .arg(&reference)
        .output()
        .with_context(|| format!("running {}", args.cli.display()))?;
    ensure!(out.status.success(), "wasmkube push failed: {}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("    pushed {reference} → {digest}");

    step("a pod under runtime handler `wasmkube` runs oci://…@digest, as the operator renders it");
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    let cri = ctrd.cri()?;
    wait_until("CRI sees the pause image", Duration::from_secs(10), || {
        cri.image_id(PAUSE_IMAGE).is_ok_and(|id| id.is_some())
    })?;
    let started = Instant::now();
    let pod = cri.run_pod_sandbox("hello-http", WASMKUBE_HANDLER)?;
    let repo = reference.rsplit_once(':').map_or(reference.as_str(), |(repo, _)| repo);
    let spec = ContainerSpec {
        name: "hello-http".into(),
        image: PAUSE_IMAGE.into(),
        command: vec![oci_uri(&format!("{repo}@{digest}"))],
        // As the operator renders it: the port, and the labels of the app's request metrics.
        env: ContainerEnv {
            app: Some("hello-http".into()),
            namespace: Some("demo".into()),
            http_port: Some(HTTP_PORT),
            ..ContainerEnv::default()
        }
        .to_vars()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        ..Default::default()
    };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Running, Duration::from_secs(60))?;
    let ip = cri.pod_ip(&pod)?;
    println!(
        "    pod running ({:?}) after {:.0} ms (pull, verify, compile, listen), pod IP {ip}",
        status.state,
        started.elapsed().as_secs_f64() * 1e3
    );

    step(&format!("GET http://{ip}:{HTTP_PORT}/ (the pod IP, through the CNI bridge)"));
    let addr = std::net::SocketAddr::new(ip, HTTP_PORT);
    let asked = Instant::now();
    let response = http::get(addr, "/", Duration::from_secs(10))?;
    println!("    HTTP {} in {:.1} ms: {}", response.status, asked.elapsed().as_secs_f64() * 1e3, response.body.trim());
    ensure!(response.status == 200, "the component answered {}: {}", response.status, response.body);

    if let Some(metrics) = ctrd.shim_metrics_addr() {
        step(&format!("GET http://{metrics}/metrics (the node endpoint the operator scrapes for scale to zero)"));
        let scraped = http::get(metrics, "/metrics", Duration::from_secs(10))?;
        ensure!(scraped.status == 200, "the node metrics endpoint answered {}", scraped.status);
        ensure!(
            scraped
                .body
                .contains(&format!("{REQUESTS_TOTAL}{{{LABEL_NAMESPACE}=\"demo\",{LABEL_WASMAPP}=\"hello-http\"")),
            "the node metrics endpoint has no series of the pod:\n{}",
            scraped.body
        );
        for line in scraped.body.lines().filter(|l| l.contains("wasmapp=\"hello-http\"")) {
            println!("    {line}");
        }
    }

    step("stopping the pod (SIGTERM drains the listener), containerd and the registry");
    cri.stop_container(&id, 10)?;
    let stopped = cri.wait_container_state(&id, ContainerState::Exited, Duration::from_secs(30))?;
    println!("    container exited with {}", stopped.exit_code);
    cri.remove_pod(&pod)?;
    drop(cri);
    drop(ctrd);
    drop(registry);
    step("done");
    Ok(())
}

/// The first step of the project: a component in an image's rootfs, through `ctr`.
fn run_hello_cli(ctrd: &PrivateContainerd) -> Result<()> {
    let wasm = std::fs::read(guests::guest_wasm("hello-cli")?).context("reading hello-cli.wasm")?;
    let image = "docker.io/wasmkube/hello-cli:demo";
    // Why CRI's namespace: one daemon per containerd namespace, and on a node everything is in k8s.io; the
    // pod below then shares this daemon (and its node metrics endpoint).
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(image, wasm, "/app.wasm"))?;
    let args = [
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "GREETING=hello from wasmkube",
        image,
        "demo-hello",
        "/app.wasm",
    ];
    let started = Instant::now();
    let out = ctrd.ctr_in(CRI_NAMESPACE, args.iter().chain(&["from", "the", "demo"]))?;
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        println!("    | {line}");
    }
    println!("    exit code {} after {:.0} ms", out.code, started.elapsed().as_secs_f64() * 1e3);
    if out.code != 0 || !out.stdout.contains("hello from a WebAssembly component") {
        bail!("the component did not run as expected; containerd log:\n{}", ctrd.log_tail());
    }
    Ok(())
}

fn parse_args() -> Result<Args> {
    let usage = "usage: wasmkube-demo --shim PATH-TO-containerd-shim-wasmkube-v1 --cli PATH-TO-wasmkube";
    let (mut shim, mut cli) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().map(PathBuf::from).context(usage)?;
        match flag.as_str() {
            "--shim" => shim = Some(value),
            "--cli" => cli = Some(value),
            _ => bail!("{usage}"),
        }
    }
    Ok(Args { shim: shim.context(usage)?, cli: cli.context(usage)? })
}
