//! `containerd-shim-wasmkube-v1 start`, as containerd runs it for every task: it answers with the node daemon's
//! address on stdout and nothing else, records it in the bundle, reuses a daemon that serves, and reports a
//! daemon that cannot start in words on stderr with exit status 1.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wasmkube_harness::node_test::require_root;
use wasmkube_shim::config::CONFIG_ENV;

/// The grouping key every task of a containerd namespace shares (`daemon.rs`).
const GROUPING_KEY: &str = "wasmkube-node-daemon";

/// A task bundle where containerd puts one: `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`.
fn bundle(root: &Path, id: &str) -> PathBuf {
    let bundle = root.join("state/io.containerd.runtime.v2.task/k8s.io").join(id);
    std::fs::create_dir_all(&bundle).unwrap();
    bundle
}

fn start(bundle: &Path, containerd: &Path, config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1"))
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", containerd.with_extension("ttrpc"))
        .env(CONFIG_ENV, config)
        .args(["-namespace", "k8s.io", "-address"])
        .arg(containerd)
        .args(["-publish-binary", "/bin/true", "-id", "task", "start"])
        .output()
        .unwrap()
}

#[test]
fn start_gives_the_serving_daemons_address_and_records_it_in_the_bundle() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let containerd = root.path().join("containerd.sock");
    let address = containerd_shim::socket_address(&containerd.to_string_lossy(), "k8s.io", GROUPING_KEY);
    let socket = PathBuf::from(address.strip_prefix("unix://").unwrap());
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A daemon already serves (only its socket is looked at): neither task starts another.
    let _daemon = UnixListener::bind(&socket).unwrap();
    for id in ["sandbox", "container"] {
        let bundle = bundle(root.path(), id);
        let out = start(&bundle, &containerd, &root.path().join("no-shim.toml"));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), address);
        assert!(out.stderr.is_empty(), "containerd 1.6 reads stderr as part of the address: {out:?}");
        assert_eq!(std::fs::read_to_string(bundle.join("address")).unwrap(), address);
    }
    assert!(!root.path().join("state/wasmkube/k8s.io/daemon.log").exists(), "a second daemon was started");
    std::fs::remove_file(&socket).unwrap();
}

#[test]
fn a_daemon_that_cannot_start_fails_start_with_its_reason() {
    if !require_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("shim.toml");
    std::fs::write(&config, "no_such_setting = true\n").unwrap();
    let containerd = root.path().join("containerd.sock");
    // The daemon connects to containerd's ttrpc socket for events before it reads its config.
    let _events = UnixListener::bind(containerd.with_extension("ttrpc")).unwrap();
    let out = start(&bundle(root.path(), "sandbox"), &containerd, &config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("io.containerd.wasmkube.v1: the wasmkube node daemon did not start; its log "),
        "{stderr}"
    );
    assert!(stderr.contains("wasmkube daemon cannot start: "), "{stderr}");
    assert!(stderr.contains(&*config.to_string_lossy()), "the message names the config: {stderr}");
}

#[test]
fn every_process_of_the_binary_commits_allocator_arenas_lazily_unless_its_environment_says_otherwise() {
    // mimalloc's statistics at exit count the commits it made; an arena committed eagerly, whole, counts none.
    let commits = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1"))
            .arg("-v")
            .env("MIMALLOC_SHOW_STATS", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stderr.lines().find_map(|l| l.trim().strip_prefix("commits   :").map(str::trim).map(String::from));
        line.and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("no commit count in: {stderr}"))
    };
    assert!(commits(&[]) > 0, "the arena was committed eagerly");
    assert_eq!(commits(&[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]), 0, "the node's own setting wins");
}
