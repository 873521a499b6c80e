//! Decides the snapshotter by trying a real overlay mount where containerd will keep its snapshots.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::config::Snapshotter;

/// `Overlayfs` when an overlay mount works in a scratch dir under `probe_dir`, else `Native`.
pub fn probe(probe_dir: &Path) -> Snapshotter {
    let result = try_overlay(probe_dir);
    let _ = std::fs::remove_dir_all(probe_dir);
    match result {
        Ok(()) => Snapshotter::Overlayfs,
        Err(reason) => {
            tracing::info!(%reason, "overlay mount does not work here; using the native snapshotter");
            Snapshotter::Native
        }
    }
}

fn try_overlay(dir: &Path) -> Result<(), String> {
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| dir.join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    std::fs::write(lower.join("probe"), b"lower").map_err(|e| e.to_string())?;
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    mount(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|e| format!("mount overlay: {e}"))?;
    // Writing through the mount catches file systems that mount but cannot hold an upper dir.
    let written = std::fs::write(merged.join("probe"), b"upper").map_err(|e| e.to_string());
    let unmounted = umount2(&merged, MntFlags::MNT_DETACH).map_err(|e| format!("umount: {e}"));
    written.and(unmounted)
}
