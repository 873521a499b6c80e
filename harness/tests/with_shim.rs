//! Teardown against our own shim: a component still running when the guard drops is killed,
//! together with the node daemon, and nothing of the instance is left.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wasmkube_harness::containerd::WASMKUBE_RUNTIME_TYPE;
use wasmkube_harness::{guests, images, init_test_tracing, mounts, paths, procs, require_root};
use wasmkube_harness::{ContainerdOpts, PrivateContainerd};

#[test]
fn running_component_and_daemon_are_torn_down() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let shim = paths::built_binary(paths::SHIM_BINARY, "wasmkube-shim")?;
    init_test_tracing();
    let ctrd = PrivateContainerd::start(ContainerdOpts::with_shim(&shim))?;
    let (socket, dir) = (ctrd.socket(), ctrd.dir().to_path_buf());
    let wasm = std::fs::read(guests::guest_wasm("sleeper")?)?;
    let image = images::component_image("docker.io/wasmkube/sleeper:test", wasm);
    ctrd.import(&image)?;
    let args = ["run", "-d", "--runtime", WASMKUBE_RUNTIME_TYPE, image.name(), "t-sleeper"];
    ctrd.ctr(args)?.check("ctr run -d")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctrd.ctr(["task", "ls"])?.check("ctr task ls")?;
        if out.stdout.lines().any(|l| l.starts_with("t-sleeper") && l.contains("RUNNING")) {
            break;
        }
        if Instant::now() > deadline {
            bail!("sleeper never ran: {}\n{}", out.stdout, ctrd.log_tail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let daemons = procs::with_address(&socket);
    let sockets: Vec<_> =
        procs::unix_socket_paths(&daemons).into_iter().filter(|p| p.starts_with("/run/containerd/s/")).collect();
    let daemon = daemons.first().context("no shim process found by socket")?;

    drop(ctrd);
    assert!(procs::with_address(&socket).is_empty(), "shim processes survived");
    assert!(!procs::alive(*daemon), "daemon {daemon} survived");
    for s in &sockets {
        assert!(!s.exists(), "shim socket {} left behind", s.display());
    }
    assert!(mounts::belonging_to(&dir, &mounts::current()).is_empty());
    assert!(!dir.exists());
    Ok(())
}
