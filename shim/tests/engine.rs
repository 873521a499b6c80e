//! The node engine in-process, without containerd or root: a container spec and a rootfs directory go in
//! through the `Runtime` seam, and the guest components of `examples/` run (built on first use).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use wasmkube_contract::env::{HTTP_ACCESS_LOG, HTTP_PORT};
use wasmkube_harness::guests;
use wasmkube_shim::engine::{EngineSettings, NodeEngine};
use wasmkube_shim::runtime::{Exit, Launch, LaunchError, Runtime, Signal, Stdio, Workload};
use wasmkube_shim::spec::ContainerSpec;

/// An engine with its own cache, and a rootfs and bundle for one container.
struct Node {
    engine: NodeEngine,
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("rootfs"))?;
        let settings = EngineSettings { cache_dir: dir.path().join("cache"), ..Default::default() };
        Ok(Self { engine: NodeEngine::new(settings)?, dir })
    }

    /// Puts `bytes` at `path` in the rootfs.
    fn install(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let file = self.rootfs().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().context("a file in the rootfs")?)?;
        Ok(std::fs::write(file, bytes)?)
    }

    fn rootfs(&self) -> std::path::PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Prepares container `id` running `args` with `env`; its stdout goes to the returned reader.
    async fn prepare(
        &self,
        id: &str,
        args: &[&str],
        env: &[&str],
    ) -> (Result<Box<dyn Workload>, LaunchError>, tokio::io::DuplexStream) {
        let process = json!({ "cwd": "/", "user": { "uid": 0, "gid": 0 }, "args": args, "env": env });
        let oci = json!({ "ociVersion": "1.0.2", "process": process });
        let spec = serde_json::from_value(oci).expect("a valid OCI spec");
        let spec = ContainerSpec::from_oci(id, &spec).expect("a spec the shim accepts");
        let (stdout, reader) = tokio::io::duplex(1 << 20);
        let launch = Launch {
            id: id.into(),
            bundle: self.dir.path().to_path_buf(),
            spec,
            rootfs: self.rootfs(),
            stdio: Stdio { stdout: Some(Box::new(stdout)), stderr: None },
        };
        (self.engine.prepare(launch).await, reader)
    }
}

fn guest(name: &str) -> Result<Vec<u8>> {
    Ok(std::fs::read(guests::guest_wasm(name)?)?)
}

async fn read_all(mut reader: tokio::io::DuplexStream) -> String {
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut out)).await;
    read.expect("the log stream ends with the container").expect("utf-8 output");
    out
}

#[tokio::test]
async fn a_cli_component_runs_with_its_args_env_and_exit_code() -> Result<()> {
    let node = Node::new()?;
    node.install("/bin/hello.wasm", &guest("hello-cli")?)?;
    let (prepared, stdout) = node
        .prepare("cli", &["/bin/hello.wasm", "one", "two"], &["GREETING=hi", "EXIT_CODE=3", "WASMKUBE_APP=x"])
        .await;
    let workload = prepared?;
    // The sender stays alive: a closed signal channel would mean "killed".
    let (_signals, rx) = watch::channel(None);
    let exit = tokio::time::timeout(Duration::from_secs(30), workload.start(rx)).await?;
    assert_eq!(exit, Exit::code(3));
    let out = read_all(stdout).await;
    assert!(out.contains("hello from a WebAssembly component\nargs: one two\nGREETING=hi\n"), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_missing_component_is_exit_127_naming_it() -> Result<()> {
    let node = Node::new()?;
    let (prepared, _) = node.prepare("missing", &["/nope.wasm"], &[]).await;
    let err = prepared.err().context("a missing file cannot be prepared")?;
    assert_eq!(err.exit_code, 127);
    assert!(err.message.starts_with("component /nope.wasm not found in the container image"), "{}", err.message);
    Ok(())
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_exit_126_saying_what_it_is() -> Result<()> {
    let node = Node::new()?;
    node.install("/core.wasm", b"\0asm\x01\0\0\0")?;
    let (prepared, _) = node.prepare("core", &["/core.wasm"], &[]).await;
    let err = prepared.err().context("a core module cannot be prepared")?;
    assert_eq!(err.exit_code, 126);
    assert!(err.message.contains("core WebAssembly module"), "{}", err.message);
    Ok(())
}

#[tokio::test]
async fn an_http_component_serves_on_its_port_and_drains_on_sigterm() -> Result<()> {
    let node = Node::new()?;
    node.install("/hello-http.wasm", &guest("hello_http")?)?;
    // No network namespace in the spec: the listener is the daemon's, on a port free now.
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    let env = format!("WASMKUBE_HTTP_PORT={port}");
    let (prepared, stdout) = node.prepare("web", &["/hello-http.wasm"], &[&env, "HELLO_HTTP_LOG_REQUESTS=true"]).await;
    let (signals, rx) = watch::channel(None);
    let serving = tokio::spawn(prepared?.start(rx));

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let response = tokio::task::spawn_blocking(move || get(addr, "/")).await??;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("hello from wasmkube"), "{response}");

    signals.send_replace(Some(Signal::TERM));
    let exit = tokio::time::timeout(Duration::from_secs(10), serving).await??;
    assert_eq!(exit, Exit::code(0), "SIGTERM drains and exits 0");
    let log = read_all(stdout).await;
    assert!(log.contains("hello-http: GET /"), "the guest's stdout reaches the log: {log:?}");
    assert!(!log.contains("HTTP/1.1\" 200"), "no access log unless asked for: {log:?}");
    Ok(())
}

#[tokio::test]
async fn the_access_log_writes_one_line_per_request_when_switched_on() -> Result<()> {
    let node = Node::new()?;
    node.install("/hello-http.wasm", &guest("hello_http")?)?;
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    let env = [format!("{HTTP_PORT}={port}"), format!("{HTTP_ACCESS_LOG}=true")];
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let (prepared, stdout) = node.prepare("logged", &["/hello-http.wasm"], &env).await;
    let (signals, rx) = watch::channel(None);
    let serving = tokio::spawn(prepared?.start(rx));

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for path in ["/", "/nowhere"] {
        tokio::task::spawn_blocking(move || get(addr, path)).await??;
    }
    signals.send_replace(Some(Signal::TERM));
    tokio::time::timeout(Duration::from_secs(10), serving).await??;
    let log = read_all(stdout).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "one line per request, and the guest printed nothing: {log:?}");
    assert!(lines[0].starts_with("127.0.0.1:") && lines[0].contains(" \"GET / HTTP/1.1\" 200 "), "{log:?}");
    assert!(lines[1].contains(" \"GET /nowhere HTTP/1.1\" 404 ") && lines[1].ends_with("ms"), "{log:?}");
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection; the whole response.
fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
