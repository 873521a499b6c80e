//! `ctr-run`: wall time of `ctr run --rm` of a trivial container, runc against the wasmkube shim.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use wasmkube_harness::containerd::{RUNC_RUNTIME_TYPE, WASMKUBE_RUNTIME_TYPE};
use wasmkube_harness::images::{self, BUSYBOX_IMAGE};
use wasmkube_harness::{guests, paths, ContainerdOpts, PrivateContainerd};

use crate::report::{self, NodeArgs};
use crate::stats::Summary;

/// Image name of the hello-cli component.
const HELLO_IMAGE: &str = "docker.io/wasmkube/hello-cli:bench";

/// Options of the `ctr-run` benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured runs per variant (after one warm-up each).
    #[arg(long, default_value_t = 15)]
    pub runs: usize,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Measure only runc (for machines without a built shim).
    #[arg(long)]
    pub runc_only: bool,
}

/// One thing measured: a runtime and the image it runs.
struct Variant {
    name: &'static str,
    runtime: &'static str,
    image: &'static str,
    samples: Vec<f64>,
}

/// Runs the benchmark and writes its result.
pub fn run(args: Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("ctr-run starts a private containerd and needs root");
    }
    let shim = if args.runc_only { None } else { Some(args.node.shim_binary()?) };
    let ctrd = PrivateContainerd::start(ContainerdOpts { shim: shim.clone(), ..Default::default() })?;
    let mut variants = import_images(&ctrd, shim.is_some())?;
    measure(&ctrd, &mut variants, args.runs)?;
    let result = report_json(&ctrd, &variants, args.runs, shim.as_deref())?;
    print_table(&variants);
    let out = args.node.out_or(|| report::results_dir().join("ctr-run.json"));
    report::write_json(&out, &result)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The shim must exist: a benchmark that silently measured only runc would mislead.
pub(crate) fn shim_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let shim = given.unwrap_or_else(paths::shim_release_binary);
    if !shim.is_file() {
        bail!(
            "shim binary {} not found: build it with `cargo build --release -p wasmkube-shim`, \
             pass --shim PATH, or measure runc alone with --runc-only",
            shim.display()
        );
    }
    Ok(shim)
}

fn import_images(ctrd: &PrivateContainerd, wasm: bool) -> Result<Vec<Variant>> {
    ctrd.import(&images::busybox_image(BUSYBOX_IMAGE)?)?;
    let mut variants =
        vec![Variant { name: "runc", runtime: RUNC_RUNTIME_TYPE, image: BUSYBOX_IMAGE, samples: Vec::new() }];
    if wasm {
        let wasm_path = guests::guest_wasm("hello-cli")?;
        let bytes = std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
        ctrd.import(&images::component_image(HELLO_IMAGE, bytes))?;
        variants.push(Variant {
            name: "wasmkube",
            runtime: WASMKUBE_RUNTIME_TYPE,
            image: HELLO_IMAGE,
            samples: Vec::new(),
        });
    }
    Ok(variants)
}

/// One warm-up per variant, then `runs` rounds that interleave the variants, so drift hits all alike.
fn measure(ctrd: &PrivateContainerd, variants: &mut [Variant], runs: usize) -> Result<()> {
    for v in variants.iter() {
        time_one(ctrd, v, &format!("bench-{}-warmup", v.name))?;
    }
    for i in 0..runs {
        for v in variants.iter_mut() {
            let ms = time_one(ctrd, v, &format!("bench-{}-{i}", v.name))?;
            tracing::info!(variant = v.name, run = i, ms, "measured");
            v.samples.push(ms);
        }
    }
    Ok(())
}

/// Wall time of one `ctr run --rm`, in milliseconds; a failed run is an error.
fn time_one(ctrd: &PrivateContainerd, v: &Variant, id: &str) -> Result<f64> {
    let args = ["run", "--rm", "--runtime", v.runtime, v.image, id];
    let started = Instant::now();
    let out = ctrd.ctr(args)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.success() {
        bail!(
            "{} run {id} failed with exit code {}\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
            v.name,
            out.code,
            out.stdout.trim(),
            out.stderr.trim(),
            ctrd.log_tail()
        );
    }
    Ok(ms)
}

fn summaries(variants: &[Variant]) -> Vec<(&Variant, Summary)> {
    variants.iter().filter_map(|v| Some((v, Summary::of(&v.samples)?))).collect()
}

/// median(wasmkube) / median(runc), when both were measured.
fn ratio(variants: &[Variant]) -> Option<f64> {
    let median = |name: &str| summaries(variants).into_iter().find(|(v, _)| v.name == name).map(|(_, s)| s.median_ms);
    Some(median("wasmkube")? / median("runc")?)
}

fn report_json(
    ctrd: &PrivateContainerd,
    variants: &[Variant],
    runs: usize,
    shim: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    let mut per_variant = serde_json::Map::new();
    for (v, s) in summaries(variants) {
        let mut entry = serde_json::to_value(&s)?;
        entry["runtime"] = json!(v.runtime);
        entry["image"] = json!(v.image);
        per_variant.insert(v.name.into(), entry);
    }
    Ok(json!({
        "name": "ctr-run",
        "description": "wall time of `ctr run --rm` (image already unpacked), one warm-up per variant, variants interleaved",
        "runs": runs,
        "variants": per_variant,
        "ratio": ratio(variants),
        "ratio_definition": "median(wasmkube) / median(runc)",
        "containerd_version": ctrd.server_version()?,
        "snapshotter": ctrd.snapshotter().as_str(),
        "shim": shim.map(|p| p.display().to_string()),
        "date": report::now_rfc3339(),
        "git_commit": report::git_commit(),
        "host": { "cpus": report::cpus(), "kernel": report::kernel() },
    }))
}

fn print_table(variants: &[Variant]) {
    println!("{:<10} {:>6} {:>10} {:>10} {:>10}", "variant", "runs", "median ms", "min ms", "p90 ms");
    for (v, s) in summaries(variants) {
        println!(
            "{:<10} {:>6} {:>10.1} {:>10.1} {:>10.1}",
            v.name,
            s.samples_ms.len(),
            s.median_ms,
            s.min_ms,
            s.p90_ms
        );
    }
    match ratio(variants) {
        Some(r) => println!("ratio shim/runc (median): {r:.2}"),
        None => println!("ratio shim/runc: not measured (--runc-only)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &'static str, samples: &[f64]) -> Variant {
        Variant { name, runtime: "r", image: "i", samples: samples.to_vec() }
    }

    #[test]
    fn ratio_needs_both_variants() {
        let both = [variant("runc", &[10.0, 20.0, 30.0]), variant("wasmkube", &[5.0, 10.0, 15.0])];
        assert_eq!(ratio(&both), Some(0.5));
        assert_eq!(ratio(&both[..1]), None);
    }

    #[test]
    fn missing_shim_is_an_error() {
        let err = shim_binary(Some("/nonexistent/containerd-shim-wasmkube-v1".into())).unwrap_err();
        assert!(err.to_string().contains("--runc-only"));
    }
}
