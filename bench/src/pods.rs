//! Pods through CRI, as the kubelet starts them: `pod-start` (RunPodSandbox → container running) and
//! `pod-memory` (RSS and PSS of the shim processes with N pods running), each for the wasmkube handler
//! (sandbox held by the daemon), the wasmkube handler with a pause process as its sandbox (what every
//! wasmkube pod had before, and what a pod gets with the sandbox-process annotation) and runc pods running
//! busybox `sleep` as the reference.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use wasmkube_contract::runtime::SANDBOX_PROCESS_ANNOTATION;
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, RUNC_HANDLER, WASMKUBE_HANDLER};
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient, Pod, PodOptions};
use wasmkube_harness::images::{self, BUSYBOX_IMAGE, PAUSE_IMAGE};
use wasmkube_harness::{guests, procs, ContainerdOpts, PrivateContainerd};

use crate::cri_log;
use crate::report::{self, NodeArgs};
use crate::stats::Summary;

const SLEEPER_IMAGE: &str = "docker.io/wasmkube/sleeper:bench";
/// Room for 1,000 pods and the ones being torn down (a Linux bridge takes at most 1,024 ports, so the
/// handlers' pods are never up at the same time).
const SUBNET: &str = "10.90.0.0/20";
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `pod-start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Measured pods per handler (after one warm-up pod each).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Options of `pod-memory`.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// Pod counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100, 1000])]
    pub pods: Vec<usize>,
    /// How long the pods idle before memory is read.
    #[arg(long, default_value_t = 3)]
    pub settle_seconds: u64,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A runtime handler and the long-running container it runs in every pod.
struct Handler {
    name: &'static str,
    handler: &'static str,
    /// The pods' annotations.
    pod_annotations: HashMap<String, String>,
    container: ContainerSpec,
    /// `argv[0]` suffix of its shim processes.
    shim_binary: &'static str,
}

fn handlers() -> [Handler; 3] {
    let sleeper = ContainerSpec { name: "sleeper".into(), image: SLEEPER_IMAGE.into(), ..Default::default() };
    [
        Handler {
            name: "wasmkube",
            handler: WASMKUBE_HANDLER,
            pod_annotations: HashMap::new(),
            container: sleeper.clone(),
            shim_binary: wasmkube_harness::paths::SHIM_BINARY,
        },
        Handler {
            name: "wasmkube-pause",
            handler: WASMKUBE_HANDLER,
            pod_annotations: HashMap::from([(SANDBOX_PROCESS_ANNOTATION.to_string(), "true".to_string())]),
            container: sleeper,
            shim_binary: wasmkube_harness::paths::SHIM_BINARY,
        },
        Handler {
            name: "runc",
            handler: RUNC_HANDLER,
            pod_annotations: HashMap::new(),
            container: ContainerSpec {
                name: "sleep".into(),
                image: BUSYBOX_IMAGE.into(),
                command: vec!["/bin/busybox".into(), "sleep".into(), "100000".into()],
                ..Default::default()
            },
            shim_binary: "containerd-shim-runc-v2",
        },
    ]
}

/// A private containerd with CRI and CNI, the pause, busybox and sleeper images imported.
fn node(args: &NodeArgs, log_level: &str) -> Result<(PrivateContainerd, CriClient, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        bail!("pod benchmarks start a private containerd and need root");
    }
    let shim = args.shim_binary()?;
    let mut opts = ContainerdOpts::with_shim(&shim);
    opts.cni = Some(CniOpts { subnet: SUBNET.into() });
    opts.log_level = log_level.into();
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &images::pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    ctrd.import_in(CRI_NAMESPACE, &images::busybox_image(BUSYBOX_IMAGE)?)?;
    let sleeper = guests::guest_wasm("sleeper")?;
    let bytes = std::fs::read(&sleeper).with_context(|| format!("reading {}", sleeper.display()))?;
    ctrd.import_in(CRI_NAMESPACE, &images::component_image_at(SLEEPER_IMAGE, bytes, "/sleeper.wasm"))?;
    let cri = ctrd.cri()?;
    for image in [PAUSE_IMAGE, BUSYBOX_IMAGE, SLEEPER_IMAGE] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cri.image_id(image)?.is_none() {
            ensure!(Instant::now() < deadline, "CRI does not see the imported image {image}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((ctrd, cri, shim))
}

/// Times of one pod start, in milliseconds.
struct PodStart {
    sandbox_ms: f64,
    container_ms: f64,
}

/// RunPodSandbox, then CreateContainer + StartContainer; returns the pod and how long each part took.
fn start_pod(cri: &CriClient, h: &Handler, name: &str) -> Result<(Pod, PodStart)> {
    let t0 = Instant::now();
    let options = PodOptions { annotations: h.pod_annotations.clone(), ..Default::default() };
    let pod = cri.run_pod_sandbox_with(name, h.handler, options)?;
    let t1 = Instant::now();
    let id = cri.create_container(&pod, &h.container)?;
    cri.start_container(&id)?;
    let t2 = Instant::now();
    // Not timed: StartContainer returned after the task started; this only checks it did not end.
    let status = cri.container_status(&id)?;
    ensure!(status.state == ContainerState::Running, "{} pod {name} is not running: {status:?}", h.name);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((pod, PodStart { sandbox_ms: ms(t1 - t0), container_ms: ms(t2 - t1) }))
}

fn remove_pods(cri: &CriClient, pods: &[Pod]) -> Result<()> {
    for pod in pods {
        cri.remove_pod(pod)?;
    }
    Ok(())
}

/// `pod-start`: interleaved pods of both handlers, one warm-up each (the component is then compiled
/// and the daemon running, as on a node that already runs the app).
pub fn start(args: StartArgs) -> Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    // At debug level CRI logs when its CNI setup begins and ends (`cri_log`).
    let (ctrd, cri, shim) = node(&args.node, "debug")?;
    let handlers = handlers();
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); handlers.len()];
    for h in &handlers {
        let (pod, _) = start_pod(&cri, h, &format!("warmup-{}", h.name))?;
        remove_pods(&cri, &[pod])?;
    }
    for i in 0..args.runs {
        for (h, (sandbox, container)) in handlers.iter().zip(samples.iter_mut()) {
            let (pod, t) = start_pod(&cri, h, &format!("start-{}-{i}", h.name))?;
            sandbox.push(t.sandbox_ms);
            container.push(t.container_ms);
            remove_pods(&cri, &[pod])?;
        }
    }

    let cni_setups = cri_log::cni_setup_ms(&ctrd.log());
    let mut per_handler = serde_json::Map::new();
    println!(
        "{:<15} {:>11} {:>10} {:>13} {:>9} {:>18}",
        "handler", "sandbox ms", "(CNI ms)", "container ms", "total ms", "total w/o CNI ms"
    );
    for (h, (sandbox, container)) in handlers.iter().zip(&samples) {
        let cni = (0..args.runs)
            .map(|i| {
                let pod = format!("start-{}-{i}", h.name);
                cni_setups.get(&pod).copied().with_context(|| format!("containerd's log has no CNI setup of {pod}"))
            })
            .collect::<Result<Vec<f64>>>()?;
        let total: Vec<f64> = sandbox.iter().zip(container).map(|(a, b)| a + b).collect();
        let without_cni: Vec<f64> = total.iter().zip(&cni).map(|(t, n)| t - n).collect();
        let (s, n, c, t, w) =
            (summary(sandbox)?, summary(&cni)?, summary(container)?, summary(&total)?, summary(&without_cni)?);
        println!(
            "{:<15} {:>11.1} {:>10.1} {:>13.1} {:>9.1} {:>18.1}",
            h.name, s.median_ms, n.median_ms, c.median_ms, t.median_ms, w.median_ms
        );
        per_handler.insert(
            h.name.into(),
            json!({ "sandbox": s, "cni_setup": n, "container": c, "total": t, "total_without_cni": w }),
        );
    }
    let median = |name: &str, part: &str| per_handler[name][part]["median_ms"].as_f64();
    let mut ratios = serde_json::Map::new();
    for h in handlers.iter().filter(|h| h.handler != RUNC_HANDLER) {
        let ratio = |part| median(h.name, part).zip(median("runc", part)).map(|(w, r)| w / r);
        let (total, sandbox, container) = (ratio("total"), ratio("sandbox"), ratio("container"));
        let without_cni = ratio("total_without_cni");
        if let (Some(total), Some(sandbox), Some(container), Some(without_cni)) =
            (total, sandbox, container, without_cni)
        {
            println!(
                "ratio {}/runc (median): total {total:.2}, sandbox {sandbox:.2}, container {container:.2}, \
                 total without CNI {without_cni:.2}",
                h.name
            );
        }
        ratios.insert(
            h.name.into(),
            json!({ "total": total, "sandbox": sandbox, "container": container, "total_without_cni": without_cni }),
        );
    }

    let result = json!({
        "name": "pod-start",
        "description": "CRI RunPodSandbox (sandbox) then CreateContainer + StartContainer (container) until \
                        StartContainer returns with the container running; component cached, one warm-up pod \
                        per handler, handlers interleaved; runc runs busybox sleep; wasmkube-pause is the wasmkube handler \
                        with the sandbox-process annotation (a pause process under runc as the sandbox); cni_setup \
                        is CRI's CNI setup inside RunPodSandbox (containerd's debug log, which the node runs at), \
                        the same network plugin for every handler",
        "runs": args.runs,
        "handlers": per_handler,
        "ratios": ratios,
        "ratio_definition": "median(handler) / median(runc), per part",
        "environment": report::environment(&ctrd, &shim)?,
    });
    write(&args.node, &shim, "pod-start", &result)
}

/// Memory of processes, in KiB.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Anonymous memory (heap, instances' touched pages, compiled code): what file pages do not explain.
    pub anon_kib: u64,
}

impl std::ops::AddAssign for Memory {
    fn add_assign(&mut self, o: Memory) {
        self.processes += o.processes;
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
        self.anon_kib += o.anon_kib;
    }
}

/// Rss, Pss and anonymous memory of one process from /proc/PID/smaps_rollup; `None` when it is gone.
pub fn memory_of(pid: i32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Memory { processes: 1, rss_kib: field("Rss:")?, pss_kib: field("Pss:")?, anon_kib: field("Anonymous:")? })
}

/// CPU time (user and system, all threads) one process has used, from /proc/PID/stat; `None` when it is gone.
pub fn cpu_seconds_of(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields are counted from its closing one.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are the stat file's fields 14 and 15 (1-based); `fields` starts at field 3.
    let (utime, stime) = (ticks(11)?, ticks(12)?);
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0)?;
    Some((utime + stime) as f64 / per_second as f64)
}

/// (shims, workload processes, sandboxes) of one handler on this containerd: the shim processes,
/// their non-pause descendants (runc's containers; none for wasmkube, whose instances live in the
/// daemon), and the pause processes.
fn measure_memory(ctrd: &PrivateContainerd, h: &Handler) -> (Memory, Memory, Memory) {
    let all = procs::list();
    let shims: Vec<i32> = procs::with_address(&ctrd.socket())
        .into_iter()
        .filter(|pid| {
            all.iter().any(|p| p.pid == *pid && p.cmdline.first().is_some_and(|a| a.ends_with(h.shim_binary)))
        })
        .collect();
    let tree: BTreeSet<i32> = procs::with_descendants(&shims, &all);
    let (mut shim, mut workload, mut sandbox) = (Memory::default(), Memory::default(), Memory::default());
    for p in all.iter().filter(|p| tree.contains(&p.pid)) {
        let Some(m) = memory_of(p.pid) else { continue };
        if shims.contains(&p.pid) {
            shim += m;
        } else if p.cmdline.first().is_some_and(|a| a == "/pause") {
            sandbox += m;
        } else {
            workload += m;
        }
    }
    (shim, workload, sandbox)
}

/// `pod-memory`: for each N, N pods of one handler running at once, then the other handler.
pub fn memory(args: MemoryArgs) -> Result<()> {
    ensure!(!args.pods.is_empty() && !args.pods.contains(&0), "--pods needs counts of at least 1");
    let (ctrd, cri, shim) = node(&args.node, "info")?;
    let handlers = handlers();
    let mut rows = Vec::new();
    println!(
        "{:<15} {:>5} {:>9} {:>12} {:>12} {:>13} {:>13}",
        "handler", "pods", "processes", "shim RSS MiB", "shim PSS MiB", "all RSS MiB", "all PSS MiB"
    );
    for &n in &args.pods {
        for h in &handlers {
            let mut pods = Vec::with_capacity(n);
            for i in 0..n {
                pods.push(start_pod(&cri, h, &format!("mem-{}-{n}-{i}", h.name))?.0);
            }
            std::thread::sleep(Duration::from_secs(args.settle_seconds));
            let (shim_mem, workload, sandbox) = measure_memory(&ctrd, h);
            let mut all = shim_mem;
            all += workload;
            all += sandbox;
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "{:<15} {:>5} {:>9} {:>12.1} {:>12.1} {:>13.1} {:>13.1}",
                h.name,
                n,
                all.processes,
                mib(shim_mem.rss_kib),
                mib(shim_mem.pss_kib),
                mib(all.rss_kib),
                mib(all.pss_kib)
            );
            rows.push(
                json!({ "handler": h.name, "pods": n, "shim": shim_mem, "workload": workload, "sandbox": sandbox }),
            );
            remove_pods(&cri, &pods)?;
            wait_for_no_workloads(&ctrd, h)?;
        }
    }
    let per_extra = per_extra_pod(&rows, &handlers);
    for (name, v) in &per_extra {
        println!("{name}: {:.3} MiB RSS, {:.3} MiB PSS per extra pod (shim + workload + sandbox)", v.0, v.1);
    }
    let result = json!({
        "name": "pod-memory",
        "description": "N pods running at once through CRI (wasmkube: examples/sleeper; runc: busybox sleep); \
                        RSS and PSS from /proc/PID/smaps_rollup of the shim processes, of the workload processes \
                        below them (none for wasmkube: instances live in the daemon) and of the pause processes \
                        (none for wasmkube's held sandboxes); wasmkube-pause is the wasmkube handler with the \
                        sandbox-process annotation",
        "settle_seconds": args.settle_seconds,
        "rows": rows,
        "per_extra_pod_mib": per_extra.iter().map(|(name, (rss, pss))| (name.to_string(), json!({ "rss": rss, "pss": pss }))).collect::<serde_json::Map<_, _>>(),
        "per_extra_pod_definition": "(shim+workload+sandbox at max N − at min N) / (max N − min N)",
        "environment": report::environment(&ctrd, &shim)?,
    });
    write(&args.node, &shim, "pod-memory", &result)
}

/// Waits until the handler's pods are gone (runc's shims exit; our daemon may linger idle).
fn wait_for_no_workloads(ctrd: &PrivateContainerd, h: &Handler) -> Result<()> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (shim, workload, sandbox) = measure_memory(ctrd, h);
        let shims_left = if h.handler == RUNC_HANDLER { shim.processes } else { 0 };
        if shims_left + workload.processes + sandbox.processes == 0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{} pods were not torn down within {STATE_TIMEOUT:?}", h.name);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MiB (RSS, PSS) each pod beyond the smallest count adds, per handler.
fn per_extra_pod(rows: &[serde_json::Value], handlers: &[Handler]) -> Vec<(&'static str, (f64, f64))> {
    let total = |row: &serde_json::Value, what: &str| {
        ["shim", "workload", "sandbox"].iter().map(|part| row[part][what].as_f64().unwrap_or(0.0)).sum::<f64>()
    };
    handlers
        .iter()
        .filter_map(|h| {
            let mine: Vec<&serde_json::Value> = rows.iter().filter(|r| r["handler"] == h.name).collect();
            let lo = mine.iter().min_by_key(|r| r["pods"].as_u64())?;
            let hi = mine.iter().max_by_key(|r| r["pods"].as_u64())?;
            let extra = hi["pods"].as_f64()? - lo["pods"].as_f64()?;
            (extra > 0.0).then(|| {
                let per = |what| (total(hi, what) - total(lo, what)) / extra / 1024.0;
                (h.name, (per("rss_kib"), per("pss_kib")))
            })
        })
        .collect()
}

fn summary(samples: &[f64]) -> Result<Summary> {
    Summary::of(samples).context("no samples")
}

fn write(args: &NodeArgs, shim: &std::path::Path, name: &str, result: &serde_json::Value) -> Result<()> {
    let out = args.out_or(|| report::result_path(name, report::is_release_build(shim)));
    report::write_json(&out, result)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_with_work_and_a_gone_process_has_none() {
        let me = i32::try_from(std::process::id()).unwrap();
        let before = cpu_seconds_of(me).unwrap();
        // Spin until the clock (10 ms ticks) moves; a loaded machine only makes it take longer.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds_of(me).unwrap() <= before {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "no CPU time counted after 30 s of spinning");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert_eq!(cpu_seconds_of(i32::MAX), None);
    }

    #[test]
    fn per_extra_pod_is_the_slope_between_the_smallest_and_largest_count() {
        let row = |h: &str, pods: u64, shim_rss: u64, work_rss: u64| {
            json!({ "handler": h, "pods": pods,
                    "shim": { "rss_kib": shim_rss, "pss_kib": shim_rss / 2 },
                    "workload": { "rss_kib": work_rss, "pss_kib": work_rss / 2 } })
        };
        let rows = [row("wasmkube", 1, 20_480, 0), row("wasmkube", 11, 30_720, 0), row("runc", 1, 10_240, 1_024)];
        let got = per_extra_pod(&rows, &handlers());
        assert_eq!(got, [("wasmkube", (1.0, 0.5))], "runc has one count only: no slope");
    }
}
