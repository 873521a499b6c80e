//! `make demo`: a wasi:cli component run by our shim under a private containerd, step by step.
//!
//! Usage: `wasmkube-demo --shim PATH` (the Makefile passes the freshly built shim).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wasmkube_harness::images::component_image_at;
use wasmkube_harness::{guests, ContainerdOpts, PrivateContainerd};

const RUNTIME: &str = "io.containerd.wasmkube.v1";

fn main() -> Result<()> {
    let shim = shim_arg()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo starts a private containerd and needs root");
    }
    let t0 = Instant::now();
    let step = |what: &str| println!("==> [{:>6.2}s] {what}", t0.elapsed().as_secs_f64());

    step("starting a private containerd with containerd-shim-wasmkube-v1 registered");
    let ctrd = PrivateContainerd::start(ContainerdOpts::with_shim(&shim))?;
    println!("    containerd {} at {}", ctrd.server_version()?, ctrd.socket().display());

    step("importing an OCI image whose rootfs holds hello-cli.wasm (built for wasm32-wasip2)");
    let wasm = std::fs::read(guests::guest_wasm("hello-cli")?).context("reading hello-cli.wasm")?;
    println!("    component: {} bytes", wasm.len());
    let image = "docker.io/wasmkube/hello-cli:demo";
    ctrd.import(&component_image_at(image, wasm, "/app.wasm"))?;

    let cmd = ["run", "--rm", "--runtime", RUNTIME, "--env", "GREETING=hello from wasmkube", image, "demo-hello"];
    step(&format!("ctr {} /app.wasm from the demo", cmd.join(" ")));
    let mut args: Vec<&str> = cmd.to_vec();
    args.extend(["/app.wasm", "from", "the", "demo"]);
    let started = Instant::now();
    let out = ctrd.ctr(args)?;
    let took = started.elapsed();
    println!("---- stdout of the component ----");
    print!("{}", out.stdout);
    println!("---- stderr ----");
    print!("{}", out.stderr);
    println!("--------------------------------");
    println!("    exit code {} after {:.0} ms (ctr run --rm, wall time)", out.code, took.as_secs_f64() * 1e3);
    if out.code != 0 || !out.stdout.contains("hello from a WebAssembly component") {
        bail!("the component did not run as expected; containerd log:\n{}", ctrd.log_tail());
    }

    step("stopping containerd and removing its directories");
    drop(ctrd);
    step("done");
    Ok(())
}

fn shim_arg() -> Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("--shim"), Some(path)) => Ok(PathBuf::from(path)),
        _ => bail!("usage: wasmkube-demo --shim PATH-TO-containerd-shim-wasmkube-v1"),
    }
}
