//! `containerd-shim-wasmkube-v1`: the binary containerd runs for runtime `io.containerd.wasmkube.v1`.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use wasmkube_shim::daemon::WasmkubeShim;

// The binaries are static musl executables, whose malloc is slow under many threads (docs/install.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    #[cfg(feature = "mimalloc")]
    wasmkube_shim::daemon::apply_allocator_options();
    // As containerd's own shims answer `-v`: what an admin runs on a node to see which shim is installed.
    if std::env::args().skip(1).any(|a| matches!(a.as_str(), "-v" | "-version" | "--version")) {
        println!(
            "containerd-shim-wasmkube-v1:\n  Runtime: {}\n  Version: {}",
            wasmkube_shim::RUNTIME_TYPE,
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Ok(flags) = containerd_shim::parse(&args) {
        if flags.action == "start" {
            start(&flags);
            return;
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WASMKUBE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(false);
    // stderr is containerd's log (`delete`) or the daemon's own log file.
    logs.with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", wasmkube_shim::RUNTIME_TYPE);
            std::process::exit(1);
        }
    };
    // The daemon waits for its own children by pid (runc commands, pod sandbox processes it reaps as
    // subreaper): the crate's `waitpid(-1)` reaper would take their exit statuses first.
    let config = containerd_shim::Config { no_setup_logger: true, no_reaper: true, ..Default::default() };
    runtime.block_on(containerd_shim::asynchronous::run::<WasmkubeShim>(wasmkube_shim::RUNTIME_TYPE, Some(config)));
}

/// `start` prints the daemon's address on stdout and nothing else: containerd 1.6 reads its stdout AND
/// stderr as the address, so it logs nothing; a failure's message goes to stderr with exit status 1, which
/// containerd reports.
fn start(flags: &containerd_shim::Flags) {
    match wasmkube_shim::daemon::start(flags) {
        Ok(address) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(address.as_bytes()).and_then(|()| stdout.flush()) {
                eprintln!("{}: cannot write the daemon address: {e}", wasmkube_shim::RUNTIME_TYPE);
                std::process::exit(1);
            }
        }
        Err(e) => {
            let why = match e {
                containerd_shim::Error::Other(why) => why,
                e => e.to_string(),
            };
            eprintln!("{}: {why}", wasmkube_shim::RUNTIME_TYPE);
            std::process::exit(1);
        }
    }
}
