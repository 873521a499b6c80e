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
