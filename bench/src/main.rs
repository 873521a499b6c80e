//! `wasmkube-bench`: benchmarks of wasmkube against its references; results go to bench/results/.

mod component_memory;
mod cri_log;
mod ctr_run;
mod hello_http;
mod http;
mod in_process;
mod oci_start;
mod operator_scale;
mod pods;
mod reference;
mod report;
mod stats;
mod wake;

use anyhow::Result;
use clap::{Parser, Subcommand};

// The shim's allocator, so that the in-process reference host of `http` (and the activator of `wake`)
// allocate as the shim and the operator do.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "wasmkube-bench", about = "Benchmarks of wasmkube against its references")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `ctr run --rm` wall time: busybox under runc against hello-cli under the wasmkube shim.
    CtrRun(ctr_run::Args),
    /// CRI pod start (sandbox, then container running): wasmkube against runc pods running busybox.
    PodStart(pods::StartArgs),
    /// RSS and PSS of the shim processes with N pods running: wasmkube against runc.
    PodMemory(pods::MemoryArgs),
    /// wrk against hello-http: the shim in a CRI pod against a reference wasmtime-wasi-http host.
    Http(http::Args),
    /// `ctr run --rm` of an `oci://` component: first start (pull + compile) against a cached start.
    OciStart(oci_start::Args),
    /// Memory of N pods of a large wasi:http component (JavaScript) in the node daemon, and its growth with
    /// requests served.
    ComponentMemory(component_memory::Args),
    /// A request to an app at zero through the activator, which wakes it with a CRI pod: send to response.
    Wake(wake::Args),
    /// The operator with 1,000 WasmApps against a private kube-apiserver: start time, reconcile durations,
    /// memory, requests at rest (needs KUBE_BIN_DIR).
    OperatorScale(operator_scale::Args),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every refused readiness probe and TLS bypass of `operator-scale` at warn and
                // error; the benchmark reports failures itself.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::CtrRun(args) => ctr_run::run(args),
        Command::PodStart(args) => pods::start(args),
        Command::PodMemory(args) => pods::memory(args),
        Command::Http(args) => http::run(args),
        Command::OciStart(args) => oci_start::run(args),
        Command::Wake(args) => wake::run(args),
        Command::ComponentMemory(args) => component_memory::run(args),
        Command::OperatorScale(args) => operator_scale::run(args),
    }
}
