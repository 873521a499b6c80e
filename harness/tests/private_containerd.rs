//! The harness tested for real: a private containerd runs busybox under runc and leaves nothing behind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wasmkube_harness::containerd::{reap_stale, CniOpts, CRI_NAMESPACE, DIR_PREFIX, KEEP_DIRS_ENV, RUNC_RUNTIME_TYPE};
use wasmkube_harness::images::{self, BUSYBOX_IMAGE, PAUSE_IMAGE};
use wasmkube_harness::{init_test_tracing, mounts, procs, require_root};
use wasmkube_harness::{ContainerdOpts, PrivateContainerd};

fn wait_status(ctrd: &PrivateContainerd, id: &str, want: &str) -> Result<i32> {
    Ok(ctrd.wait_task_status(id, want, Duration::from_secs(20))? as i32)
}

fn assert_gone(socket: &Path, dir: &Path, container_pids: &[i32]) {
    assert_eq!(procs::with_address(socket), Vec::<i32>::new(), "processes still use the private socket");
    for pid in container_pids {
        assert!(!procs::alive(*pid), "container process {pid} survived");
    }
    assert!(mounts::belonging_to(dir, &mounts::current()).is_empty(), "mounts left under {}", dir.display());
    let kept = std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1");
    assert!(kept || !dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn busybox_runs_under_runc_and_teardown_leaves_nothing() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let ctrd = PrivateContainerd::start(ContainerdOpts::default())?;
    let (socket, dir) = (ctrd.socket(), ctrd.dir().to_path_buf());
    let info = ctrd.import(&images::busybox_image(BUSYBOX_IMAGE)?)?;
    let listed = ctrd.ctr(["images", "ls"])?.check("ctr images ls")?;
    ensure!(
        listed.stdout.contains(BUSYBOX_IMAGE) && listed.stdout.contains(&info.manifest_digest),
        "image not listed: {}",
        listed.stdout
    );

    let run = |id: &str, cmd: &[&str]| {
        let mut args = vec!["run", "--rm", "--runtime", RUNC_RUNTIME_TYPE, BUSYBOX_IMAGE, id];
        args.extend_from_slice(cmd);
        ctrd.ctr(args)
    };
    let out = run("t-true", &[])?;
    ensure!(out.code == 0, "busybox /bin/true: {out:?}");
    let out = run("t-exit", &["/bin/sh", "-c", "echo hi; exit 3"])?;
    ensure!(out.stdout.trim() == "hi", "stdout: {out:?}");
    ensure!(out.code == 3, "exit code: {out:?}");

    let detached = |id: &str| {
        let args = ["run", "-d", "--runtime", RUNC_RUNTIME_TYPE, BUSYBOX_IMAGE, id];
        ctrd.ctr(args.iter().copied().chain(["/bin/sleep", "1000"]))?.check("ctr run -d")
    };
    detached("t-killed")?;
    let killed_pid = wait_status(&ctrd, "t-killed", "RUNNING")?;
    ctrd.ctr(["task", "kill", "-s", "SIGKILL", "t-killed"])?.check("ctr task kill")?;
    wait_status(&ctrd, "t-killed", "STOPPED")?;

    // Left running on purpose: teardown must kill it, its shim and its mounts.
    detached("t-left")?;
    let left_pid = wait_status(&ctrd, "t-left", "RUNNING")?;
    ensure!(!procs::with_address(&socket).is_empty(), "no shim found by socket");
    ensure!(!mounts::belonging_to(&dir, &mounts::current()).is_empty(), "no rootfs mount seen");

    drop(ctrd);
    assert_gone(&socket, &dir, &[killed_pid, left_pid]);
    Ok(())
}

#[test]
fn cri_plugin_loads_with_cni_and_pause_image() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let opts = ContainerdOpts { cni: Some(CniOpts { subnet: "10.251.7.0/24".into() }), ..Default::default() };
    let ctrd = PrivateContainerd::start(opts)?;
    let (socket, dir) = (ctrd.socket(), ctrd.dir().to_path_buf());

    let plugins = ctrd.ctr(["plugins", "ls"])?.check("ctr plugins ls")?;
    let cri = plugins
        .stdout
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["io.containerd.grpc.v1", "cri"]))
        .with_context(|| format!("no CRI plugin listed:\n{}", plugins.stdout))?;
    ensure!(cri.trim_end().ends_with("ok"), "CRI plugin not ok: {cri}\n{}", ctrd.log_tail());
    let conflists = std::fs::read_dir(ctrd.dirs().cni_conf_dir())?.count();
    ensure!(conflists == 1, "expected one CNI conflist");

    let pause = images::pause_image(PAUSE_IMAGE, &ctrd.work_dir())?;
    ctrd.import_in(CRI_NAMESPACE, &pause)?;
    let listed = ctrd.ctr_in(CRI_NAMESPACE, ["images", "ls", "-q"])?.check("ctr images ls")?;
    ensure!(listed.stdout.lines().any(|l| l == PAUSE_IMAGE), "{}", listed.stdout);
    // CRI never unpacks on demand, so the import itself must have unpacked the image.
    let check = ctrd.ctr_in(CRI_NAMESPACE, ["images", "check"])?.check("ctr images check")?;
    ensure!(check.stdout.contains("true"), "not unpacked: {}", check.stdout);

    drop(ctrd);
    assert_gone(&socket, &dir, &[]);
    Ok(())
}

#[test]
fn teardown_runs_when_a_test_panics() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let seen = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        let ctrd = PrivateContainerd::start(ContainerdOpts::default())?;
        ctrd.import(&images::busybox_image(BUSYBOX_IMAGE)?)?;
        let args = ["run", "-d", BUSYBOX_IMAGE, "t-panic", "/bin/sleep", "1000"];
        ctrd.ctr(args)?.check("ctr run -d")?;
        let pid = wait_status(&ctrd, "t-panic", "RUNNING")?;
        *seen.lock().unwrap() = Some((ctrd.socket(), ctrd.dir().to_path_buf(), pid));
        panic!("deliberate panic with a running container");
    }));
    ensure!(outcome.is_err(), "the closure was expected to panic");
    let (socket, dir, pid) = seen.lock().unwrap().take().context("setup failed before the panic")?;
    assert_gone(&socket, &dir, &[pid]);
    Ok(())
}

#[test]
fn stale_instances_of_dead_owners_are_reaped() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let base = tempfile::tempdir()?;
    let stale = base.path().join(format!("{DIR_PREFIX}stale1"));
    let socket = stale.join("containerd.sock");
    let mount_point = stale.join("state/rootfs");
    std::fs::create_dir_all(&mount_point)?;
    let mut dead = Command::new("true").spawn()?;
    dead.wait()?;
    std::fs::write(stale.join("owner.pid"), dead.id().to_string())?;
    let status = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&mount_point).status()?;
    ensure!(status.success(), "mount tmpfs");
    // Stands in for a shim left behind: it passes our socket as -address and has a child.
    let mut shim = Command::new("sh").args(["-c", "sleep 1000; :", "sh", "-address"]).arg(&socket).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while procs::with_descendants(&[shim.id() as i32], &procs::list()).len() < 2 {
        ensure!(Instant::now() < deadline, "fake shim never started its child");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tree: Vec<i32> = procs::with_descendants(&[shim.id() as i32], &procs::list()).into_iter().collect();

    reap_stale(base.path());
    let _ = shim.wait();
    assert_gone(&socket, &stale, &tree);
    Ok(())
}
