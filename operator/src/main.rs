//! `wasmkube-operator`: runs the WasmApp controller, or prints the CRD (`wasmkube-operator crd`).

use anyhow::Context as _;
use clap::Parser;

use wasmkube_operator::runtime::{self, Cli, Command, Settings};

// The binaries are static musl executables, whose malloc is slow under many threads (docs/install.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Why before anything else: mimalloc reads its options once, so they must be in the environment the process
    // starts with (`wasmkube_contract::allocator`; docs/operator.md, "At scale").
    #[cfg(feature = "mimalloc")]
    wasmkube_contract::allocator::reexec_with_options(&wasmkube_contract::allocator::OPERATOR_ALLOCATOR_ENV)
        .context("starting again with the allocator's options")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(operator(Cli::parse()))
}

async fn operator(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Crd) => {
            let yaml = wasmkube_operator::crd::crd_yaml()?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())
                .context("writing the CRD to stdout")
        }
        Some(Command::Run) | None => runtime::run(Settings::from_args(cli.run)?).await,
    }
}
