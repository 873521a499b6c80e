//! The shim's own wasi:http serving (`NodeEngine::prepare` of a container whose spec names a pod's network
//! namespace) run inside the bench process, beside the reference host: the same process, allocator and
//! runtime shape for both, so that what differs between them is only the request path.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use tokio::sync::watch;
use wasmkube_contract::env::HTTP_PORT;
use wasmkube_shim::engine::{EngineSettings, NodeEngine};
use wasmkube_shim::runtime::{Launch, Runtime, Signal, Stdio};
use wasmkube_shim::spec::ContainerSpec;

use crate::reference::GuestContext;

/// The shim's server for one container, in this process; stops when dropped.
pub struct InProcessShim {
    _stop: watch::Sender<Option<Signal>>,
    _dir: tempfile::TempDir,
}

impl InProcessShim {
    /// Serves `wasm` on `port` in the network namespace at `netns`, giving the guest `guest` (its directories
    /// as bind mounts in the spec).
    pub fn start(wasm: &[u8], netns: &Path, port: u16, guest: &GuestContext) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs)?;
        std::fs::write(rootfs.join("app.wasm"), wasm)?;
        let process_env: Vec<String> = std::iter::once(format!("{HTTP_PORT}={port}"))
            .chain(guest.env.iter().map(|(name, value)| format!("{name}={value}")))
            .collect();
        let process = json!({ "cwd": "/", "user": { "uid": 0, "gid": 0 }, "args": ["/app.wasm"],
                              "env": process_env });
        let linux = json!({ "namespaces": [{ "type": "network", "path": netns }] });
        let mounts: Vec<_> = (guest.read_only_dirs.iter())
            .map(|(host, path)| json!({ "destination": path, "type": "bind", "source": host, "options": ["rbind", "ro"] }))
            .collect();
        let oci = serde_json::from_value(
            json!({ "ociVersion": "1.0.2", "process": process, "linux": linux, "mounts": mounts }),
        )?;
        let spec = ContainerSpec::from_oci("in-process", &oci).map_err(|e| anyhow!("{}", e.error.message))?;
        let settings = EngineSettings { cache_dir: dir.path().join("cache"), ..Default::default() };
        let launch = Launch {
            id: "in-process".into(),
            bundle: dir.path().to_path_buf(),
            spec,
            rootfs,
            stdio: Stdio { stdout: None, stderr: None },
        };
        let (stop, signals) = watch::channel(None);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let prepared = async {
                    let engine = NodeEngine::new(settings)?;
                    let workload = engine.prepare(launch).await.map_err(|e| anyhow!("{}", e.message))?;
                    anyhow::Ok((engine, workload))
                }
                .await;
                match prepared {
                    Ok((_engine, workload)) => {
                        let _ = ready_tx.send(Ok(()));
                        workload.start(signals).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
        });
        ready.recv().context("the in-process shim's thread ended")??;
        Ok(Self { _stop: stop, _dir: dir })
    }
}
