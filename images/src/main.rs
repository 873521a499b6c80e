//! `wasmkube-images`: writes wasmkube's operator and node images as OCI archives (`make images`), and
//! turns a root file system directory into one (the sandbox and client images of `make local-up`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wasmkube_images::catalog::{Build, DEFAULT_REPOSITORY_PREFIX};
use wasmkube_images::layout::{OciImage, Platform};

/// OCI image archives for `ctr images import`, `kind load image-archive` or `skopeo copy oci-archive:`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `<out>/wasmkube-operator.tar` and `<out>/wasmkube-node.tar` from the static binaries.
    Write {
        /// Directory the archives are written to.
        #[arg(long)]
        out: PathBuf,
        /// `PLATFORM=DIR`: the static binaries of one platform (repeat for each), e.g.
        /// linux/amd64=target/x86_64-unknown-linux-musl/release.
        #[arg(long = "binaries", required = true, value_parser = parse_binaries)]
        binaries: Vec<(Platform, PathBuf)>,
        /// Registry and namespace of the image names.
        #[arg(long, default_value = DEFAULT_REPOSITORY_PREFIX)]
        repository_prefix: String,
        /// Tag of both images (the chart's appVersion).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
    },
    /// One image of this machine's platform whose single layer is the directory `dir`.
    FromDir {
        /// Full image reference, e.g. `wasmkube.local/pause:1`.
        #[arg(long)]
        name: String,
        /// The root file system.
        #[arg(long)]
        dir: PathBuf,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
        /// `config.Entrypoint`, one argument per flag.
        #[arg(long = "entrypoint")]
        entrypoint: Vec<String>,
        /// `config.Cmd`, one argument per flag.
        #[arg(long = "cmd")]
        cmd: Vec<String>,
        /// `config.User`.
        #[arg(long)]
        user: Option<String>,
    },
}

fn parse_binaries(s: &str) -> Result<(Platform, PathBuf), String> {
    let (platform, dir) = s.split_once('=').ok_or_else(|| format!("`{s}` is not PLATFORM=DIR"))?;
    Ok((platform.parse()?, PathBuf::from(dir)))
}

fn run(command: Command) -> wasmkube_images::Result<()> {
    match command {
        Command::Write { out, binaries, repository_prefix, tag } => {
            for a in (Build { repository_prefix, tag, binaries }).write(&out)? {
                println!("{} {} {}", a.path.display(), a.info.name, a.info.manifest_digest);
            }
        }
        Command::FromDir { name, dir, out, entrypoint, cmd, user } => {
            let mut image = OciImage::new(name).contents_of(&dir)?.entrypoint(entrypoint);
            if !cmd.is_empty() {
                image = image.cmd(cmd);
            }
            if let Some(user) = user {
                image = image.user(&user);
            }
            let info = image.write_tar(&out)?;
            println!("{} {} {}", out.display(), info.name, info.manifest_digest);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).with_writer(std::io::stderr).init();
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmkube-images: {e}");
            ExitCode::FAILURE
        }
    }
}
