//! The shim under a real, private containerd, driven through `ctr` as a user would drive it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wasmkube_harness::images::component_image_at;
use wasmkube_harness::{guests, require_root, wait_until, ContainerdOpts, PrivateContainerd};

const RUNTIME: &str = wasmkube_shim::RUNTIME_TYPE;
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1");
const HELLO: &str = "docker.io/wasmkube/hello-cli:test";
const SLEEPER: &str = "docker.io/wasmkube/sleeper:test";

/// A private containerd with our shim registered and the example components imported.
fn node() -> Result<PrivateContainerd> {
    let ctrd = PrivateContainerd::start(ContainerdOpts::with_shim(SHIM))?;
    let hello = std::fs::read(guests::guest_wasm("hello-cli")?)?;
    ctrd.import(&component_image_at(HELLO, hello, "/app.wasm"))?;
    let sleeper = std::fs::read(guests::guest_wasm("sleeper")?)?;
    ctrd.import(&component_image_at(SLEEPER, sleeper, "/sleeper.wasm"))?;
    Ok(ctrd)
}

/// `ctr run --rm` of `image` with extra `run` flags, then the container's own args.
fn run_rm(
    ctrd: &PrivateContainerd,
    flags: &[&str],
    image: &str,
    id: &str,
    args: &[&str],
) -> Result<wasmkube_harness::CmdOutput> {
    let mut cmd = vec!["run", "--rm", "--runtime", RUNTIME];
    cmd.extend_from_slice(flags);
    cmd.extend_from_slice(&[image, id]);
    cmd.extend_from_slice(args);
    Ok(ctrd.ctr(cmd)?)
}

#[test]
fn hello_cli_prints_args_env_and_stderr() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let out = run_rm(&ctrd, &["--env", "GREETING=from a test"], HELLO, "hello-1", &["/app.wasm", "one", "two"])?;
    ensure!(out.code == 0, "exit code: {out:?}");
    assert_eq!(out.stdout, "hello from a WebAssembly component\nargs: one two\nGREETING=from a test\n");
    assert!(out.stderr.contains("hello-cli: this line goes to stderr"), "stderr: {}", out.stderr);
    Ok(())
}

#[test]
fn exit_codes_propagate_as_a_process_would_report_them() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let ok = run_rm(&ctrd, &["--env", "EXIT_CODE=0"], HELLO, "exit-0", &[])?;
    assert_eq!(ok.code, 0, "{ok:?}");
    // hello-cli exits through WASI 0.2.12's `exit-with-code`: the code arrives exact.
    let failed = run_rm(&ctrd, &["--env", "EXIT_CODE=3"], HELLO, "exit-3", &[])?;
    assert_eq!(failed.code, 3, "{failed:?}");
    let high = run_rm(&ctrd, &["--env", "EXIT_CODE=255"], HELLO, "exit-255", &[])?;
    assert_eq!(high.code, 255, "{high:?}");
    // A bad value returns ExitCode 2 from main: std calls `exit(err)`, which WASI 0.2 reports as 1.
    let plain = run_rm(&ctrd, &["--env", "EXIT_CODE=x"], HELLO, "exit-x", &[])?;
    assert_eq!(plain.code, 1, "{plain:?}");
    Ok(())
}

#[test]
fn sleeper_reports_143_on_sigterm_and_137_on_sigkill_even_when_busy() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let start = |id: &str, env: &str| ctrd.ctr(["run", "-d", "--runtime", RUNTIME, "--env", env, SLEEPER, id]);
    start("sleep-term", "TICK_MS=50")?.check("ctr run -d sleep-term")?;
    // A guest spinning in a loop never calls the host: only epoch interruption can stop it.
    start("sleep-kill", "SPIN=1")?.check("ctr run -d sleep-kill")?;
    ctrd.wait_task_status("sleep-term", "RUNNING", Duration::from_secs(20))?;
    ctrd.wait_task_status("sleep-kill", "RUNNING", Duration::from_secs(20))?;
    assert_eq!(ctrd.shim_daemons().len(), 1, "both containers are served by one daemon");

    ctrd.ctr(["task", "kill", "sleep-term"])?.check("ctr task kill")?;
    ctrd.ctr(["task", "kill", "-s", "SIGKILL", "sleep-kill"])?.check("ctr task kill -s SIGKILL")?;
    ctrd.wait_task_status("sleep-term", "STOPPED", Duration::from_secs(10))?;
    ctrd.wait_task_status("sleep-kill", "STOPPED", Duration::from_secs(10))?;
    // `ctr task delete` (1.6) reports a non-zero exit status as a warning naming the code.
    let term = ctrd.ctr(["task", "delete", "sleep-term"])?;
    assert!(term.stderr.contains("exit code 143"), "{term:?}");
    let kill = ctrd.ctr(["task", "delete", "sleep-kill"])?;
    assert!(kill.stderr.contains("exit code 137"), "{kill:?}");
    let listed = ctrd.ctr(["task", "ls"])?.check("ctr task ls")?;
    assert!(!listed.stdout.contains("sleep-"), "deleted tasks are gone: {}", listed.stdout);
    wait_until("the daemon exits once it has served no task for idle_exit_seconds", Duration::from_secs(20), || {
        ctrd.shim_daemons().is_empty()
    })?;
    Ok(())
}

#[test]
fn missing_or_corrupt_component_fails_at_once_with_a_clear_message() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let t0 = Instant::now();
    let missing = run_rm(&ctrd, &[], HELLO, "missing", &["/nope.wasm"])?;
    assert_eq!(missing.code, 127, "{missing:?}");
    assert!(missing.stderr.contains("component /nope.wasm not found"), "{}", missing.stderr);

    ctrd.import(&component_image_at(
        "docker.io/wasmkube/corrupt:test",
        b"\0asm\x0d\0\x01\0garbage".to_vec(),
        "/app.wasm",
    ))?;
    let corrupt = run_rm(&ctrd, &[], "docker.io/wasmkube/corrupt:test", "corrupt", &[])?;
    assert_eq!(corrupt.code, 126, "{corrupt:?}");
    assert!(corrupt.stderr.contains("failed to compile"), "{}", corrupt.stderr);

    ctrd.import(&component_image_at("docker.io/wasmkube/text:test", b"#!/bin/sh\necho hi\n".to_vec(), "/app.wasm"))?;
    let text = run_rm(&ctrd, &[], "docker.io/wasmkube/text:test", "text", &[])?;
    assert_eq!(text.code, 126, "{text:?}");
    assert!(text.stderr.contains("is not a WebAssembly component"), "{}", text.stderr);
    assert!(t0.elapsed() < Duration::from_secs(30), "failures are reported at once, not after a hang");
    Ok(())
}

#[test]
fn two_containers_run_at_once_in_one_daemon() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let a = run_in_thread(&ctrd, "pair-a", "GREETING=a");
    let b = run_in_thread(&ctrd, "pair-b", "GREETING=b");
    ctrd.wait_task_status("pair-a", "RUNNING", Duration::from_secs(20))?;
    ctrd.wait_task_status("pair-b", "RUNNING", Duration::from_secs(20))?;
    assert_eq!(ctrd.shim_daemons().len(), 1);
    ctrd.ctr(["task", "kill", "pair-a"])?.check("kill a")?;
    ctrd.ctr(["task", "kill", "pair-b"])?.check("kill b")?;
    for (child, who) in [(a, "a"), (b, "b")] {
        let out = child.join().map_err(|_| anyhow::anyhow!("runner thread panicked"))??;
        assert_eq!(out.code, 143, "{who}: {out:?}");
        assert!(out.stdout.contains("sleeper: started"), "{who} ran and printed: {out:?}");
    }
    Ok(())
}

#[test]
fn events_are_published_create_start_exit_delete_in_order() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let ctrd = node()?;
    let mut events = ctrd.ctr_command(ctrd.namespace());
    events.arg("events").stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = events.spawn().context("ctr events")?;
    let stdout = child.stdout.take().context("ctr events stdout")?;
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if !line.contains("evented") {
                continue;
            }
            let done = line.contains("/tasks/delete");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = run_rm(&ctrd, &[], HELLO, "evented", &[])?;
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().map_err(|_| anyhow::anyhow!("event reader panicked"))?;
    let topics: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"].into_iter().find(|t| l.contains(t))
        })
        .collect();
    assert_eq!(topics, ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], "events: {lines:#?}");
    Ok(())
}

fn run_in_thread(
    ctrd: &PrivateContainerd,
    id: &str,
    env: &str,
) -> std::thread::JoinHandle<Result<wasmkube_harness::CmdOutput>> {
    let mut cmd = ctrd.ctr_command(ctrd.namespace());
    cmd.args(["run", "--rm", "--runtime", RUNTIME, "--env", env, "--env", "TICK_MS=100", SLEEPER, id]);
    std::thread::spawn(move || Ok(wasmkube_harness::cmd::run(&mut cmd, Duration::from_secs(60))?))
}
