//! Restarting containerd so it reads the new config: through the host's systemd when containerd is one of
//! its units, else by stopping the containerd process and starting it again as it ran ([`process`]).
//! From the DaemonSet's hostPID pod, commands run in the host's namespaces, entered by the installer itself
//! ([`ns`]): the node image has no `nsenter`.

pub mod ns;
pub mod process;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::layout::Host;
use ns::Namespaces;

/// How to restart containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartMode {
    /// `nsenter` when the host's PID 1 is systemd and knows the unit, `process` otherwise.
    Auto,
    /// `systemctl restart UNIT` in this process's namespaces.
    Systemctl,
    /// `systemctl restart UNIT` in the namespaces of the host's PID 1 (needs hostPID and privileges).
    Nsenter,
    /// Stop the containerd process that reads the edited config and start it again as it ran.
    Process,
    /// Print what to run and leave containerd alone.
    Skip,
}

/// What to restart.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host's root file system.
    pub host: Host,
    /// containerd's systemd unit.
    pub unit: String,
    /// Host path of the config containerd is started with; `None` when the layout does not tell (k0s
    /// drop-ins), and the only containerd process is the one.
    pub config: Option<PathBuf>,
}

/// containerd could not be restarted: the message says why and what to run by hand.
#[derive(Debug, thiserror::Error)]
#[error("could not restart containerd ({reason}); {by_hand}")]
pub struct RestartError {
    reason: String,
    by_hand: String,
}

impl RestartError {
    fn systemd(unit: &str, reason: String) -> Self {
        RestartError { reason, by_hand: systemctl_hint(unit) }
    }
}

fn systemctl_hint(unit: &str) -> String {
    format!("run on the node: systemctl restart {unit}")
}

/// Restarts containerd; `Ok(false)` when skipped.
pub fn restart(mode: RestartMode, target: &Target) -> Result<bool, RestartError> {
    let unit = target.unit.as_str();
    match mode {
        RestartMode::Skip => {
            tracing::warn!(
                unit,
                "containerd restart skipped; {} (or restart the containerd process where it is no systemd unit)",
                systemctl_hint(unit)
            );
            return Ok(false);
        }
        RestartMode::Systemctl => systemctl_restart(target, false)?,
        RestartMode::Nsenter => systemctl_restart(target, true)?,
        RestartMode::Process => process::restart(target)?,
        RestartMode::Auto => match systemd_knows(target) {
            Ok(()) => systemctl_restart(target, true)?,
            Err(why) => {
                tracing::info!("containerd is restarted as a plain process: {why}");
                process::restart(target)?
            }
        },
    }
    Ok(true)
}

/// `Ok` when the host's PID 1 is systemd and has `unit` loaded; else why not.
fn systemd_knows(target: &Target) -> Result<(), String> {
    let comm = std::fs::read_to_string("/proc/1/comm").map_err(|e| format!("reading /proc/1/comm: {e}"))?;
    if comm.trim() != "systemd" {
        return Err(format!("PID 1 is {:?}, not systemd", comm.trim()));
    }
    let out = systemctl(&target.host, &["show", "-p", "LoadState", &target.unit], true)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match load_state(&stdout) {
        Some("loaded") => Ok(()),
        state => Err(format!("systemd does not know the unit {} (LoadState {})", target.unit, state.unwrap_or("?"))),
    }
}

/// The value of `LoadState=` in `systemctl show -p LoadState` output.
fn load_state(show: &str) -> Option<&str> {
    show.lines().find_map(|l| l.trim().strip_prefix("LoadState="))
}

fn systemctl_restart(target: &Target, in_pid1_namespaces: bool) -> Result<(), RestartError> {
    let unit = target.unit.as_str();
    tracing::info!(unit, in_pid1_namespaces, "restarting containerd: systemctl restart {unit}");
    let out = systemctl(&target.host, &["restart", unit], in_pid1_namespaces)
        .map_err(|reason| RestartError::systemd(unit, reason))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(RestartError::systemd(unit, format!("`systemctl restart {unit}` {}: {}", out.status, stderr.trim())))
    }
}

/// Where systemctl usually is on a host.
const SYSTEMCTL_PATHS: [&str; 4] = ["/usr/bin/systemctl", "/bin/systemctl", "/usr/sbin/systemctl", "/sbin/systemctl"];

/// Runs the host's `systemctl`, in PID 1's namespaces when asked (as `nsenter -t 1 -m -u -i -n -p` did).
fn systemctl(host: &Host, args: &[&str], in_pid1_namespaces: bool) -> Result<std::process::Output, String> {
    let program = if in_pid1_namespaces {
        // The image may have no PATH; the binary is looked up in the host's file system, run from there.
        SYSTEMCTL_PATHS.iter().find(|p| host.path(p).exists()).map_or(Path::new("systemctl"), Path::new)
    } else {
        Path::new("systemctl")
    };
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    if in_pid1_namespaces {
        let ns = Namespaces::of(1).map_err(|e| {
            format!("cannot enter the namespaces of the host's PID 1 (the installer needs hostPID and privileges): {e}")
        })?;
        tracing::debug!(namespaces = ?ns.names(), "entering PID 1's namespaces");
        // SAFETY: `enter` is async-signal-safe.
        unsafe { c.pre_exec(move || ns.enter()) };
    }
    c.output().map_err(|e| format!("running {} {}: {e}", program.display(), args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(unit: &str) -> Target {
        Target { host: Host::new("/"), unit: unit.into(), config: None }
    }

    #[test]
    fn load_state_is_read_from_show() {
        assert_eq!(load_state("LoadState=loaded\n"), Some("loaded"));
        assert_eq!(load_state("LoadState=not-found\n"), Some("not-found"));
        assert_eq!(load_state(""), None);
    }

    #[test]
    fn a_failed_restart_says_what_to_run() {
        let err = restart(RestartMode::Systemctl, &target("wasmkube-no-such-unit-for-tests")).unwrap_err();
        assert!(
            err.to_string().contains("run on the node: systemctl restart wasmkube-no-such-unit-for-tests"),
            "{err}"
        );
    }

    #[test]
    fn a_process_restart_without_its_containerd_touches_nothing_and_says_what_to_do() {
        let target = Target { config: Some("/wasmkube-test/no-such-config.toml".into()), ..target("containerd") };
        let err = restart(RestartMode::Process, &target).unwrap_err().to_string();
        assert!(err.contains("no containerd process reads /wasmkube-test/no-such-config.toml"), "{err}");
        assert!(err.contains("restart containerd on the node so that it reads /wasmkube-test/"), "{err}");
    }

    #[test]
    fn skip_restarts_nothing() {
        assert!(!restart(RestartMode::Skip, &target("containerd")).unwrap());
    }
}
