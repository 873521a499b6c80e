//! The shim driven through CRI the way the kubelet drives it: pods under RuntimeClass handler
//! `wasmkube`, with CNI networking, against a real private containerd.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmkube_contract::runtime::SANDBOX_PROCESS_ANNOTATION;
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::log::stream_lines;
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient, PodOptions};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::{guests, procs, require_root, wait_until, ContainerdOpts, PrivateContainerd};
use wasmkube_shim::daemon::DAEMON_ALLOCATOR_ENV;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1");
const HELLO: &str = "docker.io/wasmkube/hello-cli:test";
const SLEEPER: &str = "docker.io/wasmkube/sleeper:test";
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A private containerd with CRI on a CNI subnet of its own (tests run in parallel), the pause
/// image as sandbox image, and the example components, all in CRI's namespace.
fn node(subnet: &str) -> Result<(PrivateContainerd, CriClient)> {
    let mut opts = ContainerdOpts::with_shim(SHIM);
    opts.cni = Some(CniOpts { subnet: subnet.into() });
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    let hello = std::fs::read(guests::guest_wasm("hello-cli")?)?;
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(HELLO, hello, "/app.wasm"))?;
    let sleeper = std::fs::read(guests::guest_wasm("sleeper")?)?;
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(SLEEPER, sleeper, "/sleeper.wasm"))?;
    let cri = ctrd.cri()?;
    for image in [PAUSE_IMAGE, HELLO, SLEEPER] {
        wait_until("CRI sees the imported image", Duration::from_secs(10), || {
            cri.image_id(image).is_ok_and(|id| id.is_some())
        })
        .with_context(|| format!("CRI sees the imported image {image}"))?;
    }
    Ok((ctrd, cri))
}

/// Pause processes (the pod sandboxes) running under the shim's daemon.
fn sandbox_processes(ctrd: &PrivateContainerd) -> Vec<i32> {
    let all = procs::list();
    let tree = procs::with_descendants(&ctrd.shim_daemons(), &all);
    all.iter()
        .filter(|p| tree.contains(&p.pid) && p.cmdline.first().is_some_and(|a| a == "/pause"))
        .map(|p| p.pid)
        .collect()
}

/// Processes of the shim's tree that are not a daemon: a pod whose sandbox the daemon holds adds none.
fn processes_beside_the_daemon(ctrd: &PrivateContainerd) -> Vec<i32> {
    let daemons = ctrd.shim_daemons();
    procs::with_descendants(&daemons, &procs::list()).into_iter().filter(|p| !daemons.contains(p)).collect()
}

/// A pod whose sandbox is a real pause process, as a pod with a non-wasm container asks for it.
fn pod_with_pause_process(cri: &CriClient, name: &str) -> Result<wasmkube_harness::cri::Pod> {
    let annotations = HashMap::from([(SANDBOX_PROCESS_ANNOTATION.to_string(), "true".to_string())]);
    Ok(cri.run_pod_sandbox_with(name, WASMKUBE_HANDLER, PodOptions { annotations, ..Default::default() })?)
}

fn daemon_log(ctrd: &PrivateContainerd) -> String {
    std::fs::read_to_string(ctrd.dirs().state().join("wasmkube").join(CRI_NAMESPACE).join("daemon.log"))
        .unwrap_or_default()
}

fn container(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec { name: name.into(), image: image.into(), ..Default::default() }
}

#[test]
fn hello_cli_runs_in_a_pod_and_its_output_reaches_the_cri_log() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.31.0/24")?;
    let pod = cri.run_pod_sandbox("hello-pod", WASMKUBE_HANDLER)?;
    assert_eq!(ctrd.shim_daemons().len(), 1, "the sandbox is held by the daemon");
    assert_eq!(processes_beside_the_daemon(&ctrd), Vec::<i32>::new(), "a wasm pod's sandbox has no process");

    let spec = ContainerSpec {
        args: vec!["one".into(), "two".into()],
        env: vec![("GREETING".into(), "from CRI".into())],
        ..container("hello", HELLO)
    };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(status.reason, "Completed", "{status:?}");
    assert_eq!(ctrd.shim_daemons().len(), 1, "sandbox and component are served by one daemon");

    // CRI's log copier may still be writing the last lines when the exit is reported.
    let _ = wait_until("the CRI log copier catches up", Duration::from_secs(5), || {
        cri.read_log(&id).is_ok_and(|l| l.len() >= 4)
    });
    let log = cri.read_log(&id)?;
    assert_eq!(
        stream_lines(&log, "stdout"),
        ["hello from a WebAssembly component", "args: one two", "GREETING=from CRI"],
        "{log:?}"
    );
    assert!(stream_lines(&log, "stderr").contains(&"hello-cli: this line goes to stderr"), "{log:?}");
    // CRI names the sandbox's namespaces through its pid (the daemon's); the component joins the network
    // namespace containerd pinned for the pod instead.
    let daemon_log = daemon_log(&ctrd);
    let joined = daemon_log.lines().find(|l| l.contains("component joins this network namespace"));
    assert!(joined.is_some_and(|l| l.contains("/netns/cni-")), "{joined:?}");

    cri.remove_pod(&pod)?;
    assert_eq!(processes_beside_the_daemon(&ctrd), Vec::<i32>::new());
    Ok(())
}

#[test]
fn a_pod_that_asks_for_a_sandbox_process_gets_a_pause_process() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.37.0/24")?;
    let pod = pod_with_pause_process(&cri, "pause-pod")?;
    // `runc start` runs just after the task reports started.
    wait_until("the sandbox is a real pause process under the daemon", Duration::from_secs(10), || {
        sandbox_processes(&ctrd).len() == 1
    })?;
    let pause = sandbox_processes(&ctrd);
    let id = cri.create_container(&pod, &container("hello", HELLO))?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 0, "{status:?}");
    // CRI gives the pod's containers the sandbox's network namespace through its pid.
    let netns = format!("/proc/{}/ns/net", pause[0]);
    assert!(daemon_log(&ctrd).contains(&netns), "the component's spec names {netns}");

    cri.remove_pod(&pod)?;
    wait_until("the pause process is gone", Duration::from_secs(10), || sandbox_processes(&ctrd).is_empty())?;
    Ok(())
}

#[test]
fn two_pods_of_two_sleepers_share_one_daemon_and_stop_with_143() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.32.0/24")?;
    let mut pods = Vec::new();
    for p in ["sleepy-a", "sleepy-b"] {
        let pod = cri.run_pod_sandbox(p, WASMKUBE_HANDLER)?;
        let mut ids = Vec::new();
        for c in ["one", "two"] {
            let spec = ContainerSpec { env: vec![("TICK_MS".into(), "100".into())], ..container(c, SLEEPER) };
            let id = cri.create_container(&pod, &spec)?;
            cri.start_container(&id)?;
            ids.push(id);
        }
        pods.push((pod, ids));
    }
    for id in pods.iter().flat_map(|(_, ids)| ids) {
        cri.wait_container_state(id, ContainerState::Running, STATE_TIMEOUT)?;
    }
    let daemons = ctrd.shim_daemons();
    assert_eq!(daemons.len(), 1, "two pods, four components, one daemon");
    let environ = std::fs::read(format!("/proc/{}/environ", daemons[0]))?;
    for (name, value) in DAEMON_ALLOCATOR_ENV {
        let entry = format!("{name}={value}");
        assert!(
            environ.split(|b| *b == 0).any(|e| e == entry.as_bytes()) || std::env::var_os(name).is_some(),
            "the daemon runs with {entry} unless the node sets {name}"
        );
    }
    assert_eq!(processes_beside_the_daemon(&ctrd), Vec::<i32>::new(), "two pods, no process of their own");

    let first = &pods[0].1[0];
    cri.stop_container(first, 10)?;
    let stopped = cri.wait_container_state(first, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(stopped.exit_code, 143, "SIGTERM ends a component with 128+15: {stopped:?}");
    let log = cri.read_log(first)?;
    assert!(stream_lines(&log, "stdout").iter().any(|l| l.starts_with("sleeper: started")), "{log:?}");
    for id in pods.iter().flat_map(|(_, ids)| ids).skip(1) {
        assert_eq!(cri.container_status(id)?.state, ContainerState::Running, "the others run on");
    }

    for (pod, _) in &pods {
        cri.remove_pod(pod)?;
    }
    Ok(())
}

#[test]
fn a_broken_component_reports_why_in_the_termination_message() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.33.0/24")?;
    let broken = "docker.io/wasmkube/broken:test";
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(broken, b"#!/bin/sh\necho hi\n".to_vec(), "/app.wasm"))?;
    wait_until("CRI sees the imported image", Duration::from_secs(10), || {
        cri.image_id(broken).is_ok_and(|id| id.is_some())
    })?;

    // As the kubelet does: an empty host file mounted at the pod's terminationMessagePath (here not the
    // default, so the shim can only find it through the annotation CRI passes on).
    let termination = ctrd.work_dir().join("termination-log");
    std::fs::write(&termination, b"")?;
    let in_container = "/run/termination/message";
    let spec = ContainerSpec {
        mounts: vec![(in_container.into(), termination.clone(), false)],
        annotations: HashMap::from([(
            "io.kubernetes.container.terminationMessagePath".to_string(),
            in_container.to_string(),
        )]),
        ..container("broken", broken)
    };
    let pod = cri.run_pod_sandbox("broken-pod", WASMKUBE_HANDLER)?;
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 126, "{status:?}");
    assert_eq!(status.reason, "Error", "{status:?}");
    let message = std::fs::read_to_string(Path::new(&termination))?;
    assert!(message.contains("is not a WebAssembly component"), "termination message: {message:?}");
    let _ = wait_until("the CRI log copier catches up", Duration::from_secs(5), || {
        cri.read_log(&id).is_ok_and(|l| !l.is_empty())
    });
    let log = cri.read_log(&id)?;
    assert!(
        stream_lines(&log, "stderr")
            .iter()
            .any(|l| l.starts_with("wasmkube:") && l.contains("is not a WebAssembly component")),
        "{log:?}"
    );
    cri.remove_pod(&pod)?;
    Ok(())
}

#[test]
fn exit_codes_kill_memory_limit_and_stats_through_cri() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.34.0/24")?;
    let pod = cri.run_pod_sandbox("limits-pod", WASMKUBE_HANDLER)?;
    let start = |spec: &ContainerSpec| -> Result<String> {
        let id = cri.create_container(&pod, spec)?;
        cri.start_container(&id)?;
        Ok(id)
    };
    const MIB: i64 = 1024 * 1024;
    let exit3 = start(&ContainerSpec { env: vec![("EXIT_CODE".into(), "3".into())], ..container("exit3", HELLO) })?;
    let spinner = start(&ContainerSpec {
        env: vec![("SPIN".into(), "1".into()), ("TICK_MS".into(), "50".into())],
        ..container("spinner", SLEEPER)
    })?;
    let ballast = start(&ContainerSpec {
        env: vec![("GROW_MB".into(), "8".into())],
        memory_limit_bytes: Some(64 * MIB),
        ..container("ballast", SLEEPER)
    })?;
    let greedy = start(&ContainerSpec {
        env: vec![("GROW_MB".into(), "64".into())],
        memory_limit_bytes: Some(32 * MIB),
        ..container("greedy", SLEEPER)
    })?;

    let status = cri.wait_container_state(&exit3, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"), "exit-with-code is exact: {status:?}");

    // Over its limit: ends like a kernel OOM kill, and CRI (hearing TaskOOM) says OOMKilled.
    let status = cri.wait_container_state(&greedy, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "OOMKilled"), "{status:?}");
    let _ = wait_until("the CRI log copier catches up", Duration::from_secs(5), || {
        cri.read_log(&greedy).is_ok_and(|l| !l.is_empty())
    });
    let log = cri.read_log(&greedy)?;
    assert!(
        stream_lines(&log, "stderr").iter().any(|l| l.contains("OOMKilled") && l.contains(&(32 * MIB).to_string())),
        "the log says which limit: {log:?}"
    );

    // Under its limit: runs, and its linear memory shows in the stats.
    cri.wait_container_state(&ballast, ContainerState::Running, STATE_TIMEOUT)?;
    wait_until("ContainerStats reports the 8 MiB ballast in the working set", Duration::from_secs(10), || {
        cri.container_stats(&ballast).is_ok_and(|(_, mem)| mem >= 8 * MIB as u64)
    })?;

    // A busy guest's CPU time grows; then SIGKILL (no grace period) stops it though it never yields.
    cri.wait_container_state(&spinner, ContainerState::Running, STATE_TIMEOUT)?;
    let (cpu_before, _) = cri.container_stats(&spinner)?;
    std::thread::sleep(Duration::from_millis(500));
    let (cpu_after, _) = cri.container_stats(&spinner)?;
    assert!(cpu_after > cpu_before + 100_000_000, "CPU time of a spinning guest: {cpu_before} -> {cpu_after} ns");
    let killed_at = std::time::Instant::now();
    cri.stop_container(&spinner, 0)?;
    let status = cri.wait_container_state(&spinner, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 137, "{status:?}");
    assert!(killed_at.elapsed() < Duration::from_secs(5), "SIGKILL took {:?}", killed_at.elapsed());
    assert_eq!(cri.container_status(&ballast)?.state, ContainerState::Running, "other containers run on");
    assert_eq!(ctrd.shim_daemons().len(), 1);
    cri.remove_pod(&pod)?;
    Ok(())
}

#[test]
fn a_pod_survives_a_containerd_restart_and_can_be_stopped_after() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (mut ctrd, cri) = node("10.88.35.0/24")?;
    let pod = cri.run_pod_sandbox("restart-pod", WASMKUBE_HANDLER)?;
    let id = cri.create_container(
        &pod,
        &ContainerSpec { env: vec![("TICK_MS".into(), "100".into())], ..container("s", SLEEPER) },
    )?;
    cri.start_container(&id)?;
    cri.wait_container_state(&id, ContainerState::Running, STATE_TIMEOUT)?;
    let daemons = ctrd.shim_daemons();
    assert_eq!(daemons.len(), 1);
    drop(cri);

    ctrd.restart()?;
    let cri = ctrd.cri()?;
    // containerd reconnects to the daemon through the bundle's `address` file and asks for its tasks.
    wait_until("the container still runs after containerd restarted", STATE_TIMEOUT, || {
        cri.container_status(&id).is_ok_and(|s| s.state == ContainerState::Running)
    })?;
    assert_eq!(ctrd.shim_daemons(), daemons, "the same daemon serves it");
    let lines_before = cri.read_log(&id)?.len();
    wait_until("its output still reaches the CRI log", Duration::from_secs(5), || {
        cri.read_log(&id).is_ok_and(|l| l.len() > lines_before)
    })?;

    cri.stop_container(&id, 10)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 143, "{status:?}");
    cri.remove_pod(&pod)?;
    Ok(())
}

#[test]
fn a_killed_daemon_reports_its_tasks_exited_and_the_next_pod_gets_a_new_one() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let (ctrd, cri) = node("10.88.36.0/24")?;
    // With a pause process: its cleanup after the daemon's death is what this test also checks.
    let pod = pod_with_pause_process(&cri, "doomed-pod")?;
    let id = cri.create_container(&pod, &container("s", SLEEPER))?;
    cri.start_container(&id)?;
    cri.wait_container_state(&id, ContainerState::Running, STATE_TIMEOUT)?;
    wait_until("one pause process", Duration::from_secs(10), || sandbox_processes(&ctrd).len() == 1)?;
    let pause = sandbox_processes(&ctrd);
    let daemons = ctrd.shim_daemons();
    assert_eq!(daemons.len(), 1);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemons[0]), nix::sys::signal::Signal::SIGKILL)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    // containerd reports a task whose shim died as 255 ("unknown exit status"), as for runc's shim.
    assert_eq!((status.exit_code, status.reason.as_str()), (255, "Error"), "{status:?}");
    cri.remove_pod(&pod)?;
    // `delete` of the dead daemon's sandbox removes the pause process that was reparented to init.
    wait_until("the orphaned pause process is gone", Duration::from_secs(10), || {
        pause.iter().all(|p| procs::read(*p).is_none())
    })?;

    let pod = cri.run_pod_sandbox("next-pod", WASMKUBE_HANDLER)?;
    let id = cri.create_container(&pod, &container("hello", HELLO))?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, STATE_TIMEOUT)?;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let now = ctrd.shim_daemons();
    assert!(now.len() == 1 && now != daemons, "a new daemon serves the next pod: {now:?} (killed {daemons:?})");
    cri.remove_pod(&pod)?;
    Ok(())
}
