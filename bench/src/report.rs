//! Facts about the run recorded next to the numbers, and writing results atomically.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::json;
use wasmkube_harness::PrivateContainerd;

/// Options every benchmark of our shim takes: which shim binary, and where the JSON result goes.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The shim binary (default: <target>/release/containerd-shim-wasmkube-v1).
    #[arg(long)]
    pub shim: Option<PathBuf>,
    /// Where to write the JSON result (default: bench/results/<benchmark>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl NodeArgs {
    /// The shim binary to measure: `--shim`, else the release build.
    pub fn shim_binary(&self) -> Result<PathBuf> {
        crate::ctr_run::shim_binary(self.shim.clone())
    }

    /// `--out`, else `default`.
    pub fn out_or(&self, default: impl FnOnce() -> PathBuf) -> PathBuf {
        self.out.clone().unwrap_or_else(default)
    }
}

/// `bench/results/` of the workspace.
pub fn results_dir() -> PathBuf {
    wasmkube_harness::paths::workspace_root().join("bench").join("results")
}

/// Current UTC time, RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// The checked-out commit, when the workspace is a git repository with one.
pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(wasmkube_harness::paths::workspace_root())
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// Number of CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Writes `value` as pretty JSON to `path` through a temp file, so readers never see half a file.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Facts about a run on a private containerd with `shim`: versions, commit, date and host.
pub fn environment(ctrd: &PrivateContainerd, shim: &Path) -> Result<serde_json::Value> {
    Ok(json!({
        "containerd_version": ctrd.server_version()?,
        "snapshotter": ctrd.snapshotter().as_str(),
        "shim": shim.display().to_string(),
        "date": now_rfc3339(),
        "git_commit": git_commit(),
        "host": { "cpus": cpus(), "kernel": kernel() },
    }))
}

/// Whether `shim` and this program are release builds: a debug shim lives in a `debug` target folder.
pub fn is_release_build(shim: &Path) -> bool {
    !cfg!(debug_assertions) && !shim.components().any(|c| c.as_os_str() == "debug")
}

/// Default result file of benchmark `name`: `NAME.json`, or `NAME.dev-profile.json` for a debug build, so
/// a dev-profile figure never overwrites a release one.
pub fn result_path(name: &str, release: bool) -> PathBuf {
    let file = if release { format!("{name}.json") } else { format!("{name}.dev-profile.json") };
    results_dir().join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_builds_get_their_own_result_file() {
        assert!(result_path("wake", true).ends_with("bench/results/wake.json"));
        assert!(result_path("wake", false).ends_with("bench/results/wake.dev-profile.json"));
        assert!(!is_release_build(Path::new("/w/target/debug/containerd-shim-wasmkube-v1")));
    }
}
