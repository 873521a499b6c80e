//! `wasmkube`: push a component to an OCI registry as a CNCF Wasm artifact, and inspect one.

mod inspect;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use wasmkube_oci::{auth, parse_oci_ref, Puller};

/// Bound on each registry request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(name = "wasmkube", version, about = "WebAssembly components as Kubernetes workloads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pushes FILE.wasm to REF (`[oci://]REGISTRY/REPO:TAG`) as a CNCF Wasm OCI artifact; prints the digest.
    Push {
        /// The component file.
        file: PathBuf,
        /// Where to push it.
        reference: String,
        /// Plain HTTP to the registry (always for 127.0.0.0/8 and localhost).
        #[arg(long)]
        insecure: bool,
    },
    /// Prints media types, digests, sizes and the WIT world of a component in a registry or a file.
    Inspect {
        /// `oci://REGISTRY/REPO:TAG`, `…@sha256:…`, or a path to a `.wasm` file.
        target: String,
        /// Plain HTTP to the registry (always for 127.0.0.0/8 and localhost).
        #[arg(long)]
        insecure: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Push { file, reference, insecure } => {
            let wasm = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            inspect::world(&wasm).with_context(|| format!("{} is not a WebAssembly component", file.display()))?;
            let (parsed, puller, auth) = registry(&reference, insecure)?;
            let pushed = wasmkube_oci::push::push_component(&puller, &parsed, &auth, wasm)
                .await
                .with_context(|| format!("pushing {} to {reference}", file.display()))?;
            println!("{}", pushed.manifest_digest);
            eprintln!("pushed oci://{}/{}@{}", parsed.registry(), parsed.repository(), pushed.manifest_digest);
        }
        Command::Inspect { target, insecure } => {
            let report = if std::path::Path::new(&target).is_file() {
                let wasm = std::fs::read(&target).with_context(|| format!("reading {target}"))?;
                inspect::file_report(&target, &wasm)?
            } else {
                let (parsed, puller, auth) = registry(&target, insecure)?;
                let pulled = puller
                    .pull(&parsed, &auth, &wasmkube_oci::NoStore)
                    .await
                    .with_context(|| format!("pulling {target}"))?;
                inspect::pulled_report(&target, &pulled)?
            };
            print!("{report}");
        }
    }
    Ok(())
}

/// The parsed reference, a client for its registry, and the user's credentials for it.
fn registry(reference: &str, insecure: bool) -> Result<(Reference, Puller, RegistryAuth)> {
    let parsed = parse_oci_ref(reference)?;
    let host = parsed.resolve_registry().to_string();
    let loopback = host.starts_with("127.") || host.starts_with("localhost");
    let plain_http = if insecure || loopback { vec![host.clone()] } else { Vec::new() };
    let credentials = match auth::docker_config_path() {
        Some(path) => auth::from_docker_config_file(&path, &host)?,
        None => None,
    };
    let auth = credentials.map_or(RegistryAuth::Anonymous, |c| c.registry_auth());
    Ok((parsed, Puller::new(plain_http, REQUEST_TIMEOUT), auth))
}
