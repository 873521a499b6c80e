//! `wasmkube-images`: writes the operator and node images as OCI archives (`make images`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wasmkube_images::catalog::{Build, DEFAULT_REPOSITORY_PREFIX};
use wasmkube_images::layout::Platform;

/// OCI image archives of wasmkube from static binaries: `<out>/wasmkube-operator.tar` and
/// `<out>/wasmkube-node.tar`, for `ctr images import`, `kind load image-archive` or `skopeo copy oci-archive:`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Directory the archives are written to.
    #[arg(long)]
    out: PathBuf,
    /// `PLATFORM=DIR`: the static binaries of one platform (repeat for each, e.g. linux/amd64=target/x86_64-unknown-linux-musl/release).
    #[arg(long = "binaries", required = true, value_parser = parse_binaries)]
    binaries: Vec<(Platform, PathBuf)>,
    /// Registry and namespace of the image names.
    #[arg(long, default_value = DEFAULT_REPOSITORY_PREFIX)]
    repository_prefix: String,
    /// Tag of both images (the chart's appVersion).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
}

fn parse_binaries(s: &str) -> Result<(Platform, PathBuf), String> {
    let (platform, dir) = s.split_once('=').ok_or_else(|| format!("`{s}` is not PLATFORM=DIR"))?;
    Ok((platform.parse()?, PathBuf::from(dir)))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let build = Build { repository_prefix: cli.repository_prefix, tag: cli.tag, binaries: cli.binaries };
    match build.write(&cli.out) {
        Ok(archives) => {
            for a in archives {
                println!("{} {} {}", a.path.display(), a.info.name, a.info.manifest_digest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasmkube-images: {e}");
            ExitCode::FAILURE
        }
    }
}
