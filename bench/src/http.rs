//! `http`: `wrk` against hello-http served by the wasmkube shim in a CRI pod (through CNI, on the pod IP)
//! and against the reference host (wasmtime-wasi-http's own recipe, same engine settings, allocator and
//! component) listening in a second pod's network namespace, so both are reached over the same CNI bridge.
//! A third target is the shim with its access log on, to show what a line per request costs. A fourth is the
//! shim's own server run in the bench process beside the reference, which splits the shim's gap to the
//! reference into its request path and the node daemon process around it. Rounds
//! interleave the targets, each round starting with the next one, so that drift hits all alike.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use wasmkube_harness::http;
use wasmkube_harness::packages::{self, Package};

use wasmkube_harness::containerd::WASMKUBE_HANDLER;
use wasmkube_harness::cri::ContainerSpec;
use wasmkube_shim::daemon::DAEMON_ALLOCATOR_ENV;
use wasmkube_shim::engine::bind_listener;

use crate::hello_http;
use crate::pods::cpu_seconds_of;
use crate::reference::{GuestContext, ReferenceHost};
use crate::report::{self, NodeArgs};
use wasmkube_contract::env::{ContainerEnv, HTTP_ACCESS_LOG};

/// A pod subnet of its own, apart from the tests' 10.88.3x/4x ranges.
const SUBNET: &str = "10.88.60.0/24";

/// Where the guest sees volume `i` of `--volumes`.
fn volume_path(i: usize) -> String {
    format!("/config/{i}")
}

/// Host directories laid out as the kubelet lays out a ConfigMap volume (a file per key).
struct ConfigVolumes {
    dirs: Vec<tempfile::TempDir>,
}

impl ConfigVolumes {
    fn new(count: usize) -> Result<Self> {
        let dirs = (0..count)
            .map(|_| {
                let dir = tempfile::tempdir().context("creating a volume directory")?;
                std::fs::write(dir.path().join("app.yaml"), "greeting: hello\n").context("writing a volume file")?;
                Ok(dir)
            })
            .collect::<Result<_>>()?;
        Ok(Self { dirs })
    }

    /// As CRI bind mounts of the shim's container: container path, host path, read-only.
    fn mounts(&self) -> Vec<(String, PathBuf, bool)> {
        self.dirs.iter().enumerate().map(|(i, d)| (volume_path(i), d.path().to_path_buf(), true)).collect()
    }

    /// As the other hosts' read-only directories: host path, guest path.
    fn read_only_dirs(&self) -> Vec<(PathBuf, String)> {
        self.mounts().into_iter().map(|(guest, host, _)| (host, guest)).collect()
    }
}

/// Options of the `http` benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Open connections (fixed for the whole run).
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Rounds; each measures the shim, then the reference.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Read-only directory volumes every host gives the guest (as a WasmApp's ConfigMap volumes).
    #[arg(long, default_value_t = 1)]
    pub volumes: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// What one wrk run reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WrkRun {
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Requests completed in the run.
    pub requests: u64,
    /// The serving process's CPU time (user and system, /proc/PID/stat) over the run, per request.
    pub server_cpu_us_per_request: Option<f64>,
    /// Responses that were not 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
}

/// Runs the benchmark and writes its result.
pub fn run(args: Args) -> Result<()> {
    if args.rounds == 0 || args.duration == 0 {
        bail!("--rounds and --duration must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("http starts a private containerd with CNI and needs root");
    }
    with_daemon_allocator_options()?;
    packages::ensure_installed(&[Package::Wrk])?;
    let shim = args.node.shim_binary()?;
    let (ctrd, cri, wasm) = hello_http::node(&shim, SUBNET)?;
    // Every host gives the guest the same read-only directories (a WasmApp's ConfigMap volumes); hello-http
    // never reads them.
    let volumes = ConfigVolumes::new(args.volumes)?;
    let mounts = volumes.mounts();
    let served =
        hello_http::start_pod(&cri, "bench-http", ContainerSpec { mounts: mounts.clone(), ..Default::default() })?;
    let (pod, shim_addr) = (served.pod, served.addr);
    let access_log_env = vec![(HTTP_ACCESS_LOG.to_string(), "true".to_string())];
    let logging = hello_http::start_pod(
        &cri,
        "bench-http-log",
        ContainerSpec { env: access_log_env, mounts, ..Default::default() },
    )?;
    let (logging_pod, logging_addr) = (logging.pod, logging.addr);
    // The guest reads its environment on every request (each is a fresh instance), and the work grows with
    // it: the other hosts get the one containerd gave the shim's container (PATH, HOSTNAME), so that all
    // of them run the same requests.
    let (_, guest_env) = ContainerEnv::split_oci_env(&cri.container_env(&served.container)?)
        .context("the shim's container env as containerd gave it")?;
    // A pod with only its sandbox: its network namespace is where the reference host listens, so that wrk
    // reaches both hosts through the same veth and bridge (loopback would spare the reference that path).
    let reference_pod = cri.run_pod_sandbox("bench-http-reference", WASMKUBE_HANDLER)?;
    let netns = cri.pod_network_namespace(&reference_pod)?;
    let reference_addr = SocketAddr::new(cri.pod_ip(&reference_pod)?, hello_http::PORT);
    let listener = bind_listener(Some(&netns), SocketAddr::from(([0, 0, 0, 0], hello_http::PORT)))
        .with_context(|| format!("binding the reference host in {}", netns.display()))?;
    let guest = GuestContext { env: guest_env, read_only_dirs: volumes.read_only_dirs() };
    let reference = ReferenceHost::start(&wasm, listener, reference_addr, &guest)?;
    let in_process_pod = cri.run_pod_sandbox("bench-http-in-process", WASMKUBE_HANDLER)?;
    let in_process_netns = cri.pod_network_namespace(&in_process_pod)?;
    let in_process_addr = SocketAddr::new(cri.pod_ip(&in_process_pod)?, hello_http::PORT);
    let _in_process = crate::in_process::InProcessShim::start(&wasm, &in_process_netns, hello_http::PORT, &guest)?;

    // Whose CPU time serves each target: the node daemon, or this process (the reference host's threads; the
    // rest of it waits for wrk meanwhile).
    let daemons = ctrd.shim_daemons();
    let [daemon] = daemons[..] else { bail!("expected one node daemon, found {daemons:?}") };
    let reference_server = i32::try_from(std::process::id()).context("this process's pid")?;
    let targets = [
        (WASMKUBE, shim_addr, daemon),
        (REFERENCE, reference.addr(), reference_server),
        (WASMKUBE_ACCESS_LOG, logging_addr, daemon),
        (WASMKUBE_IN_PROCESS, in_process_addr, reference_server),
    ];
    for (name, addr, _) in targets {
        let r = http::get(addr, "/", Duration::from_secs(10))?;
        if (r.status, r.body.as_str()) != (200, hello_http::GREETING) {
            bail!("{name} at {addr} answered {r:?}");
        }
        // Warm-up: compiled code paged in, connections and caches warm.
        wrk(addr, &args, 2)?;
    }
    let mut runs: Vec<(&str, WrkRun)> = Vec::new();
    for round in 0..args.rounds {
        // Each round starts with the next target, so that no target always runs first or right after another.
        let mut order = targets;
        order.rotate_left(round % targets.len());
        for (name, addr, server) in order {
            let cpu_before =
                cpu_seconds_of(server).with_context(|| format!("the {name} server (pid {server}) is gone"))?;
            let mut r = wrk(addr, &args, args.duration)?;
            let cpu = cpu_seconds_of(server).with_context(|| format!("the {name} server (pid {server}) is gone"))?;
            r.server_cpu_us_per_request = (r.requests > 0).then(|| (cpu - cpu_before) * 1e6 / r.requests as f64);
            println!(
                "round {round} {name:<20} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  server CPU {:.1} µs/request",
                r.requests_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.server_cpu_us_per_request.unwrap_or(f64::NAN)
            );
            runs.push((name, r));
        }
    }
    for pod in [&pod, &logging_pod, &reference_pod, &in_process_pod] {
        cri.remove_pod(pod)?;
    }

    let summaries =
        targets.map(|(name, _, _)| (name, Summary::of(runs.iter().filter(|(n, _)| *n == name).map(|(_, r)| r))));
    for (name, s) in &summaries {
        println!(
            "{name:<20} median {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  server CPU {:.1} µs/request (medians of {} runs)",
            s.median_requests_per_sec.unwrap_or(f64::NAN),
            s.median_p50_ms.unwrap_or(f64::NAN),
            s.median_p99_ms.unwrap_or(f64::NAN),
            s.median_server_cpu_us_per_request.unwrap_or(f64::NAN),
            s.runs.len()
        );
    }
    let rps = |name: &str| summaries.iter().find(|(n, _)| *n == name).and_then(|(_, s)| s.median_requests_per_sec);
    let ratio_to_reference = |name: &str| rps(REFERENCE).filter(|t| *t > 0.0).and_then(|t| Some(rps(name)? / t));
    let (ratio, ratio_access_log) = (ratio_to_reference(WASMKUBE), ratio_to_reference(WASMKUBE_ACCESS_LOG));
    let ratio_in_process = ratio_to_reference(WASMKUBE_IN_PROCESS);
    match ratio {
        Some(r) => println!("ratio wasmkube/reference (median req/s): {r:.2}"),
        None => println!("ratio: not measured"),
    }
    if let Some(r) = ratio_access_log {
        println!("ratio wasmkube with access log/reference (median req/s): {r:.2}");
    }
    if let Some(r) = ratio_in_process {
        println!("ratio wasmkube in the bench process/reference (median req/s): {r:.2}");
    }
    // On a machine whose cores wrk, the kernel's network path and the server share, req/s also depends on how
    // the scheduler splits them; the server's own CPU time per request does not.
    let cpu =
        |name: &str| summaries.iter().find(|(n, _)| *n == name).and_then(|(_, s)| s.median_server_cpu_us_per_request);
    let cpu_ratio = cpu(REFERENCE).filter(|r| *r > 0.0).and_then(|r| Some(cpu(WASMKUBE)? / r));
    if let Some(r) = cpu_ratio {
        println!("ratio wasmkube/reference (median server CPU per request, lower is better): {r:.2}");
    }
    let summary = |name: &str| summaries.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let result = json!({
        "name": "http",
        "description": "wrk, fixed connections, GET / of hello-http (which writes no line per request); \
                        wasmkube = shim in a CRI pod on the pod IP (CNI bridge), access log off (the default); \
                        reference = wasmtime-wasi-http serve recipe with the shim's engine settings and allocator, \
                        listening in another pod's network namespace (same bridge); \
                        every host gives the guest the environment containerd gave the shim's container \
                        (the guest reads it on every request) and `volumes` read-only directories, as a WasmApp's \
                        ConfigMap volumes (the guest never reads them; the reference opens them per request, as \
                        wasmtime serve --dir does); \
                        wasmkube_access_log = the shim with WASMKUBE_HTTP_ACCESS_LOG=true (one line per request to the container log); \
                        wasmkube_in_process = the shim's NodeEngine serving the same component in the bench process, \
                        in a third pod's network namespace (its request path without the node daemon process); \
                        rounds interleaved, each starting with the next target",
        "duration_secs": args.duration,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "volumes": args.volumes,
        "rounds": args.rounds,
        "wasmkube": summary(WASMKUBE),
        "reference": summary(REFERENCE),
        "wasmkube_access_log": summary(WASMKUBE_ACCESS_LOG),
        "wasmkube_in_process": summary(WASMKUBE_IN_PROCESS),
        "ratio": ratio,
        "ratio_access_log": ratio_access_log,
        "ratio_in_process": ratio_in_process,
        "cpu_per_request_ratio": cpu_ratio,
        "ratio_definition": "median req/s (wasmkube, access log off) / median req/s (reference); \
                             ratio_access_log: the same with the access log on; \
                             ratio_in_process: the same for the shim's server in the bench process; \
                             cpu_per_request_ratio: median server CPU time per request (wasmkube, the node daemon's; \
                             reference, the bench process's) / the reference's",
        "shim": shim.display().to_string(),
        "containerd_version": ctrd.server_version()?,
        "date": report::now_rfc3339(),
        "git_commit": report::git_commit(),
        "host": { "cpus": report::cpus(), "kernel": report::kernel() },
    });
    let out = args.node.out_or(|| report::results_dir().join("http.json"));
    report::write_json(&out, &result)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The targets, as named in the output.
const WASMKUBE: &str = "wasmkube";
const REFERENCE: &str = "reference";
const WASMKUBE_ACCESS_LOG: &str = "wasmkube_access_log";
const WASMKUBE_IN_PROCESS: &str = "wasmkube_in_process";

/// One target's runs and their medians.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Median of the runs' requests per second.
    pub median_requests_per_sec: Option<f64>,
    /// Median of the runs' 50th percentile latencies, milliseconds.
    pub median_p50_ms: Option<f64>,
    /// Median of the runs' 99th percentile latencies, milliseconds.
    pub median_p99_ms: Option<f64>,
    /// Median of the runs' server CPU time per request, microseconds.
    pub median_server_cpu_us_per_request: Option<f64>,
    /// Every run.
    pub runs: Vec<WrkRun>,
}

impl Summary {
    fn of<'a>(runs: impl Iterator<Item = &'a WrkRun>) -> Self {
        let runs: Vec<WrkRun> = runs.cloned().collect();
        Self {
            median_requests_per_sec: median(runs.iter().map(|r| r.requests_per_sec)),
            median_p50_ms: median(runs.iter().map(|r| r.p50_ms)),
            median_p99_ms: median(runs.iter().map(|r| r.p99_ms)),
            median_server_cpu_us_per_request: median(runs.iter().filter_map(|r| r.server_cpu_us_per_request)),
            runs,
        }
    }
}

/// mimalloc reads its options from the environment once, before `main`: unless they are set, the bench runs
/// itself again with the options the shim gives its daemon, so that the reference host allocates alike.
fn with_daemon_allocator_options() -> Result<()> {
    use std::os::unix::process::CommandExt;

    let missing: Vec<_> = DAEMON_ALLOCATOR_ENV.iter().filter(|(name, _)| std::env::var_os(name).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding the bench binary")?;
    let err = Command::new(exe).args(std::env::args_os().skip(1)).envs(missing.iter().map(|(n, v)| (n, v))).exec();
    Err(err).context("running the bench again with the daemon's allocator options")
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn wrk(addr: SocketAddr, args: &Args, seconds: u64) -> Result<WrkRun> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk against {addr} failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Reads wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun {
        requests_per_sec: -1.0,
        p50_ms: -1.0,
        p90_ms: -1.0,
        p99_ms: -1.0,
        requests: 0,
        server_cpu_us_per_request: None,
        non_2xx: 0,
        socket_errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", v] => run.requests_per_sec = v.parse().ok()?,
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["50%", v] => run.p50_ms = duration_ms(v)?,
            ["90%", v] => run.p90_ms = duration_ms(v)?,
            ["99%", v] => run.p99_ms = duration_ms(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.socket_errors = rest.iter().filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok()).sum()
            }
            _ => {}
        }
    }
    (run.requests_per_sec >= 0.0 && run.p50_ms >= 0.0 && run.p99_ms >= 0.0).then_some(run)
}

/// `812.00us`, `1.23ms`, `2.00s` in milliseconds.
fn duration_ms(v: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ http://127.0.0.1:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   5.00ms   90.00%
    Req/Sec    13.00k     1.00k   14.00k    70.00%
  Latency Distribution
     50%    1.10ms
     75%    1.30ms
     90%  812.00us
     99%    2.00s
  26000 requests in 2.00s, 3.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 5
Requests/sec:  13000.50
Transfer/sec:      1.50MB
";

    #[test]
    fn wrk_report_is_parsed() {
        let r = parse_wrk(SAMPLE).unwrap();
        assert_eq!(r.requests_per_sec, 13000.5);
        assert_eq!((r.p50_ms, r.p90_ms, r.p99_ms), (1.1, 0.812, 2000.0));
        assert_eq!((r.non_2xx, r.socket_errors), (5, 3));
        assert_eq!(r.requests, 26000);
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }
}
