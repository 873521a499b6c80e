//! `component-memory`: what a large component costs the node daemon. N pods of one wasi:http component
//! (by default a 13 MB JavaScript one built with componentize-js, `scripts/js-component.sh`) start through
//! CRI; the daemon's RSS, PSS and anonymous memory are read after the start and after each batch of M
//! requests per pod. Reports the memory each extra pod adds and how much a batch of requests adds (the
//! goal: nothing grows with the number of requests served).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use wasmkube_harness::cri::{CriClient, Pod};
use wasmkube_harness::{http, wait_until, PrivateContainerd};

use crate::hello_http;
use crate::pods::{memory_of, Memory};
use crate::report::{self, NodeArgs};

/// A pod subnet of its own, apart from the tests' and the other benchmarks' ranges.
const SUBNET: &str = "10.88.62.0/24";
const IMAGE: &str = "docker.io/wasmkube/large-http:bench";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `component-memory`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The wasi:http component (default: the JavaScript one `scripts/js-component.sh` writes).
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// Pod counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 6])]
    pub pods: Vec<usize>,
    /// Requests per pod in each batch.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Batches of requests after the start (memory is read after each).
    #[arg(long, default_value_t = 3)]
    pub batches: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Runs the benchmark and writes its result.
pub fn run(args: Args) -> Result<()> {
    ensure!(!args.pods.is_empty() && !args.pods.contains(&0), "--pods needs counts of at least 1");
    ensure!(args.requests > 0 && args.batches > 0, "--requests and --batches must be at least 1");
    if !nix::unistd::geteuid().is_root() {
        bail!("component-memory starts a private containerd with CNI and needs root");
    }
    let component = match &args.component {
        Some(path) => path.clone(),
        None => wasmkube_harness::paths::target_dir().join("js-http").join("js-http.wasm"),
    };
    let wasm = std::fs::read(&component)
        .with_context(|| format!("reading {} (`scripts/js-component.sh` builds it)", component.display()))?;
    let shim = args.node.shim_binary()?;
    let (ctrd, cri) = hello_http::node_with(&shim, SUBNET, IMAGE, wasm.clone())?;

    println!("{:>5} {:>12} {:>12} {:>12} {:>12}", "pods", "requests", "RSS MiB", "PSS MiB", "anon MiB");
    let mut rows = Vec::new();
    for &n in &args.pods {
        let mut pods = Vec::with_capacity(n);
        for i in 0..n {
            pods.push(start_pod(&cri, &format!("large-{n}-{i}"))?);
        }
        let mut readings = vec![(0, daemon_memory(&ctrd)?)];
        for batch in 1..=args.batches {
            for (_, addr) in &pods {
                for _ in 0..args.requests {
                    let r = http::get(*addr, "/", TIMEOUT)?;
                    ensure!(r.status == 200, "{addr} answered {}: {}", r.status, r.body);
                }
            }
            readings.push((batch * args.requests, daemon_memory(&ctrd)?));
        }
        for (requests, m) in &readings {
            println!(
                "{n:>5} {requests:>12} {:>12.1} {:>12.1} {:>12.1}",
                mib(m.rss_kib),
                mib(m.pss_kib),
                mib(m.anon_kib)
            );
        }
        rows.push(json!({
            "pods": n,
            "readings": readings.iter().map(|(r, m)| json!({ "requests_per_pod": r, "daemon": m })).collect::<Vec<_>>(),
        }));
        for (pod, _) in &pods {
            cri.remove_pod(pod)?;
        }
    }
    let slopes = Slopes::of(&rows);
    println!(
        "per extra pod: {:.2} MiB RSS, {:.2} MiB anon; per {} requests per pod after the first batch: {:.2} MiB RSS",
        slopes.per_pod_rss_mib, slopes.per_pod_anon_mib, args.requests, slopes.per_batch_rss_mib
    );
    let result = json!({
        "name": "component-memory",
        "description": "N pods of one wasi:http component through CRI (held sandboxes), then batches of sequential \
                        GET / per pod; RSS, PSS and anonymous memory of the node daemon from /proc/PID/smaps_rollup \
                        after the start and after each batch",
        "component": component.display().to_string(),
        "component_bytes": wasm.len(),
        "requests_per_batch_per_pod": args.requests,
        "rows": rows,
        "per_extra_pod_mib": { "rss": slopes.per_pod_rss_mib, "anon": slopes.per_pod_anon_mib },
        "per_batch_after_first_mib": { "rss": slopes.per_batch_rss_mib },
        "definitions": "per extra pod: (daemon after the last batch at max N − at min N) / (max N − min N); \
                        per batch: (after the last batch − after the first) / (batches − 1), at max N",
        "environment": report::environment(&ctrd, &shim)?,
        "release_build": report::is_release_build(&shim),
    });
    let out = args.node.out_or(|| report::result_path("component-memory", report::is_release_build(&shim)));
    report::write_json(&out, &result)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A pod of the component, once it answers.
fn start_pod(cri: &CriClient, name: &str) -> Result<(Pod, SocketAddr)> {
    let hello_http::Started { pod, addr, .. } = hello_http::start_pod_of(cri, name, IMAGE, Default::default())?;
    wait_until("the component answers", TIMEOUT, || http::get(addr, "/", TIMEOUT).is_ok_and(|r| r.status == 200))?;
    Ok((pod, addr))
}

/// The node daemon's memory (the one process serving every pod).
fn daemon_memory(ctrd: &PrivateContainerd) -> Result<Memory> {
    let daemons = ctrd.shim_daemons();
    ensure!(daemons.len() == 1, "expected one node daemon, found {daemons:?}");
    memory_of(daemons[0]).context("the node daemon is gone")
}

/// Memory per extra pod and per batch of requests, from the rows.
#[derive(Debug, PartialEq)]
struct Slopes {
    per_pod_rss_mib: f64,
    per_pod_anon_mib: f64,
    per_batch_rss_mib: f64,
}

impl Slopes {
    fn of(rows: &[serde_json::Value]) -> Self {
        let last = |row: &serde_json::Value, what: &str| {
            row["readings"].as_array().and_then(|r| r.last()).and_then(|r| r["daemon"][what].as_f64()).unwrap_or(0.0)
        };
        let pods = |row: &serde_json::Value| row["pods"].as_f64().unwrap_or(0.0);
        let (lo, hi) = (rows.first(), rows.last());
        let per_pod = |what: &str| match (lo, hi) {
            (Some(lo), Some(hi)) if pods(hi) > pods(lo) => {
                (last(hi, what) - last(lo, what)) / (pods(hi) - pods(lo)) / 1024.0
            }
            _ => 0.0,
        };
        let per_batch = hi
            .and_then(|row| row["readings"].as_array())
            .filter(|r| r.len() > 2)
            .map(|r| {
                let rss = |i: usize| r[i]["daemon"]["rss_kib"].as_f64().unwrap_or(0.0);
                (rss(r.len() - 1) - rss(1)) / (r.len() - 2) as f64 / 1024.0
            })
            .unwrap_or(0.0);
        Slopes {
            per_pod_rss_mib: per_pod("rss_kib"),
            per_pod_anon_mib: per_pod("anon_kib"),
            per_batch_rss_mib: per_batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_compare_the_last_readings_and_the_batches_after_the_first() {
        let reading = |requests: u64, rss: u64, anon: u64| json!({ "requests_per_pod": requests, "daemon": { "rss_kib": rss, "anon_kib": anon } });
        let rows = [
            json!({ "pods": 1, "readings": [reading(0, 10_240, 5_120), reading(100, 20_480, 10_240)] }),
            json!({ "pods": 5, "readings": [reading(0, 40_960, 20_480), reading(100, 61_440, 30_720),
                                             reading(200, 63_488, 30_720), reading(300, 65_536, 30_720)] }),
        ];
        let got = Slopes::of(&rows);
        // (64 − 20) MiB over 4 extra pods; (30 − 10) MiB anon over 4; (64 − 60) MiB over 2 batches.
        assert_eq!(got, Slopes { per_pod_rss_mib: 11.0, per_pod_anon_mib: 5.0, per_batch_rss_mib: 2.0 });
    }
}
