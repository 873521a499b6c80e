//! Restarting containerd so it reads the new config: through the host's systemd, entered from a
//! container with `nsenter` when the installer runs in a hostPID pod.

use std::process::Command;

/// How to restart containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartMode {
    /// `nsenter` into PID 1's namespaces when the host's root is mounted elsewhere, `systemctl` otherwise.
    Auto,
    /// `systemctl restart UNIT` in this process's namespaces.
    Systemctl,
    /// `nsenter -t 1 -m -u -i -n -p -- systemctl restart UNIT` (needs hostPID and privileges).
    Nsenter,
    /// Print the command to run and leave containerd alone.
    Skip,
}

/// The command for `mode` (`None` for [`RestartMode::Skip`]); `in_container` decides [`RestartMode::Auto`].
pub fn restart_command(mode: RestartMode, unit: &str, in_container: bool) -> Option<Vec<String>> {
    let systemctl = ["systemctl", "restart", unit].map(String::from).to_vec();
    let nsenter = || {
        let mut c: Vec<String> = ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"].map(String::from).to_vec();
        c.extend(systemctl.clone());
        c
    };
    match mode {
        RestartMode::Skip => None,
        RestartMode::Systemctl => Some(systemctl),
        RestartMode::Nsenter => Some(nsenter()),
        RestartMode::Auto if in_container => Some(nsenter()),
        RestartMode::Auto => Some(systemctl),
    }
}

/// containerd could not be restarted: the message says what to run by hand.
#[derive(Debug, thiserror::Error)]
#[error("could not restart containerd ({reason}); run on the node: systemctl restart {unit}")]
pub struct RestartError {
    reason: String,
    unit: String,
}

/// Runs the restart command; `Ok(false)` when skipped.
pub fn restart(mode: RestartMode, unit: &str, in_container: bool) -> Result<bool, RestartError> {
    let Some(argv) = restart_command(mode, unit, in_container) else {
        tracing::warn!(unit, "containerd restart skipped; run on the node: systemctl restart {unit}");
        return Ok(false);
    };
    tracing::info!(command = %argv.join(" "), "restarting containerd");
    let fail = |reason: String| RestartError { reason, unit: unit.to_string() };
    let out = Command::new(&argv[0]).args(&argv[1..]).output().map_err(|e| fail(format!("{}: {e}", argv[0])))?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(fail(format!("`{}` {}: {}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_per_mode() {
        let s = |v: Option<Vec<String>>| v.map(|v| v.join(" "));
        assert_eq!(s(restart_command(RestartMode::Auto, "k3s", false)).as_deref(), Some("systemctl restart k3s"));
        assert_eq!(
            s(restart_command(RestartMode::Auto, "containerd", true)).as_deref(),
            Some("nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd")
        );
        assert_eq!(
            s(restart_command(RestartMode::Nsenter, "rke2-agent", false)).as_deref(),
            Some("nsenter -t 1 -m -u -i -n -p -- systemctl restart rke2-agent")
        );
        assert_eq!(s(restart_command(RestartMode::Systemctl, "c", true)).as_deref(), Some("systemctl restart c"));
        assert_eq!(restart_command(RestartMode::Skip, "c", true), None);
    }

    #[test]
    fn a_failed_restart_says_what_to_run() {
        let err = restart(RestartMode::Systemctl, "wasmkube-no-such-unit-for-tests", false).unwrap_err();
        assert!(
            err.to_string().contains("run on the node: systemctl restart wasmkube-no-such-unit-for-tests"),
            "{err}"
        );
    }
}
