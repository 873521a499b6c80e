//! The binary reads its flags from the environment and refuses bad ones before binding a port or contacting
//! the API server (so these tests need no cluster).

use std::process::{Command, Output};
use std::time::Duration;

/// Run `wasmkube-operator` with only `env` (plus a free HTTP port) and a deadline.
fn operator(env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube-operator"))
        .env_clear()
        .env("WASMKUBE_HTTP_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("the operator did not exit: {:?}", child.wait_with_output()?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

#[test]
fn bad_metrics_api_addr_from_the_env_names_the_flag() -> anyhow::Result<()> {
    let out = operator(&[("WASMKUBE_METRICS_API_ADDR", "6443")])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--metrics-api-addr (WASMKUBE_METRICS_API_ADDR) \"6443\""), "{stderr}");
    Ok(())
}

#[test]
fn activator_ports_over_the_activator_port_fail_the_start() -> anyhow::Result<()> {
    let out = operator(&[("WASMKUBE_ACTIVATOR_PORTS", "8000-8100"), ("WASMKUBE_ACTIVATOR_ADDR", "127.0.0.1:8090")])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--activator-ports 8000-8100 contains the activator's main port 8090"), "{stderr}");
    // Refused before the logs start: no log line means nothing was bound or contacted.
    assert!(!stderr.contains("\"level\"") && out.stdout.is_empty(), "{stderr}");
    Ok(())
}

#[test]
fn a_value_clap_refuses_names_the_flag() -> anyhow::Result<()> {
    let out = operator(&[("WASMKUBE_LOG_FORMAT", "xml")])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--log-format"), "{stderr}");
    Ok(())
}

/// The environment `wasmkube-operator` runs with, read once it makes its first request to an API server that never
/// answers (so after any start-up work of `main`); `env` is added to a cleared environment.
#[cfg(feature = "mimalloc")]
fn environment_when_running(env: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let kubeconfig = std::env::temp_dir().join(format!("wasmkube-cli-test-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: u\n  \
             user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            listener.local_addr()?
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube-operator"))
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("WASMKUBE_HTTP_ADDR", "127.0.0.1:0")
        .env("WASMKUBE_ACTIVATOR_ADDR", "127.0.0.1:0")
        .env("WASMKUBE_METRICS_API_ADDR", "")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let connected = loop {
        match listener.accept() {
            Ok(connection) => break Ok(connection),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break Err(e),
        }
    };
    // Why read before judging the connection: the process (same pid after it executes itself again) must still run.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id()));
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_file(&kubeconfig);
    connected.map_err(|e| anyhow::anyhow!("the operator never contacted the API server: {e}"))?;
    Ok(environ?.split(|b| *b == 0).map(|e| String::from_utf8_lossy(e).into_owned()).collect())
}

#[cfg(feature = "mimalloc")]
#[test]
fn the_operator_runs_with_the_allocators_options_unless_the_environment_sets_them() -> anyhow::Result<()> {
    let env = environment_when_running(&[])?;
    assert!(env.iter().any(|e| e == "MIMALLOC_ARENA_EAGER_COMMIT=0"), "{env:?}");
    assert!(env.iter().any(|e| e == "MIMALLOC_PURGE_DELAY=0"), "{env:?}");
    let env = environment_when_running(&[("MIMALLOC_ARENA_EAGER_COMMIT", "1")])?;
    assert!(env.iter().any(|e| e == "MIMALLOC_ARENA_EAGER_COMMIT=1"), "{env:?}");
    assert!(!env.iter().any(|e| e == "MIMALLOC_ARENA_EAGER_COMMIT=0"), "{env:?}");
    assert!(env.iter().any(|e| e == "MIMALLOC_PURGE_DELAY=0"), "{env:?}");
    Ok(())
}
