//! Leaves the host as it was: stops containerd, kills its shims and containers, unmounts, deletes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::dirs::{Dirs, DIR_PREFIX};
use crate::{cmd, mounts, procs};

/// How long processes get to go away after a signal.
const GRACE: Duration = Duration::from_secs(10);
/// How long killed shims' sockets may take to be released before their paths are removed.
const SOCKET_RELEASE: Duration = Duration::from_secs(2);

/// Everything after containerd itself is stopped; safe to run more than once.
pub fn cleanup_after_containerd(dirs: &Dirs, bridge: Option<&str>, keep_dir: bool) {
    let bundles = bundles(&dirs.task_bundles());
    kill_shims(&dirs.socket());
    for b in &bundles {
        delete_runc_state(dirs, b);
        remove_shim_socket(b);
    }
    for ns in read_dir_names(&dirs.task_bundles()) {
        remove_empty_namespace_dirs(&ns);
    }
    let left = mounts::unmount_all(&dirs.base);
    if !left.is_empty() {
        tracing::warn!(?left, "mounts left after teardown");
    }
    if let Some(bridge) = bridge {
        delete_link(bridge);
    }
    if keep_dir {
        let _ = std::fs::write(dirs.kept_marker(), b"");
        eprintln!("wasmkube-harness: kept {} (WASMKUBE_KEEP_TEST_DIRS=1)", dirs.base.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dirs.base) {
        tracing::warn!(dir = %dirs.base.display(), %e, "could not remove test dir");
    }
}

/// Where shims of containerd 1.x put their sockets, whatever containerd's own state dir is.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s/";

/// Kills every process started with `-address <socket>` and all their descendants,
/// then removes the shim sockets they can no longer remove themselves.
pub fn kill_shims(socket: &Path) {
    let shims = procs::with_address(socket);
    if shims.is_empty() {
        return;
    }
    let tree: Vec<i32> = procs::with_descendants(&shims, &procs::list()).into_iter().collect();
    let sockets: Vec<PathBuf> =
        procs::unix_socket_paths(&tree).into_iter().filter(|p| p.starts_with(SHIM_SOCKET_DIR)).collect();
    tracing::debug!(?shims, ?sockets, "killing shims of private containerd");
    let left = procs::kill_trees(&shims, GRACE);
    if !left.is_empty() {
        tracing::warn!(?left, "processes survived SIGKILL");
    }
    // A killed process's main thread shows as a zombie before its other threads have exited and the last of
    // them has closed its files, so its sockets can still be bound for a moment: wait for them (bounded).
    let deadline = Instant::now() + SOCKET_RELEASE;
    let mut still_bound = procs::bound_unix_socket_paths();
    while sockets.iter().any(|p| still_bound.contains(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        still_bound = procs::bound_unix_socket_paths();
    }
    for path in sockets.iter().filter(|p| !still_bound.contains(*p)) {
        let _ = std::fs::remove_file(path);
    }
}

/// One task bundle: `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`.
#[derive(Debug, Clone)]
pub struct Bundle {
    namespace: String,
    id: String,
    path: PathBuf,
}

fn bundles(task_root: &Path) -> Vec<Bundle> {
    let mut found = Vec::new();
    for ns in read_dir_names(task_root) {
        for id in read_dir_names(&task_root.join(&ns)) {
            let path = task_root.join(&ns).join(&id);
            found.push(Bundle { namespace: ns.clone(), id, path });
        }
    }
    found
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// Removes runc's state and cgroups of a killed container, only if the state names our dir.
fn delete_runc_state(dirs: &Dirs, b: &Bundle) {
    let roots = [
        dirs.runc_root().join(&b.namespace),
        Path::new("/run/containerd/runc").join(&b.namespace),
        // The wasmkube shim's daemon runs pod sandboxes with runc, keeping its state in its home.
        dirs.state().join("wasmkube").join(&b.namespace).join("runc"),
    ];
    let ours = dirs.base.to_string_lossy().into_owned();
    for root in roots {
        let state = root.join(&b.id).join("state.json");
        let Ok(text) = std::fs::read_to_string(&state) else {
            continue;
        };
        // Another instance may use the same namespace and id; its state names its own dir.
        if !text.contains(&ours) {
            continue;
        }
        let mut c = Command::new("runc");
        c.arg("--root").arg(&root).args(["delete", "--force", &b.id]);
        if let Err(e) = cmd::run_checked(&mut c, GRACE) {
            tracing::warn!(%e, "runc delete");
        }
    }
}

/// Removes the socket of a SIGKILLed shim, which lives outside our dir (`/run/containerd/s/…`).
fn remove_shim_socket(b: &Bundle) {
    let Ok(address) = std::fs::read_to_string(b.path.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if path.starts_with(SHIM_SOCKET_DIR) && Path::new(path).exists() {
        let _ = std::fs::remove_file(path);
    }
}

/// `ctr` puts containers in cgroup `/<namespace>/<id>` and runc keeps state in
/// `/run/containerd/runc/<namespace>`; runc removes the leaves, we remove the parents if empty.
fn remove_empty_namespace_dirs(namespace: &str) {
    // rmdir fails on a non-empty dir or a cgroup still in use, so other users are never affected.
    let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(namespace));
    for m in mounts::current() {
        if m.fs_type == "cgroup" || m.fs_type == "cgroup2" {
            let _ = std::fs::remove_dir(m.mount_point.join(namespace));
        }
    }
}

fn delete_link(name: &str) {
    if !Path::new("/sys/class/net").join(name).exists() {
        return;
    }
    let mut c = Command::new("ip");
    c.args(["link", "delete", name]);
    if let Err(e) = cmd::run_checked(&mut c, GRACE) {
        tracing::warn!(%e, "deleting bridge");
    }
}

/// Cleans up instances under `base` whose owning process died without tearing them down.
pub fn reap_stale(base: &Path) {
    for name in read_dir_names(base) {
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dirs = Dirs::new(base.join(&name));
        if dirs.kept_marker().exists() || owner_alive(&dirs) {
            continue;
        }
        tracing::info!(dir = %dirs.base.display(), "cleaning up a stale private containerd");
        if let Some(pid) = read_pid(&dirs.containerd_pid()) {
            if is_our_containerd(pid, &dirs) {
                procs::kill_trees(&[pid], GRACE);
            }
        }
        let bridge = super::config::bridge_name(&dirs);
        cleanup_after_containerd(&dirs, Some(&bridge), false);
    }
}

fn owner_alive(dirs: &Dirs) -> bool {
    // No owner file yet means the instance is still being created by a live process.
    read_pid(&dirs.owner_pid()).is_none_or(procs::alive)
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Guards against pid reuse: the process must run with our config file.
fn is_our_containerd(pid: i32, dirs: &Dirs) -> bool {
    let config = dirs.config().to_string_lossy().into_owned();
    procs::read(pid).is_some_and(|p| p.cmdline.contains(&config))
}
