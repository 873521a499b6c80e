//! The installer against a real private containerd that starts without the wasmkube runtime: install →
//! restart → a CRI pod with handler `wasmkube` runs hello-cli → uninstall → restart → the handler is unknown.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::{
    guests, init_test_tracing, paths, procs, require_root, wait_until, ContainerdOpts, PrivateContainerd,
};

const INSTALLER: &str = env!("CARGO_BIN_EXE_wasmkube-node-installer");
const HELLO: &str = "docker.io/wasmkube/hello-cli:test";

/// The shim built by this workspace (`cargo test --workspace` builds it with the shim's tests).
fn shim_binary() -> Result<PathBuf> {
    Ok(paths::built_binary(paths::SHIM_BINARY, "wasmkube-shim")?)
}

/// Runs the installer with the private containerd's dir as the host root and its config.toml as the config.
fn installer(host_root: &Path, config: &Path, args: &[&str]) -> Result<String> {
    // The harness restarts its containerd itself; the installer must say what to run instead.
    let out = installer_command(host_root, config, args, "skip").output().context("running wasmkube-node-installer")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "installer {args:?} failed ({}): {stderr}", out.status);
    Ok(stderr)
}

fn installer_command(host_root: &Path, config: &Path, args: &[&str], restart: &str) -> Command {
    let mut c = Command::new(INSTALLER);
    c.args(args)
        .arg("--host-root")
        .arg(host_root)
        .arg("--containerd-config")
        .arg(config)
        .args(["--restart", restart])
        .env_remove("NODE_NAME")
        .env("RUST_LOG", "info");
    if restart != "skip" {
        // On a host whose PID 1 is systemd, `auto` must not find a unit and touch the host's containerd.
        c.args(["--restart-unit", "wasmkube-test-no-such-unit"]);
    }
    c
}

fn run_hello(cri: &CriClient) -> Result<()> {
    let pod = cri.run_pod_sandbox("installed-pod", WASMKUBE_HANDLER)?;
    let spec = ContainerSpec { name: "hello".into(), image: HELLO.into(), ..Default::default() };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, Duration::from_secs(30))?;
    ensure!(status.exit_code == 0, "hello-cli exited with {status:?}");
    Ok(cri.remove_pod(&pod)?)
}

#[test]
fn install_makes_the_handler_work_and_uninstall_takes_it_away() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let shim = shim_binary()?;
    let opts = ContainerdOpts {
        cni: Some(CniOpts { subnet: "10.88.41.0/24".into() }),
        wasmkube_runtime: false,
        ..Default::default()
    };
    let mut ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    ctrd.import_in(
        CRI_NAMESPACE,
        &component_image_at(HELLO, std::fs::read(guests::guest_wasm("hello-cli")?)?, "/app.wasm"),
    )?;
    let cri = ctrd.cri()?;
    wait_until("CRI sees the imported image", Duration::from_secs(10), || {
        cri.image_id(HELLO).is_ok_and(|id| id.is_some())
    })?;
    unknown_handler(&cri, "before").context("before install")?;

    // The private containerd's dir plays the host's root; its config.toml is a host path below it.
    let (host_root, config) = host_and_config(&ctrd)?;
    let original = std::fs::read_to_string(ctrd.dirs().config())?;
    let shim_toml = ctrd.work_dir().join("shim.toml");
    std::fs::write(&shim_toml, "cache_max_bytes = 1048576\n")?;
    let shim_config_arg = shim_toml.to_string_lossy().into_owned();
    let log = installer(
        &host_root,
        &config,
        &["install", "--shim-source", &shim.to_string_lossy(), "--shim-config", &shim_config_arg],
    )?;
    ensure!(log.contains("systemctl restart containerd"), "a skipped restart says what to run: {log}");
    let installed = std::fs::read_to_string(ctrd.dirs().config())?;
    ensure!(installed.contains("io.containerd.wasmkube.v1") && installed.starts_with(&original[..40]), "{installed}");
    let bin_dir = host_root.join("usr/local/bin");
    ensure!(bin_dir.join(paths::SHIM_BINARY).is_file(), "the shim is on the host");
    ensure!(std::fs::read_to_string(host_root.join("etc/wasmkube/shim.toml"))? == "cache_max_bytes = 1048576\n");

    // Idempotent: a second run leaves the config as it was.
    installer(&host_root, &config, &["install", "--shim-source", &shim.to_string_lossy()])?;
    ensure!(std::fs::read_to_string(ctrd.dirs().config())? == installed, "a second install changed the config");

    ctrd.prepend_path(&bin_dir);
    ctrd.restart()?;
    let cri = ctrd.cri()?;
    run_hello(&cri).context("a pod under the installed handler")?;

    installer(&host_root, &config, &["uninstall"])?;
    ensure!(std::fs::read_to_string(ctrd.dirs().config())? == original, "uninstall restores the config");
    ensure!(!bin_dir.join(paths::SHIM_BINARY).exists(), "uninstall removes the shim");
    ensure!(!host_root.join("etc/wasmkube").exists(), "uninstall removes the shim's config");
    let backup = format!("{}.wasmkube-backup", ctrd.dirs().config().display());
    ensure!(!Path::new(&backup).exists(), "a restored file needs no backup");
    ctrd.restart()?;
    let cri = ctrd.cri()?;
    unknown_handler(&cri, "after").context("after uninstall")
}

/// RunPodSandbox with handler `wasmkube` fails because containerd has no such runtime.
fn unknown_handler(cri: &CriClient, name: &str) -> Result<()> {
    let err = match cri.run_pod_sandbox(name, WASMKUBE_HANDLER) {
        Ok(pod) => anyhow::bail!("RunPodSandbox with handler wasmkube succeeded: {}", pod.id),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(r#"no runtime for "wasmkube" is configured"#), "not the unknown-handler error: {err}");
    Ok(())
}

/// The private containerd's dir as the host root and its config.toml as a host path below it.
fn host_and_config(ctrd: &PrivateContainerd) -> Result<(PathBuf, PathBuf)> {
    let host_root = ctrd.dir().to_path_buf();
    let config = Path::new("/").join(ctrd.dirs().config().strip_prefix(&host_root)?);
    Ok((host_root, config))
}

/// Live containerd daemons started with `config`.
fn containerds_reading(config: &Path) -> Vec<i32> {
    let config = config.to_string_lossy();
    procs::list()
        .into_iter()
        .filter(|p| p.state != 'Z' && p.cmdline.first().is_some_and(|a| a.ends_with("containerd")))
        .filter(|p| p.cmdline.iter().any(|a| *a == config))
        .map(|p| p.pid)
        .collect()
}

/// Kills the containerd the installer started (no child of the harness) before the harness tears down.
struct Relaunched(PathBuf);

impl Drop for Relaunched {
    fn drop(&mut self) {
        let me = std::process::id() as i32;
        let strays: Vec<i32> = containerds_reading(&self.0)
            .into_iter()
            .filter(|pid| procs::read(*pid).is_some_and(|p| p.ppid != me))
            .collect();
        procs::kill_trees(&strays, Duration::from_secs(10));
    }
}

/// A cgroup v2 group of the test's own, so the installer runs elsewhere than containerd; removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn create() -> Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mount = mountinfo
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split(' ').nth(4))
            .context("no cgroup2 file system is mounted")?;
        let dir = Path::new(mount).join(format!("wasmkube-installer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TestCgroup(dir))
    }

    /// The line of this group in /proc/PID/cgroup.
    fn line(&self) -> Result<String> {
        let mount = self.0.parent().context("cgroup dir")?;
        Ok(format!("0::/{}", self.0.strip_prefix(mount)?.display()))
    }

    /// Makes `c` start as in the DaemonSet's pod: in this group, with mount and cgroup namespaces of its own.
    fn pod_like(&self, c: &mut Command) -> Result<()> {
        let procs = std::ffi::CString::new(self.0.join("cgroup.procs").into_os_string().into_encoded_bytes())?;
        // SAFETY: system calls on data prepared before the fork.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        Ok(())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cgroup_of(pid: i32) -> Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?)
}

/// containerd logs this once per start.
const BOOTED: &str = "containerd successfully booted";

/// Runs the installer with `restart` as if in a pod (see [`TestCgroup::pod_like`]); its log.
fn installer_restarting(ctrd: &PrivateContainerd, args: &[&str], restart: &str, cgroup: &TestCgroup) -> Result<String> {
    let (host_root, config) = host_and_config(ctrd)?;
    let mut c = installer_command(&host_root, &config, args, restart);
    cgroup.pod_like(&mut c)?;
    let out = c.output().context("running wasmkube-node-installer")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "installer {args:?} failed ({}): {stderr}", out.status);
    Ok(stderr)
}

/// The one containerd on the config after a restart: not `old`, in `old`'s cgroups and the test's namespaces
/// (not the installer's), writing to the harness's log file.
fn restarted_containerd(ctrd: &PrivateContainerd, old: i32, old_cgroup: &str, cgroup: &TestCgroup) -> Result<i32> {
    let now = containerds_reading(&ctrd.dirs().config());
    ensure!(now.len() == 1 && now[0] != old, "one new containerd instead of {old}: {now:?}");
    let new = now[0];
    let new_cgroup = cgroup_of(new)?;
    ensure!(new_cgroup == old_cgroup, "containerd {new} is in\n{new_cgroup}\nnot as before in\n{old_cgroup}");
    ensure!(!new_cgroup.contains(&cgroup.line()?), "containerd stayed in the installer's cgroup");
    for ns in ["mnt", "cgroup"] {
        let theirs = std::fs::read_link(format!("/proc/{new}/ns/{ns}"))?;
        ensure!(
            theirs == std::fs::read_link(format!("/proc/self/ns/{ns}"))?,
            "containerd {new} is not in our {ns} namespace"
        );
    }
    for fd in [1, 2] {
        let target = std::fs::read_link(format!("/proc/{new}/fd/{fd}"))?;
        ensure!(target == ctrd.dirs().log(), "fd {fd} of containerd {new} is {}", target.display());
    }
    Ok(new)
}

#[test]
fn a_containerd_without_systemd_is_restarted_as_it_ran() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let shim = shim_binary()?;
    // The shim is on containerd's PATH; only the runtime entry is missing until the installer adds it.
    let opts = ContainerdOpts {
        shim: Some(shim.clone()),
        cni: Some(CniOpts { subnet: "10.88.42.0/24".into() }),
        wasmkube_runtime: false,
        ..Default::default()
    };
    // Dropped in reverse: the stray containerd goes first, then its cgroup can go, then the harness's dir.
    let cgroup = TestCgroup::create()?;
    let ctrd = PrivateContainerd::start(opts)?;
    let _relaunched = Relaunched(ctrd.dirs().config());
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    unknown_handler(&ctrd.cri()?, "before").context("before install")?;
    let first = ctrd.pid().context("harness containerd")? as i32;
    let first_cgroup = cgroup_of(first)?;
    ensure!(ctrd.log().matches(BOOTED).count() == 1, "one start so far");

    // `auto`: PID 1 of this machine is no systemd, or it does not know the unit.
    let log = installer_restarting(&ctrd, &["install", "--shim-source", &shim.to_string_lossy()], "auto", &cgroup)?;
    ensure!(log.contains("restarted as a plain process"), "auto chose the process restart: {log}");
    ensure!(log.contains("starting it as it ran"), "nobody else started containerd: {log}");
    let second = restarted_containerd(&ctrd, first, &first_cgroup, &cgroup)?;
    ensure!(ctrd.log().matches(BOOTED).count() == 2, "the new containerd logs to the same file");
    let cri = ctrd.cri()?;
    let pod = cri.run_pod_sandbox("restarted-pod", WASMKUBE_HANDLER).context("the runtime is loaded")?;
    cri.remove_pod(&pod)?;

    let log = installer_restarting(&ctrd, &["uninstall"], "process", &cgroup)?;
    ensure!(log.contains("starting it as it ran"), "{log}");
    restarted_containerd(&ctrd, second, &first_cgroup, &cgroup)?;
    ensure!(ctrd.log().matches(BOOTED).count() == 3, "the third start logs to the same file");
    unknown_handler(&ctrd.cri()?, "after").context("after uninstall")
}

#[test]
fn a_supervised_containerd_is_not_started_twice() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let shim = shim_binary()?;
    let opts = ContainerdOpts { wasmkube_runtime: false, ..Default::default() };
    let mut ctrd = PrivateContainerd::start(opts)?;
    let _relaunched = Relaunched(ctrd.dirs().config());
    let (host_root, config) = host_and_config(&ctrd)?;
    let first = ctrd.pid().context("harness containerd")? as i32;
    let installer =
        installer_command(&host_root, &config, &["install", "--shim-source", &shim.to_string_lossy()], "process")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
    // The test is the supervisor: it starts containerd again 2 s after the installer stopped it (runit
    // waits 1 s, systemd's containerd.service 5 s), so the installer has to wait for it.
    wait_until("the installer stops containerd", Duration::from_secs(30), || !procs::alive(first))?;
    std::thread::sleep(Duration::from_secs(2));
    ctrd.restart()?;
    let out = installer.wait_with_output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "installer failed ({}): {log}", out.status);
    ensure!(log.contains("a supervisor started containerd again"), "{log}");
    let second = ctrd.pid().context("harness containerd")? as i32;
    let now = containerds_reading(&ctrd.dirs().config());
    ensure!(now == [second], "only the supervisor's containerd {second} runs: {now:?}");
    ensure!(ctrd.ctr(["version"])?.success(), "containerd answers");
    Ok(())
}
