//! `wasmkube-operator`: runs the WasmApp controller, or prints the CRD (`wasmkube-operator crd`).

use anyhow::Context as _;
use clap::Parser;

use wasmkube_operator::runtime::{self, Cli, Command, Settings};

// The binaries are static musl executables, whose malloc is slow under many threads (docs/install.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            let yaml = wasmkube_operator::crd::crd_yaml()?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())
                .context("writing the CRD to stdout")
        }
        Some(Command::Run) | None => runtime::run(Settings::from_args(cli.run)?).await,
    }
}
