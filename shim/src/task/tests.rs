//! The Task service driven through its ttrpc methods, with a scripted runtime and a channel for events:
//! no root, no containerd, no wasmtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, PidsRequest, ShutdownRequest, StartRequest,
    StateRequest, StatsRequest, Status, WaitRequest,
};
use containerd_shim::protos::cgroups::metrics::Metrics;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::Task;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::runtime::{LaunchError, Usage, Workload};
use crate::spec::ContainerKind;

/// What the scripted runtime does for a component reference (the spec's `process.args[0]`).
fn script(component: &str) -> Result<Box<dyn Workload>, LaunchError> {
    let exit = |exit| Ok(Box::new(Scripted { exit: Some(exit), usage: Arc::default() }) as Box<dyn Workload>);
    match component {
        "/exit-3.wasm" => exit(Exit::code(3)),
        "/oom.wasm" => exit(Exit::out_of_memory("OOMKilled: over the limit")),
        "/trap.wasm" => exit(Exit::failed(134, "the component trapped: unreachable")),
        "/missing.wasm" => Err(LaunchError::not_found("component /missing.wasm not found in the container image")),
        "/serve.wasm" => {
            let usage = Arc::new(Usage::default());
            usage.memory_grew(0, 65536);
            Ok(Box::new(Scripted { exit: None, usage }))
        }
        other => Err(LaunchError::cannot_run(format!("no script for {other}"))),
    }
}

/// A workload that exits as scripted, or (`exit: None`) runs until a signal.
struct Scripted {
    exit: Option<Exit>,
    usage: Arc<Usage>,
}

impl Workload for Scripted {
    fn start(self: Box<Self>, mut signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return exit;
            }
            match signals.wait_for(Option::is_some).await.map(|s| *s) {
                Ok(Some(signal)) => Exit::code(128 + signal.0),
                _ => Exit::code(128 + libc::SIGKILL as u32),
            }
        })
    }

    fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }
}

/// The scripted runtime; it records the kind of every container it prepares.
#[derive(Clone, Default)]
struct StubRuntime {
    prepared: Arc<Mutex<Vec<(String, ContainerKind)>>>,
}

#[async_trait]
impl Runtime for StubRuntime {
    async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError> {
        self.prepared.lock().unwrap().push((launch.id.clone(), launch.spec.kind));
        script(launch.spec.component.as_deref().unwrap_or(""))
    }
}

/// A service, its events, and a directory for bundles.
struct Harness {
    service: TaskService<StubRuntime>,
    runtime: StubRuntime,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    occupancy: Arc<Occupancy>,
    dir: tempfile::TempDir,
}

fn ctx() -> TtrpcContext {
    TtrpcContext { mh: Default::default(), metadata: Default::default(), timeout_nano: 0 }
}

fn code_of(e: ttrpc::Error) -> Code {
    match e {
        ttrpc::Error::RpcStatus(status) => status.code.enum_value_or_default(),
        other => panic!("not a status: {other:?}"),
    }
}

impl Harness {
    fn new() -> Self {
        let runtime = StubRuntime::default();
        let (tx, events) = mpsc::unbounded_channel();
        let occupancy = Arc::new(Occupancy::default());
        let service = TaskService::new(runtime.clone(), Box::new(tx), occupancy.clone());
        Self { service, runtime, events, occupancy, dir: tempfile::tempdir().unwrap() }
    }

    /// A bundle whose spec runs `component` and mounts a termination-message file; no rootfs mounts, so
    /// the bundle's `rootfs` directory is the container's root (as `ctr run --rootfs` does it).
    fn bundle(&self, id: &str, component: &str, env: &[&str]) -> CreateTaskRequest {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let spec = json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "process": { "cwd": "/", "user": { "uid": 0, "gid": 0 }, "args": [component], "env": env },
            "mounts": [{
                "destination": "/dev/termination-log",
                "source": bundle.join("termination-log"),
                "type": "bind",
                "options": ["rbind"],
            }],
        });
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into_owned(),
            stdout: bundle.join("stdout").to_string_lossy().into_owned(),
            stderr: bundle.join("stderr").to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    fn read(&self, id: &str, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(id).join(file)).unwrap_or_default()
    }

    async fn create(&self, id: &str, component: &str) -> u32 {
        self.service.create(&ctx(), self.bundle(id, component, &[])).await.unwrap().pid
    }

    async fn start(&self, id: &str) -> ttrpc::Result<u32> {
        let req = StartRequest { id: id.into(), ..Default::default() };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn status(&self, id: &str) -> (Status, u32) {
        let req = StateRequest { id: id.into(), ..Default::default() };
        let state = self.service.state(&ctx(), req).await.unwrap();
        (state.status.enum_value_or_default(), state.exit_status)
    }

    async fn kill(&self, id: &str, signal: i32) -> ttrpc::Result<()> {
        let req = KillRequest { id: id.into(), signal: signal as u32, ..Default::default() };
        self.service.kill(&ctx(), req).await.map(|_| ())
    }

    async fn wait(&self, id: &str) -> u32 {
        let req = WaitRequest { id: id.into(), ..Default::default() };
        let waited = tokio::time::timeout(Duration::from_secs(5), self.service.wait(&ctx(), req)).await;
        waited.expect("the container exits").unwrap().exit_status
    }

    async fn delete(&self, id: &str) -> ttrpc::Result<u32> {
        let req = DeleteRequest { id: id.into(), ..Default::default() };
        self.service.delete(&ctx(), req).await.map(|r| r.exit_status)
    }

    /// The topics of the events published so far.
    fn topics(&mut self) -> Vec<&'static str> {
        let mut topics = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            topics.push(match event {
                TaskEvent::Create(_) => "create",
                TaskEvent::Start(_) => "start",
                TaskEvent::Oom(_) => "oom",
                TaskEvent::Exit(_) => "exit",
                TaskEvent::Delete(_) => "delete",
            });
        }
        topics
    }
}

#[tokio::test]
async fn lifecycle_created_running_stopped_deleted_with_events_in_order() {
    let mut h = Harness::new();
    let pid = h.create("c1", "/serve.wasm").await;
    assert_eq!(pid, std::process::id(), "an instance reports the daemon's pid");
    assert_eq!(h.status("c1").await.0, Status::CREATED);
    assert_eq!(h.occupancy.snapshot(), (1, 1));

    assert_eq!(h.start("c1").await.unwrap(), pid);
    assert_eq!(h.status("c1").await.0, Status::RUNNING);
    let pids = h.service.pids(&ctx(), PidsRequest { id: "c1".into(), ..Default::default() }).await.unwrap();
    assert_eq!(pids.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [pid]);

    h.kill("c1", libc::SIGTERM).await.unwrap();
    assert_eq!(h.wait("c1").await, 128 + 15);
    assert_eq!(h.status("c1").await, (Status::STOPPED, 143));
    assert_eq!(h.delete("c1").await.unwrap(), 143);
    assert_eq!(h.occupancy.snapshot(), (0, 1));
    assert_eq!(h.topics(), ["create", "start", "exit", "delete"]);
    assert_eq!(*h.runtime.prepared.lock().unwrap(), [("c1".to_string(), ContainerKind::App)]);

    let gone = h.service.state(&ctx(), StateRequest { id: "c1".into(), ..Default::default() }).await;
    assert_eq!(code_of(gone.unwrap_err()), Code::NOT_FOUND, "a deleted task is forgotten");
}

#[tokio::test]
async fn exit_codes_reach_wait_state_and_the_exit_event() {
    let mut h = Harness::new();
    h.create("c1", "/exit-3.wasm").await;
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await, 3);
    assert_eq!(h.status("c1").await, (Status::STOPPED, 3));
    let exit = loop {
        match h.events.recv().await {
            Some(TaskEvent::Exit(e)) => break e,
            Some(_) => continue,
            None => panic!("no exit event"),
        }
    };
    assert_eq!((exit.id.as_str(), exit.exit_status), ("c1", 3));
    assert_eq!(h.read("c1", "termination-log"), "", "a plain exit has nothing to report");
}

#[tokio::test]
async fn an_oom_exit_publishes_task_oom_before_the_exit() {
    let mut h = Harness::new();
    h.create("c1", "/oom.wasm").await;
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await, 137);
    assert_eq!(h.topics(), ["create", "start", "oom", "exit"]);
    assert_eq!(h.read("c1", "termination-log"), "OOMKilled: over the limit");
}

#[tokio::test]
async fn a_launch_error_is_the_containers_exit_with_its_message() {
    let mut h = Harness::new();
    h.create("c1", "/missing.wasm").await;
    assert_eq!(h.status("c1").await.0, Status::CREATED, "the error is reported when the container starts");
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await, 127);
    let message = "component /missing.wasm not found in the container image";
    assert_eq!(h.read("c1", "termination-log"), message);
    assert_eq!(h.read("c1", "stderr"), format!("wasmkube: {message}\n"));
    h.delete("c1").await.unwrap();
    assert_eq!(h.topics(), ["create", "start", "exit", "delete"]);
}

#[tokio::test]
async fn a_trap_reason_is_reported_once() {
    let h = Harness::new();
    h.create("c1", "/trap.wasm").await;
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await, 134);
    h.delete("c1").await.unwrap();
    assert_eq!(h.read("c1", "stderr"), "wasmkube: the component trapped: unreachable\n");
}

#[tokio::test]
async fn an_invalid_spec_never_reaches_the_runtime_and_ends_the_container_with_126() {
    let h = Harness::new();
    let req = h.bundle("c1", "/serve.wasm", &["WASMKUBE_HTTP_PORT=http"]);
    h.service.create(&ctx(), req).await.unwrap();
    h.start("c1").await.unwrap();
    assert_eq!(h.wait("c1").await, 126);
    assert_eq!(h.read("c1", "termination-log"), "WASMKUBE_HTTP_PORT=\"http\" is not a TCP port (1 to 65535)");
    assert!(h.runtime.prepared.lock().unwrap().is_empty());
}

#[tokio::test]
async fn killing_a_created_container_stops_it_with_128_plus_the_signal() {
    let mut h = Harness::new();
    h.create("c1", "/serve.wasm").await;
    h.kill("c1", libc::SIGKILL).await.unwrap();
    assert_eq!(h.status("c1").await, (Status::STOPPED, 137));
    assert_eq!(h.wait("c1").await, 137);
    assert_eq!(code_of(h.start("c1").await.unwrap_err()), Code::FAILED_PRECONDITION);
    assert_eq!(code_of(h.kill("c1", libc::SIGTERM).await.unwrap_err()), Code::NOT_FOUND, "nothing left to signal");
    assert_eq!(h.delete("c1").await.unwrap(), 137);
    assert_eq!(h.topics(), ["create", "exit", "delete"]);
}

#[tokio::test]
async fn deleting_a_created_container_reports_it_as_killed() {
    let mut h = Harness::new();
    h.create("c1", "/serve.wasm").await;
    assert_eq!(h.delete("c1").await.unwrap(), 137);
    assert_eq!(h.topics(), ["create", "delete"]);
}

#[tokio::test]
async fn requests_out_of_turn_get_their_ttrpc_codes() {
    let h = Harness::new();
    h.create("c1", "/serve.wasm").await;
    let again = h.service.create(&ctx(), h.bundle("c1", "/serve.wasm", &[])).await;
    assert_eq!(code_of(again.unwrap_err()), Code::ALREADY_EXISTS);

    h.start("c1").await.unwrap();
    assert_eq!(code_of(h.start("c1").await.unwrap_err()), Code::FAILED_PRECONDITION, "start twice");
    assert_eq!(code_of(h.delete("c1").await.unwrap_err()), Code::FAILED_PRECONDITION, "delete while running");
    h.kill("c1", 0).await.unwrap();
    assert_eq!(h.status("c1").await.0, Status::RUNNING, "signal 0 only probes");

    assert_eq!(code_of(h.start("nope").await.unwrap_err()), Code::NOT_FOUND);
    assert_eq!(code_of(h.kill("nope", libc::SIGKILL).await.unwrap_err()), Code::NOT_FOUND);
    assert_eq!(code_of(h.delete("nope").await.unwrap_err()), Code::NOT_FOUND);
    let exec = StartRequest { id: "c1".into(), exec_id: "e1".into(), ..Default::default() };
    assert_eq!(code_of(h.service.start(&ctx(), exec).await.unwrap_err()), Code::NOT_FOUND, "no exec processes");
    let exec = ExecProcessRequest { id: "c1".into(), ..Default::default() };
    assert_eq!(code_of(h.service.exec(&ctx(), exec).await.unwrap_err()), Code::UNIMPLEMENTED);

    let mut tty = h.bundle("c2", "/serve.wasm", &[]);
    tty.terminal = true;
    assert_eq!(code_of(h.service.create(&ctx(), tty).await.unwrap_err()), Code::INVALID_ARGUMENT);
    let no_id = CreateTaskRequest { id: String::new(), ..h.bundle("c3", "/serve.wasm", &[]) };
    assert_eq!(code_of(h.service.create(&ctx(), no_id).await.unwrap_err()), Code::INVALID_ARGUMENT);
    let no_spec = CreateTaskRequest {
        bundle: h.dir.path().join("none").to_string_lossy().into_owned(),
        ..h.bundle("c4", "/serve.wasm", &[])
    };
    assert_eq!(code_of(h.service.create(&ctx(), no_spec).await.unwrap_err()), Code::INVALID_ARGUMENT);
    assert_eq!(h.service.task_count(), 1, "failed creates leave no task");

    h.kill("c1", libc::SIGKILL).await.unwrap();
    assert_eq!(h.wait("c1").await, 137);
}

#[tokio::test]
async fn stats_report_the_workloads_usage() {
    let h = Harness::new();
    h.create("c1", "/serve.wasm").await;
    let stats = h.service.stats(&ctx(), StatsRequest { id: "c1".into(), ..Default::default() }).await.unwrap();
    let metrics = Metrics::parse_from_bytes(&stats.stats.value).unwrap();
    assert_eq!(metrics.memory.usage.usage, 65536);
    let missing = h.service.stats(&ctx(), StatsRequest { id: "nope".into(), ..Default::default() }).await;
    assert_eq!(code_of(missing.unwrap_err()), Code::NOT_FOUND);
}

#[tokio::test]
async fn shutdown_is_heard_only_when_no_task_is_left() {
    let h = Harness::new();
    h.create("c1", "/serve.wasm").await;
    h.service.shutdown(&ctx(), ShutdownRequest::default()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(100), h.occupancy.shutdown_requested()).await;
    assert!(early.is_err(), "a daemon with a task stays");
    h.delete("c1").await.unwrap();
    h.service.shutdown(&ctx(), ShutdownRequest::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), h.occupancy.shutdown_requested())
        .await
        .expect("the last shutdown is heard");
}
