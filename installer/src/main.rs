//! `wasmkube-node-installer install|uninstall`: run on a node, or in the chart's DaemonSet with the host's
//! root mounted at `--host-root`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wasmkube_contract::node::METRICS_TOKEN_PATH;
use wasmkube_node_installer::config::ConfigVersion;
use wasmkube_node_installer::install::{IMAGE_SHIM_PATH, SHIM_BINARY};
use wasmkube_node_installer::layout::Host;
use wasmkube_node_installer::restart::RestartMode;
use wasmkube_node_installer::{install, label, metrics_token, rollout, uninstall, InstallError, Options};

#[derive(Parser, Debug)]
#[command(name = "wasmkube-node-installer", version, about = "Installs the wasmkube containerd shim on a node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Copy the shim, register the runtime with containerd, restart it, label the node.
    Install {
        #[command(flatten)]
        common: Common,
        /// The shim binary to install.
        #[arg(long, env = "WASMKUBE_SHIM_SOURCE", default_value = IMAGE_SHIM_PATH)]
        shim_source: PathBuf,
        /// A shim.toml to install as /etc/wasmkube/shim.toml.
        #[arg(long, env = "WASMKUBE_SHIM_CONFIG_SOURCE")]
        shim_config: Option<PathBuf>,
        /// Config layout for a missing or empty config: 2 (containerd 1.x) or 3 (containerd 2.x).
        #[arg(long, env = "WASMKUBE_CONFIG_VERSION", value_parser = parse_version)]
        config_version: Option<ConfigVersion>,
        /// After installing, wait for SIGTERM (the DaemonSet's container stays running).
        #[arg(long)]
        stay: bool,
        /// Secret (in POD_NAMESPACE) whose token the node's metrics endpoint asks scrapes for; while staying,
        /// the installer keeps it copied to the node (docs/security.md).
        #[arg(long, env = "WASMKUBE_METRICS_TOKEN_SECRET", requires = "stay")]
        metrics_token_secret: Option<String>,
        /// The installer's namespace, where that Secret is.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        namespace: String,
    },
    /// Undo `install`: runtime entry, drop-ins, shim, its config, the node label.
    Uninstall {
        #[command(flatten)]
        common: Common,
        /// After uninstalling, wait for SIGTERM (the DaemonSet in uninstall mode).
        #[arg(long)]
        stay: bool,
    },
    /// Switch the node-installer DaemonSet to uninstall and wait until every node ran it (pre-delete hook).
    UninstallEverywhere {
        /// Namespace of the DaemonSet.
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        /// Name of the DaemonSet.
        #[arg(long)]
        daemonset: String,
        /// Bound on the whole rollout, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout_seconds: u64,
    },
    /// Exit 0 once the last install or uninstall of this pod has finished (the DaemonSet's readiness probe).
    Done,
}

#[derive(Args, Debug)]
struct Common {
    /// Where the host's root file system is mounted.
    #[arg(long, env = "WASMKUBE_HOST_ROOT", default_value = "/")]
    host_root: PathBuf,
    /// containerd's config on the host (a file, a k3s/rke2 `.tmpl`, or a drop-in directory); detected if unset.
    #[arg(long, env = "WASMKUBE_CONTAINERD_CONFIG")]
    containerd_config: Option<PathBuf>,
    /// Host directory on containerd's PATH for the shim.
    #[arg(long, env = "WASMKUBE_BIN_DIR", default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// How to restart containerd.
    #[arg(long, env = "WASMKUBE_RESTART", value_enum, default_value = "auto")]
    restart: RestartMode,
    /// systemd unit of containerd (detected per distribution if unset).
    #[arg(long, env = "WASMKUBE_RESTART_UNIT")]
    restart_unit: Option<String>,
    /// Node to label `wasmkube.dev/runtime=ready` (the DaemonSet passes it from the downward API).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
}

fn parse_version(s: &str) -> Result<ConfigVersion, String> {
    let n: i64 = s.parse().map_err(|_| format!("{s:?} is not 2 or 3"))?;
    ConfigVersion::from_number(n).map_err(|e| e.to_string())
}

impl Common {
    fn options(&self, shim_source: PathBuf, shim_config: Option<PathBuf>, version: Option<ConfigVersion>) -> Options {
        Options {
            host: Host::new(&self.host_root),
            containerd_config: self.containerd_config.clone(),
            config_version: version,
            shim_source,
            bin_dir: self.bin_dir.clone(),
            shim_config_source: shim_config,
            restart: self.restart,
            restart_unit: self.restart_unit.clone(),
        }
    }
}

/// `containerd --version` of the host's containerd, run from the host's root.
fn host_containerd_version(host: &Host) -> Option<String> {
    ["/usr/bin/containerd", "/usr/local/bin/containerd", "/bin/containerd", "/var/lib/k0s/bin/containerd"]
        .iter()
        .find_map(|bin| {
            let out = Command::new(host.path(bin)).arg("--version").output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
}

/// Written when an install or uninstall finished; the readiness probe looks for it.
const DONE_MARKER: &str = "/run/wasmkube-installer/done";

fn mark_done() -> anyhow::Result<()> {
    let marker = std::path::Path::new(DONE_MARKER);
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(marker, b"")?;
    Ok(())
}

async fn stay_until_sigterm() -> anyhow::Result<()> {
    mark_done()?;
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?.recv().await;
    Ok(())
}

/// Exit code when containerd could not be restarted (the message says what to run).
const EXIT_RESTART: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            let restart = e.downcast_ref::<InstallError>().is_some_and(|e| matches!(e, InstallError::Restart(_)));
            ExitCode::from(if restart { EXIT_RESTART } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Install { common, shim_source, shim_config, config_version, stay, metrics_token_secret, namespace } => {
            anyhow::ensure!(
                shim_source.file_name().is_some_and(|n| n == SHIM_BINARY),
                "--shim-source {} must be named {SHIM_BINARY}",
                shim_source.display()
            );
            let opts = common.options(shim_source, shim_config, config_version);
            let host = opts.host.clone();
            let report = install(&opts, || host_containerd_version(&host))?;
            tracing::info!(changed = ?report.changed, restarted = report.restarted, "installed");
            // One client for the label and the token, and none when neither is asked for (a plain node run).
            let client = match (&common.node_name, &metrics_token_secret) {
                (None, None) => None,
                _ => Some(kube::Client::try_default().await?),
            };
            if let (Some(node), Some(client)) = (&common.node_name, &client) {
                label::set_label(client.clone(), node, true).await?;
            }
            if let (Some(secret), Some(client)) = (metrics_token_secret, client) {
                let file = host.path(METRICS_TOKEN_PATH);
                tokio::spawn(async move { metrics_token::keep_synced(client, namespace, secret, &file).await });
            }
            if stay {
                stay_until_sigterm().await?;
            }
        }
        Cmd::Uninstall { common, stay } => {
            // The label goes first, so no new wasm pod is scheduled onto a node that is losing the runtime.
            if let Some(node) = &common.node_name {
                label::set_label(kube::Client::try_default().await?, node, false).await?;
            }
            let opts = common.options(PathBuf::new(), None, None);
            let report = uninstall(&opts)?;
            tracing::info!(changed = ?report.changed, restarted = report.restarted, "uninstalled");
            if stay {
                stay_until_sigterm().await?;
            }
        }
        Cmd::UninstallEverywhere { namespace, daemonset, timeout_seconds } => {
            let client = kube::Client::try_default().await?;
            let timeout = std::time::Duration::from_secs(timeout_seconds);
            rollout::uninstall_everywhere(client, &namespace, &daemonset, timeout, std::time::Duration::from_secs(2))
                .await?;
        }
        Cmd::Done => anyhow::ensure!(std::path::Path::new(DONE_MARKER).exists(), "not finished yet"),
    }
    Ok(())
}
