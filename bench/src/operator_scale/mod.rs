//! `operator-scale`: the operator with 1,000 WasmApps against a real kube-apiserver (etcd and kube-apiserver from
//! `KUBE_BIN_DIR`, private, in /dev/shm). The apps exist before the operator starts, as after a restart; measured:
//! the time until every app's status is written, the reconcile durations (the operator's histogram), its memory,
//! and its requests at rest (the API server's audit log of the operator's user). No kubelet or controller-manager
//! runs: the benchmark stands in for them by marking each Deployment available once, so every app becomes Ready
//! and the operator settles into its steady state.

mod control_plane;
mod measure;

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{json, Value};
use wasmkube_operator::crd::WasmApp;
use wasmkube_operator::labels::{FIELD_MANAGER, LABEL_MANAGED_BY};

use self::control_plane::{free_port, ControlPlane, Process};
use self::measure::{Histogram, Memory, Quantiles, Requests};
use crate::report;
use crate::stats::Summary;

/// Namespaces the apps are spread over.
const NAMESPACES: usize = 10;
/// Requests the benchmark's client makes at once when it creates apps or marks Deployments available.
const CLIENT_CONCURRENCY: usize = 16;
/// Every this many apps has an HPA (the others a Deployment and a Service only).
const AUTOSCALED_EVERY: usize = 4;
/// Longest the operator may take to apply every app, and the apps to become Ready after that.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);
/// The goals of issue 16, item 5 (docs/operator.md, "At scale").
const GOAL_RSS_MIB: f64 = 64.0;
const GOAL_P99_MS: f64 = 50.0;

/// Options of the `operator-scale` benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the Kubernetes server binaries (etcd and kube-apiserver are used).
    #[arg(long, env = "KUBE_BIN_DIR")]
    pub kube_bin_dir: Option<PathBuf>,
    /// WasmApps.
    #[arg(long, default_value_t = 1000)]
    pub apps: usize,
    /// Runs, each on a fresh etcd and API server; the summary gives medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Length of the steady-state window (every app Ready, nothing changing). Longer than the operator's 5-minute
    /// resync by default, so that every app's periodic reconcile falls into it.
    #[arg(long, default_value_t = 330)]
    pub steady_seconds: u64,
    /// Wait between every app being Ready and the window's start, for the reconciles the last changes triggered.
    #[arg(long, default_value_t = 15)]
    pub settle_seconds: u64,
    /// The operator binary (default: wasmkube-operator next to this program).
    #[arg(long)]
    pub operator: Option<PathBuf>,
    /// More flags for the operator, e.g. `--operator-arg=--max-concurrent-reconciles=4`.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    pub operator_args: Vec<String>,
    /// Where each run's etcd, API server and logs live (a tmpfs, so the disk does not time etcd).
    #[arg(long, default_value = "/dev/shm")]
    pub work_dir: PathBuf,
    /// Where to write the JSON result (default: bench/results/operator-scale.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Run the benchmark and write its JSON.
pub fn run(args: Args) -> Result<()> {
    let Some(bin) = args.kube_bin_dir.clone() else {
        bail!("operator-scale needs Kubernetes server binaries: set KUBE_BIN_DIR (or --kube-bin-dir) to a directory with etcd and kube-apiserver");
    };
    let operator =
        args.operator.clone().unwrap_or_else(|| wasmkube_harness::paths::bin_dir().join("wasmkube-operator"));
    ensure!(
        operator.is_file(),
        "{} is not built: run `make bench-operator` or `cargo build --release -p wasmkube-operator`",
        operator.display()
    );
    ensure!(args.runs > 0 && args.apps > 0, "--runs and --apps must be at least 1");
    let release = report::is_release_build(&operator);
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let started = report::now_rfc3339();
    let load_before = measure::load_average();
    let mut runs = Vec::new();
    for index in 0..args.runs {
        eprintln!("operator-scale: run {} of {}", index + 1, args.runs);
        let dir = args.work_dir.join(format!("wasmkube-operator-scale-{}-{index}", std::process::id()));
        let mut plane = ControlPlane::start(&bin, &dir).context("starting etcd and kube-apiserver")?;
        let result = runtime.block_on(one_run(&args, &operator, &mut plane, &dir));
        let result = result.with_context(|| format!("run {} (API server log {})", index + 1, plane.log().display()))?;
        eprintln!("operator-scale: {}", serde_json::to_string(&result.headline())?);
        runs.push(result);
    }
    let summary = summarize(&runs);
    let out = args.out.clone().unwrap_or_else(|| report::result_path("operator-scale", release));
    let value = json!({
        "benchmark": "operator-scale",
        "environment": {
            "operator": operator.display().to_string(),
            "release_build": release,
            "kube_apiserver": kube_version(&bin),
            "started": started,
            "finished": report::now_rfc3339(),
            "git_commit": report::git_commit(),
            "host": { "cpus": report::cpus(), "kernel": report::kernel() },
            "load_average_1m": { "before": load_before, "after": measure::load_average() },
        },
        "config": {
            "apps": args.apps,
            "namespaces": NAMESPACES,
            "autoscaled_every": AUTOSCALED_EVERY,
            "runs": args.runs,
            "steady_seconds": args.steady_seconds,
            "settle_seconds": args.settle_seconds,
            "operator_args": args.operator_args,
        },
        "goals": { "rss_mib": GOAL_RSS_MIB, "p99_reconcile_ms": GOAL_P99_MS, "writes_per_minute_at_rest": 0 },
        "summary": summary,
        "runs": runs,
    });
    report::write_json(&out, &value)?;
    eprintln!("operator-scale: wrote {}", out.display());
    println!("{}", serde_json::to_string_pretty(&value["summary"])?);
    Ok(())
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
struct RunResult {
    /// Operator start to every app's first status write, seconds.
    applied_s: f64,
    /// The benchmark marking the Deployments available to every app Ready, seconds.
    ready_after_available_s: f64,
    /// Reconciles from the start to the end of the window.
    reconcile_all: Quantiles,
    /// Reconciles until every app was applied.
    reconcile_startup: Quantiles,
    /// Reconciles in the steady-state window.
    reconcile_steady: Quantiles,
    /// RSS in the window, MiB (one sample a second): median and largest.
    rss_steady_median_mib: f64,
    rss_steady_max_mib: f64,
    /// Its anonymous part (heap, stacks; the rest is the binary's pages), median.
    rss_anon_steady_median_mib: f64,
    /// RSS when every app was applied, and the peak (VmHWM) at the window's end, MiB.
    rss_at_applied_mib: f64,
    rss_peak_mib: f64,
    /// The operator's writes in the window, per minute: all, and without the leader-election Lease's renewals.
    writes_per_minute_at_rest: f64,
    app_writes_per_minute_at_rest: f64,
    /// Its reads in the window, per minute.
    reads_per_minute_at_rest: f64,
    /// Its requests in the window and until every app was applied, by verb and resource.
    requests_at_rest: Requests,
    requests_until_applied: Requests,
    /// Compiler processes (other builds) seen at once, at most, and the 1-minute load at the window's end.
    compilers_running_max: usize,
    load_average_1m_end: Option<f64>,
    /// The operator's exit on SIGTERM.
    operator_exit: String,
}

impl RunResult {
    fn headline(&self) -> Value {
        json!({
            "applied_s": self.applied_s,
            "rss_steady_median_mib": self.rss_steady_median_mib,
            "rss_peak_mib": self.rss_peak_mib,
            "reconcile_all": self.reconcile_all,
            "reconcile_steady": self.reconcile_steady,
            "writes_per_minute_at_rest": self.writes_per_minute_at_rest,
            "app_writes_per_minute_at_rest": self.app_writes_per_minute_at_rest,
            "compilers_running_max": self.compilers_running_max,
        })
    }
}

/// Medians over the runs of each headline figure.
fn summarize(runs: &[RunResult]) -> Value {
    let median = |f: &dyn Fn(&RunResult) -> Option<f64>| {
        let samples: Vec<f64> = runs.iter().filter_map(f).collect();
        Summary::of(&samples).map(|s| s.median_ms)
    };
    json!({
        "runs": runs.len(),
        "applied_s": median(&|r| Some(r.applied_s)),
        "rss_steady_median_mib": median(&|r| Some(r.rss_steady_median_mib)),
        "rss_steady_max_mib": median(&|r| Some(r.rss_steady_max_mib)),
        "rss_anon_steady_median_mib": median(&|r| Some(r.rss_anon_steady_median_mib)),
        "rss_peak_mib": median(&|r| Some(r.rss_peak_mib)),
        "reconcile_all_p50_ms": median(&|r| r.reconcile_all.p50_ms),
        "reconcile_all_p99_ms": median(&|r| r.reconcile_all.p99_ms),
        "reconcile_startup_p99_ms": median(&|r| r.reconcile_startup.p99_ms),
        "reconcile_steady_p50_ms": median(&|r| r.reconcile_steady.p50_ms),
        "reconcile_steady_p99_ms": median(&|r| r.reconcile_steady.p99_ms),
        "reconciles_steady": median(&|r| Some(r.reconcile_steady.count as f64)),
        "writes_per_minute_at_rest": median(&|r| Some(r.writes_per_minute_at_rest)),
        "app_writes_per_minute_at_rest": median(&|r| Some(r.app_writes_per_minute_at_rest)),
        "reads_per_minute_at_rest": median(&|r| Some(r.reads_per_minute_at_rest)),
        "compilers_running_max": runs.iter().map(|r| r.compilers_running_max).max(),
    })
}

async fn one_run(args: &Args, operator: &Path, plane: &mut ControlPlane, dir: &Path) -> Result<RunResult> {
    let client = plane.client().await?;
    install_crd(&client).await?;
    create_apps(&client, args.apps).await?;

    let (http_port, activator_port) = (free_port()?, free_port()?);
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut cmd = Command::new(operator);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &plane.operator_kubeconfig)
        .env("WASMKUBE_HTTP_ADDR", metrics_addr.to_string())
        .env("WASMKUBE_ACTIVATOR_ADDR", format!("127.0.0.1:{activator_port}"))
        // Not served: it needs a Service and an APIService, which this API server has no use for.
        .env("WASMKUBE_METRICS_API_ADDR", "")
        .env("POD_NAMESPACE", "default")
        .env("POD_NAME", "wasmkube-operator-bench")
        .args(&args.operator_args)
        .current_dir(dir);
    let audit = plane.audit_log.clone();
    let mut tail = AuditTail::default();
    let started = Instant::now();
    let mut op = Process::spawn("wasmkube-operator", cmd, &dir.join("operator.log"))?;
    let mut compilers_max = measure::compilers_running();

    // Phase 1: every app's status written once (the reconcile writes it after the children).
    let mut applied = HashSet::new();
    while applied.len() < args.apps {
        ensure!(
            started.elapsed() < PHASE_TIMEOUT,
            "only {} of {} apps applied within {PHASE_TIMEOUT:?}",
            applied.len(),
            args.apps
        );
        op.check_running().with_context(|| format!("operator log {}", dir.join("operator.log").display()))?;
        plane.check_running()?;
        tail.status_writes(&audit, &mut applied)?;
        compilers_max = compilers_max.max(measure::compilers_running());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied_s = started.elapsed().as_secs_f64();
    let applied_offset = tail.offset;
    let at_applied = measure::memory(op.pid())?;
    let h_applied = operator_histogram(metrics_addr)?;
    eprintln!("operator-scale: {} apps applied in {applied_s:.1} s", args.apps);

    // Phase 2: the kubelet's and the controller-manager's part, once: every Deployment available.
    let marked = Instant::now();
    mark_deployments_available(&client).await?;
    wait_all_ready(&client, args.apps, &mut op).await?;
    let ready_after_available_s = marked.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;

    // Phase 3: the steady state.
    let h_start = operator_histogram(metrics_addr)?;
    let from = measure::log_offset(&audit)?;
    let window = Instant::now();
    let (mut rss, mut anon) = (Vec::new(), Vec::new());
    while window.elapsed() < Duration::from_secs(args.steady_seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        op.check_running()?;
        let memory = measure::memory(op.pid())?;
        rss.push(memory.rss_mib);
        anon.push(memory.anon_mib);
        compilers_max = compilers_max.max(measure::compilers_running());
    }
    let minutes = window.elapsed().as_secs_f64() / 60.0;
    let to = measure::log_offset(&audit)?;
    let h_end = operator_histogram(metrics_addr)?;
    let Memory { peak_mib, .. } = measure::memory(op.pid())?;
    let at_rest = measure::requests_between(&audit, from, to)?;
    // Why Summary: its median and maximum serve for any unit.
    let rss = Summary::of(&rss).context("no RSS sample in the window")?;
    let anon = Summary::of(&anon).context("no RSS sample in the window")?;
    let until_applied = measure::requests_between(&audit, 0, applied_offset)?;
    let exit = op.stop().map_or_else(|| "killed after 10 s".to_string(), |s| s.to_string());

    Ok(RunResult {
        applied_s,
        ready_after_available_s,
        reconcile_all: h_end.summary(),
        reconcile_startup: h_applied.summary(),
        reconcile_steady: h_end.since(&h_start).summary(),
        rss_steady_median_mib: rss.median_ms,
        rss_steady_max_mib: rss.max_ms,
        rss_anon_steady_median_mib: anon.median_ms,
        rss_at_applied_mib: at_applied.rss_mib,
        rss_peak_mib: peak_mib,
        writes_per_minute_at_rest: at_rest.write_count() as f64 / minutes,
        app_writes_per_minute_at_rest: at_rest.app_write_count() as f64 / minutes,
        reads_per_minute_at_rest: at_rest.read_count() as f64 / minutes,
        requests_at_rest: at_rest,
        requests_until_applied: until_applied,
        compilers_running_max: compilers_max,
        load_average_1m_end: measure::load_average(),
        operator_exit: exit,
    })
}

/// The audit log read as it grows.
#[derive(Default)]
struct AuditTail {
    /// Bytes consumed (whole lines only).
    offset: u64,
}

impl AuditTail {
    /// Add the apps whose status the operator wrote since the last call to `written` (`namespace/name`).
    fn status_writes(&mut self, log: &Path, written: &mut HashSet<String>) -> Result<()> {
        let mut file = match std::fs::File::open(log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", log.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text).context("reading the audit log")?;
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..whole].lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
            let object = &event["objectRef"];
            let ok = event["responseStatus"]["code"].as_u64().is_some_and(|c| (200..300).contains(&c));
            if event["stage"] == "ResponseComplete"
                && event["verb"] == "patch"
                && object["resource"] == "wasmapps"
                && object["subresource"] == "status"
                && ok
            {
                let (ns, name) = (object["namespace"].as_str().unwrap_or(""), object["name"].as_str().unwrap_or(""));
                written.insert(format!("{ns}/{name}"));
            }
        }
        self.offset += whole as u64;
        Ok(())
    }
}

fn operator_histogram(addr: std::net::SocketAddr) -> Result<Histogram> {
    let response = wasmkube_harness::http::get(addr, "/metrics", Duration::from_secs(10))?;
    ensure!(response.status == 200, "operator /metrics answered {}", response.status);
    Histogram::reconcile_durations(&response.body)
}

async fn install_crd(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &WasmApp::crd()).await.context("creating the WasmApp CRD")?;
    let name = WasmApp::crd_name();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the WasmApp CRD was not established within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn namespace(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

/// App `i`: an HTTP app with a pinned component, one env var and limits; every fourth autoscaled.
fn app(i: usize) -> Result<WasmApp> {
    let mut spec = json!({
        "component": format!("ghcr.io/wasmkube/bench/app-{i}@sha256:{i:064x}"),
        "http": {},
        "env": [{ "name": "GREETING", "value": "hello" }],
        "resources": { "limits": { "cpu": "100m", "memory": "32Mi" } },
    });
    if i.is_multiple_of(AUTOSCALED_EVERY) {
        spec["autoscaling"] = json!({ "minReplicas": 1, "maxReplicas": 4 });
    }
    let value = json!({
        "apiVersion": "wasmkube.dev/v1alpha1",
        "kind": "WasmApp",
        "metadata": { "name": format!("app-{i:04}"), "namespace": namespace(i) },
        "spec": spec,
    });
    serde_json::from_value(value).context("the benchmark's WasmApp")
}

async fn create_apps(client: &kube::Client, apps: usize) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..NAMESPACES.min(apps) {
        let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": namespace(i) } }))?;
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {}", namespace(i)))?;
    }
    futures::stream::iter(0..apps)
        .map(|i| async move {
            let app = app(i)?;
            let api: Api<WasmApp> = Api::namespaced(client.clone(), &namespace(i));
            // Why retry: a new CRD's resource can answer 404 for a moment after it is established.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match api.create(&PostParams::default(), &app).await {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(error = %e, "creating an app; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("creating app {}", app.name_any()))),
                }
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Stand in for the kubelet and the Deployment controller: each Deployment's one replica is ready and available.
async fn mark_deployments_available(client: &kube::Client) -> Result<()> {
    let all: Api<Deployment> = Api::all(client.clone());
    let list = all.list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"))).await?;
    futures::stream::iter(list.items)
        .map(|dep| async move {
            let ns = dep.namespace().context("a Deployment without namespace")?;
            let replicas = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = json!({ "status": {
                "observedGeneration": dep.metadata.generation,
                "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                      "message": "Deployment has minimum availability." },
                    { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                      "message": "ReplicaSet has successfully progressed." },
                ],
            }});
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            api.patch_status(&dep.name_any(), &PatchParams::default(), &Patch::Merge(&status))
                .await
                .with_context(|| format!("marking Deployment {ns}/{} available", dep.name_any()))?;
            anyhow::Ok(())
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<()>()
        .await
}

async fn wait_all_ready(client: &kube::Client, apps: usize, op: &mut Process) -> Result<()> {
    let api: Api<WasmApp> = Api::all(client.clone());
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        op.check_running()?;
        let list = api.list(&ListParams::default()).await?;
        let not_ready: Vec<&WasmApp> = list
            .items
            .iter()
            .filter(|a| !a.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == "Ready" && c.status == "True"))
            .collect();
        if not_ready.is_empty() && list.items.len() == apps {
            return Ok(());
        }
        if Instant::now() > deadline {
            let example = not_ready
                .first()
                .map(|a| format!("{}/{}: {:?}", a.namespace().unwrap_or_default(), a.name_any(), a.status));
            bail!("{} apps not Ready within {PHASE_TIMEOUT:?}, e.g. {example:?}", not_ready.len());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `kube-apiserver --version`.
fn kube_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin.join("kube-apiserver")).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
