//! `containerd-shim-wasmkube-v1`: the binary containerd runs for runtime `io.containerd.wasmkube.v1`.

use tracing_subscriber::EnvFilter;
use wasmkube_shim::daemon::WasmkubeShim;

// The binaries are static musl executables, whose malloc is slow under many threads (docs/install.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // As containerd's own shims answer `-v`: what an admin runs on a node to see which shim is installed.
    if std::env::args().skip(1).any(|a| matches!(a.as_str(), "-v" | "-version" | "--version")) {
        println!(
            "containerd-shim-wasmkube-v1:\n  Runtime: {}\n  Version: {}",
            wasmkube_shim::RUNTIME_TYPE,
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    // containerd 1.6 reads `start`'s stdout AND stderr as the daemon address, so `start` logs nothing
    // (its errors still reach containerd through the exit status and message). Elsewhere stderr is
    // containerd's log (`delete`) or the daemon's own log file.
    let quiet = std::env::args().any(|a| a == "start");
    let filter = EnvFilter::try_from_env("WASMKUBE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    if quiet {
        logs.with_writer(std::io::sink).init();
    } else {
        logs.with_writer(std::io::stderr).init();
    }
    // The daemon waits for its own children by pid (runc commands, pod sandbox processes it reaps as
    // subreaper): the crate's `waitpid(-1)` reaper would take their exit statuses first.
    let config = containerd_shim::Config { no_setup_logger: true, no_reaper: true, ..Default::default() };
    containerd_shim::asynchronous::run::<WasmkubeShim>(wasmkube_shim::RUNTIME_TYPE, Some(config)).await;
}
