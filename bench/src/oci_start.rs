//! `oci-start`: wall time of `ctr run --rm` of an `oci://` component — first start (pull, verify, compile,
//! cache) against a start from the node cache — for a small and a ≥5 MB component.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use wasmkube_harness::containerd::WASMKUBE_RUNTIME_TYPE;
use wasmkube_harness::images::{self, BUSYBOX_IMAGE};
use wasmkube_harness::registry::Registry;
use wasmkube_harness::{guests, ContainerdOpts, PrivateContainerd};
use wasmkube_oci::{parse_oci_ref, Puller};

use crate::report::{self, NodeArgs};
use crate::stats::Summary;

/// Options of the `oci-start` benchmark.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured runs per variant.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Size the large component is padded to.
const LARGE_BYTES: usize = 5 * 1024 * 1024 + 1;

/// Runs the benchmark and writes its result.
pub fn run(args: Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let shim = args.node.shim_binary()?;
    let registry = Registry::start()?;
    let opts =
        ContainerdOpts { shim: Some(shim.clone()), insecure_registries: vec![registry.host()], ..Default::default() };
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import(&images::busybox_image(BUSYBOX_IMAGE)?)?;

    let hello = std::fs::read(guests::guest_wasm("hello-cli")?)?;
    let mut variants = serde_json::Map::new();
    println!("{:<8} {:<7} {:>10} {:>10} {:>10}", "size", "start", "median ms", "min ms", "p90 ms");
    for (size_name, padding) in [("small", 0), ("large", LARGE_BYTES.saturating_sub(hello.len()))] {
        let mut first = Vec::new();
        for i in 0..args.runs {
            // A distinct digest per run: nothing of it is in the cache or in the daemon.
            let wasm = with_custom_section(&hello, &format!("{size_name}-{i}"), padding);
            let reference = push(&registry, &format!("bench/{size_name}:{i}"), wasm.clone())?;
            first.push(time_one(&ctrd, &reference, &format!("first-{size_name}-{i}"))?);
        }
        let last = with_custom_section(&hello, &format!("{size_name}-{}", args.runs - 1), padding);
        let reference = push(&registry, &format!("bench/{size_name}:cached"), last.clone())?;
        let cached: Vec<f64> = (0..args.runs)
            .map(|i| time_one(&ctrd, &reference, &format!("cached-{size_name}-{i}")))
            .collect::<Result<_>>()?;
        for (start, samples) in [("first", first), ("cached", cached)] {
            let Some(s) = Summary::of(&samples) else { continue };
            println!("{size_name:<8} {start:<7} {:>10.1} {:>10.1} {:>10.1}", s.median_ms, s.min_ms, s.p90_ms);
            let mut entry = serde_json::to_value(&s)?;
            entry["component_bytes"] = json!(last.len());
            variants.insert(format!("{size_name}-{start}"), entry);
        }
    }
    let result = json!({
        "name": "oci-start",
        "description": "wall time of `ctr run --rm` of hello-cli named by oci://REPO@DIGEST from a local docker-registry. \
            first: a digest never seen (pull manifest + blob, verify, precompile, store, run); \
            cached: the same digest again with the daemon warm (manifest and blob read and verified from the node cache, \
            compiled component in memory). large: hello-cli padded with a custom section to over 5 MiB \
            (download, hashing and cache I/O grow; compiled code does not)",
        "runs": args.runs,
        "variants": variants,
        "containerd_version": ctrd.server_version()?,
        "shim": shim.display().to_string(),
        "date": report::now_rfc3339(),
        "git_commit": report::git_commit(),
        "host": { "cpus": report::cpus(), "kernel": report::kernel() },
    });
    let out = args.node.out_or(|| report::results_dir().join("oci-start.json"));
    report::write_json(&out, &result)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// `wasm` with a custom section appended (valid anywhere in a component), padded by `padding` bytes.
fn with_custom_section(wasm: &[u8], name: &str, padding: usize) -> Vec<u8> {
    let mut payload = leb128(name.len());
    payload.extend_from_slice(name.as_bytes());
    payload.resize(payload.len() + padding, 0);
    let mut out = wasm.to_vec();
    out.push(0);
    out.extend(leb128(payload.len()));
    out.extend(payload);
    out
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Pushes with the code `wasmkube push` uses; returns `oci://HOST/REPO@DIGEST`.
fn push(registry: &Registry, repo_tag: &str, wasm: Vec<u8>) -> Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference = parse_oci_ref(&format!("{}/{repo_tag}", registry.host()))?;
    let puller = Puller::new(vec![registry.host()], Duration::from_secs(30));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pushed =
        rt.block_on(wasmkube_oci::push::push_component(&puller, &reference, &RegistryAuth::Anonymous, wasm))?;
    Ok(format!("oci://{}/{}@{}", registry.host(), reference.repository(), pushed.manifest_digest))
}

/// Wall time of one `ctr run --rm` of `reference`, in milliseconds; a failed run is an error.
fn time_one(ctrd: &PrivateContainerd, reference: &str, id: &str) -> Result<f64> {
    let started = Instant::now();
    let out = ctrd.ctr(["run", "--rm", "--runtime", WASMKUBE_RUNTIME_TYPE, BUSYBOX_IMAGE, id, reference])?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.success() || !out.stdout.contains("hello from a WebAssembly component") {
        bail!("run {id} failed ({}): {}{}", out.code, out.stdout.trim(), out.stderr.trim());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_and_custom_section_layout() {
        assert_eq!(leb128(5), [5]);
        assert_eq!(leb128(300), [0xac, 0x02]);
        let out = with_custom_section(b"\0asm\x0d\0\x01\0", "x", 2);
        assert_eq!(&out[8..], [0, 4, 1, b'x', 0, 0]);
    }
}
