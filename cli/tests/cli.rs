//! `wasmkube push` and `wasmkube inspect` against a real registry (Debian's docker-registry).

use std::process::{Command, Output};

use anyhow::Result;
use wasmkube_harness::registry::{Credentials, Registry};
use wasmkube_harness::{guests, require_root};

const CLI: &str = env!("CARGO_BIN_EXE_wasmkube");

fn wasmkube(args: &[&str], docker_config: &std::path::Path) -> Result<Output> {
    Ok(Command::new(CLI).args(args).env("DOCKER_CONFIG", docker_config).output()?)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn push_then_inspect_the_artifact_and_the_file() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let registry = Registry::start()?;
    let no_config = tempfile::tempdir()?;
    let hello = guests::guest_wasm("hello-cli")?;
    let hello = hello.to_str().unwrap_or_default();
    let reference = format!("{}/apps/hello:v1", registry.host());

    let out = wasmkube(&["push", hello, &reference], no_config.path())?;
    assert!(out.status.success(), "{}", text(&out));
    let digest = String::from_utf8(out.stdout.clone())?.trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "push prints the manifest digest: {digest:?}");

    let by_digest = format!("oci://{}/apps/hello@{digest}", registry.host());
    for target in [format!("oci://{reference}"), by_digest] {
        let out = wasmkube(&["inspect", &target], no_config.path())?;
        let report = text(&out);
        assert!(out.status.success(), "{report}");
        for needle in [
            "application/vnd.oci.image.manifest.v1+json",
            digest.as_str(),
            "config: application/vnd.wasm.config.v0+json",
            "layer: application/wasm sha256:",
            "export interface wasi:cli/run@0.2",
            "import interface wasi:cli/environment@0.2",
        ] {
            assert!(report.contains(needle), "inspect {target} lacks {needle:?}:\n{report}");
        }
    }

    let out = wasmkube(&["inspect", hello], no_config.path())?;
    assert!(out.status.success() && text(&out).contains("export interface wasi:cli/run@0.2"), "{}", text(&out));

    // Not a component: refused before anything is pushed.
    let junk = no_config.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0")?;
    let out = wasmkube(&["push", junk.to_str().unwrap_or_default(), &reference], no_config.path())?;
    assert!(!out.status.success() && text(&out).contains("is not a WebAssembly component"), "{}", text(&out));
    Ok(())
}

#[test]
fn push_uses_docker_config_credentials_and_never_prints_them() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let password = "cli-Pw-7731-hidden";
    let registry = Registry::start_with(Some(Credentials { username: "pusher".into(), password: password.into() }))?;
    let hello = guests::guest_wasm("hello-cli")?;
    let hello = hello.to_str().unwrap_or_default();
    let reference = format!("{}/private/hello:v1", registry.host());

    let empty = tempfile::tempdir()?;
    let out = wasmkube(&["push", hello, &reference], empty.path())?;
    assert!(!out.status.success(), "an anonymous push is refused: {}", text(&out));
    assert!(text(&out).contains(&registry.host()), "the error names the registry: {}", text(&out));

    let config = tempfile::tempdir()?;
    let wrong =
        format!(r#"{{"auths":{{"{}":{{"username":"pusher","password":"wrong-{password}"}}}}}}"#, registry.host());
    std::fs::write(config.path().join("config.json"), wrong)?;
    let out = wasmkube(&["push", hello, &reference], config.path())?;
    assert!(!out.status.success() && !text(&out).contains(password), "{}", text(&out));

    let right = format!(r#"{{"auths":{{"{}":{{"username":"pusher","password":"{password}"}}}}}}"#, registry.host());
    std::fs::write(config.path().join("config.json"), right)?;
    let out = wasmkube(&["push", hello, &reference], config.path())?;
    assert!(out.status.success(), "{}", text(&out));
    let out = wasmkube(&["inspect", &format!("oci://{reference}")], config.path())?;
    assert!(out.status.success() && !text(&out).contains(password), "{}", text(&out));
    Ok(())
}
