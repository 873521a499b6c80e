//! What a component can reach, in one place (docs/security.md, "Guests"): without grants it sees no file
//! system, no environment beyond its own, no host by TCP, DNS or wasi:http; a granted volume is all the file
//! system it sees; a memory bomb stops at its limit and a runaway loop is killed, and neither harms the daemon
//! or the component running beside it. Real containerd, driven through `ctr`.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::{ensure, Result};
use wasmkube_harness::images::component_image_at;
use wasmkube_harness::{guests, require_root, wait_until, CmdOutput, ContainerdOpts, PrivateContainerd};

const RUNTIME: &str = wasmkube_harness::containerd::WASMKUBE_RUNTIME_TYPE;
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1");
const PROBE: &str = "docker.io/wasmkube/probe:test";
const SLEEPER: &str = "docker.io/wasmkube/sleeper:test";

fn node() -> Result<PrivateContainerd> {
    let ctrd = PrivateContainerd::start(ContainerdOpts::with_shim(SHIM))?;
    ctrd.import(&component_image_at(PROBE, std::fs::read(guests::guest_wasm("probe")?)?, "/probe.wasm"))?;
    ctrd.import(&component_image_at(SLEEPER, std::fs::read(guests::guest_wasm("sleeper")?)?, "/sleeper.wasm"))?;
    Ok(ctrd)
}

fn run_probe(ctrd: &PrivateContainerd, id: &str, flags: &[&str]) -> Result<CmdOutput> {
    let mut cmd = vec!["run", "--rm", "--runtime", RUNTIME];
    cmd.extend_from_slice(flags);
    cmd.extend_from_slice(&[PROBE, id]);
    Ok(ctrd.ctr(cmd)?)
}

/// The outcome the probe reported for `what` (the text after `what: `).
fn reported<'a>(out: &'a CmdOutput, what: &str) -> &'a str {
    let prefix = format!("{what}: ");
    out.stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("(not reported)")
}

#[test]
fn a_component_without_grants_sees_nothing_of_the_node() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    // A service on the node's loopback, where the daemon's own network namespace would reach it.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let out = run_probe(
        &ctrd,
        "isolated",
        &[
            "--env",
            "GREETING=mine",
            // What the operator sets for the shim: the guest must not see it.
            "--env",
            "WASMKUBE_APP=isolated",
            "--env",
            &format!("PROBE_TCP={addr}"),
            "--env",
            &format!("PROBE_HTTP=http://{addr}/"),
        ],
    )?;
    ensure!(out.code == 0, "the probe failed: {out:?}");
    println!("{}", out.stdout);

    // Its own variables (ctr's default PATH included), none of the shim's, none of the daemon's.
    assert_eq!(reported(&out, "env"), "GREETING,PATH,PROBE_HTTP,PROBE_TCP", "{}", out.stdout);
    for path in ["/", "/etc/passwd", "/proc/self/status", "."] {
        let what = reported(&out, &format!("fs {path}"));
        assert!(what.starts_with("denied"), "{path}: {what}");
    }
    for what in ["dns localhost".to_string(), format!("tcp {addr}"), format!("http http://{addr}/")] {
        let outcome = reported(&out, &what);
        assert!(outcome.starts_with("denied"), "{what}: {outcome}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the node's service saw a connection from the guest: {other:?}"),
    }
    Ok(())
}

#[test]
fn a_granted_volume_is_all_the_file_system_a_component_sees() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let volume = tempfile::tempdir()?;
    std::fs::write(volume.path().join("config.txt"), "x")?;
    let mount = |options| format!("type=bind,src={},dst=/data,options={options}", volume.path().display());
    let out = run_probe(&ctrd, "granted", &["--mount", &mount("rbind:ro"), "--env", "PROBE_DIR=/data"])?;
    ensure!(out.code == 0, "the probe failed: {out:?}");
    assert_eq!(reported(&out, "fs /data"), "ok config.txt", "{}", out.stdout);
    assert!(reported(&out, "write /data").starts_with("denied"), "a read-only volume: {}", out.stdout);
    assert!(reported(&out, "fs /").starts_with("denied"), "{}", out.stdout);
    assert!(reported(&out, "fs /etc/passwd").starts_with("denied"), "{}", out.stdout);

    let out = run_probe(&ctrd, "granted-rw", &["--mount", &mount("rbind:rw"), "--env", "PROBE_DIR=/data"])?;
    ensure!(out.code == 0, "the probe failed: {out:?}");
    assert_eq!(reported(&out, "write /data"), "ok wrote", "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(volume.path().join("probe-wrote.txt"))?, "probe");
    Ok(())
}

#[test]
fn a_memory_bomb_and_a_runaway_loop_end_without_harming_their_neighbour() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("neighbour.log");
    let log_uri = format!("file://{}", log.display());
    let ticks = || std::fs::read_to_string(&log).map(|l| l.lines().filter(|l| l.contains("tick")).count()).unwrap_or(0);
    ctrd.ctr(["run", "-d", "--runtime", RUNTIME, "--log-uri", &log_uri, "--env", "TICK_MS=50", SLEEPER, "neighbour"])?
        .check("ctr run -d neighbour")?;
    ctrd.wait_task_status("neighbour", "RUNNING", Duration::from_secs(20))?;
    let daemons = ctrd.shim_daemons();
    ensure!(daemons.len() == 1, "one daemon serves the node: {daemons:?}");

    // 1 GiB asked for under a 64 MiB limit: the instance is stopped at the limit, as the kernel's OOM kill would.
    let bomb = run_probe(&ctrd, "bomb", &["--memory-limit", &(64u64 << 20).to_string(), "--env", "BOMB_MB=1024"])?;
    assert_eq!(bomb.code, 137, "{bomb:?}");
    assert!(!bomb.stdout.contains("all 1024 MiB allocated"), "{}", bomb.stdout);
    assert!(!bomb.stdout.contains("bomb: 64 MiB"), "it stopped below its limit: {}", bomb.stdout);

    // A loop that never calls the host: only epoch interruption can stop it.
    ctrd.ctr(["run", "-d", "--runtime", RUNTIME, "--env", "SPIN=1", "--env", "TICK_MS=100000", SLEEPER, "runaway"])?
        .check("ctr run -d runaway")?;
    ctrd.wait_task_status("runaway", "RUNNING", Duration::from_secs(20))?;
    ctrd.ctr(["task", "kill", "-s", "SIGKILL", "runaway"])?.check("ctr task kill -s SIGKILL runaway")?;
    ctrd.wait_task_status("runaway", "STOPPED", Duration::from_secs(10))?;
    let deleted = ctrd.ctr(["task", "delete", "runaway"])?;
    assert!(deleted.stderr.contains("exit code 137"), "{deleted:?}");

    // The neighbour kept running, in the same daemon, and is still making progress.
    assert_eq!(ctrd.shim_daemons(), daemons, "the daemon survived");
    let before = ticks();
    wait_until("the neighbour ticks on", Duration::from_secs(10), || ticks() > before)?;
    ctrd.ctr(["task", "kill", "-s", "SIGKILL", "neighbour"])?.check("kill neighbour")?;
    ctrd.wait_task_status("neighbour", "STOPPED", Duration::from_secs(10))?;
    wait_until("the neighbour is deleted", Duration::from_secs(10), || {
        ctrd.ctr(["task", "delete", "neighbour"]).is_ok_and(|o| o.stderr.contains("exit code 137"))
    })?;
    Ok(())
}
