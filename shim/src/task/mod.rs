//! containerd's runtime v2 Task service for every container of the node daemon.
//!
//! This side knows bundles, FIFOs, events and ttrpc; it hands the workload itself to a [`Runtime`].

mod bundle;
mod container;
mod error;
mod events;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, Empty,
    ExecProcessRequest, KillRequest, PidsRequest, PidsResponse, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::types::task::ProcessInfo;
use tokio::sync::Notify;

pub use container::{Container, ExitRecord, StdioPaths};
pub use error::TaskError;
pub use events::{ContainerdEvents, EventSink, TaskEvent};

use crate::runtime::{Exit, Launch, Runtime, Signal, Stdio};
use crate::spec::ContainerSpec;

/// The Task service: a table of containers, a runtime to prepare them, a sink for their events.
pub struct TaskService<R: Runtime> {
    inner: Arc<Inner<R>>,
}

/// What the daemon watches to decide when to exit: `shutdown` requests and task activity.
#[derive(Default)]
pub struct Occupancy {
    shutdown: Notify,
    tasks: AtomicU64,
    creates: AtomicU64,
}

impl Occupancy {
    /// Waits for containerd to ask for a shutdown while no task is left.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// (tasks now, tasks ever created): unchanged snapshots mean nothing happened in between.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.tasks.load(Ordering::SeqCst), self.creates.load(Ordering::SeqCst))
    }
}

struct Inner<R> {
    runtime: R,
    events: Box<dyn EventSink>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    occupancy: Arc<Occupancy>,
    /// Every task reports the daemon's pid: its instances are not processes of their own.
    pid: u32,
}

type TtrpcResult<T> = ttrpc::Result<T>;

impl<R: Runtime> TaskService<R> {
    /// A service preparing containers with `runtime`, publishing to `events`, and reporting its
    /// tasks and shutdown requests to `occupancy`.
    pub fn new(runtime: R, events: Box<dyn EventSink>, occupancy: Arc<Occupancy>) -> Self {
        let inner = Inner { runtime, events, containers: Mutex::default(), occupancy, pid: std::process::id() };
        Self { inner: Arc::new(inner) }
    }

    /// Number of tasks the daemon serves now.
    pub fn task_count(&self) -> usize {
        self.inner.table().len()
    }
}

impl<R> Inner<R> {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str, exec_id: &str) -> Result<Arc<Container>, TaskError> {
        if !exec_id.is_empty() {
            return Err(TaskError::NotFound(format!("exec {exec_id} of {id}: components have no exec processes")));
        }
        self.table().get(id).cloned().ok_or_else(|| TaskError::NotFound(format!("container {id} not found")))
    }

    /// The pid a task reports: its own process if it has one, else the daemon's.
    fn pid_of(&self, c: &Container) -> u32 {
        c.pid.unwrap_or(self.pid)
    }

    fn publish_exit(&self, c: &Container, exit: ExitRecord) {
        self.events.publish(TaskEvent::Exit(TaskExit {
            container_id: c.id.clone(),
            id: c.id.clone(),
            pid: self.pid_of(c),
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        }));
    }
}

impl<R: Runtime> Inner<R> {
    async fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        if req.id.is_empty() {
            return Err(TaskError::InvalidArgument("a task needs an id".into()));
        }
        if self.table().contains_key(&req.id) {
            return Err(TaskError::AlreadyExists(format!("container {} exists already", req.id)));
        }
        if req.terminal {
            return Err(TaskError::InvalidArgument(
                "a terminal (tty) cannot be attached to a WebAssembly component; run without -t".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = ContainerSpec::from_oci(&req.id, &bundle::read_spec(&bundle)?);
        let stdio = Stdio { stdout: bundle::open_output(&req.stdout)?, stderr: bundle::open_output(&req.stderr)? };
        let (reporter, prepared) = match spec {
            Ok(spec) => {
                let reporter = bundle::ExitReporter::open(&req.stderr, spec.termination_log.clone())?;
                let rootfs = if spec.uses_rootfs() {
                    bundle::mount_rootfs(&bundle, spec.root.as_deref(), &req.rootfs)?
                } else {
                    bundle.join("rootfs")
                };
                let launch = Launch { id: req.id.clone(), bundle: bundle.clone(), spec, rootfs, stdio };
                (reporter, self.runtime.prepare(launch).await)
            }
            // Reported as the container's exit at start, as a component that cannot run is.
            Err(invalid) => (bundle::ExitReporter::open(&req.stderr, invalid.termination_log)?, Err(invalid.error)),
        };
        if let Err(e) = &prepared {
            tracing::warn!(id = %req.id, error = %e, "container cannot start; it will end with this message");
        }
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let container = Arc::new(Container::new(req.id.clone(), bundle, paths, reporter, prepared));
        let pid = self.pid_of(&container);
        {
            let mut table = self.table();
            if table.contains_key(&req.id) {
                return Err(TaskError::AlreadyExists(format!("container {} exists already", req.id)));
            }
            table.insert(req.id.clone(), container);
            self.occupancy.tasks.store(table.len() as u64, Ordering::SeqCst);
            self.occupancy.creates.fetch_add(1, Ordering::SeqCst);
        }
        self.events.publish(TaskEvent::Create(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        }));
        Ok(CreateTaskResponse { pid, ..Default::default() })
    }
}

impl<R: Runtime> TaskService<R> {
    fn start_container(&self, id: &str, exec_id: &str) -> Result<StartResponse, TaskError> {
        let inner = &self.inner;
        let container = inner.get(id, exec_id)?;
        let (prepared, signals) = container.start()?;
        let pid = inner.pid_of(&container);
        // The start event goes out before the workload can possibly exit.
        inner.events.publish(TaskEvent::Start(TaskStart { container_id: id.to_string(), pid, ..Default::default() }));
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let exit = match prepared {
                Ok(workload) => workload.start(signals).await,
                Err(e) => Exit::failed(e.exit_code, e.message),
            };
            container.report_exit(exit.reason.as_deref());
            if exit.oom_killed {
                // CRI marks the container `OOMKilled` on this event, as for a cgroup OOM kill.
                inner
                    .events
                    .publish(TaskEvent::Oom(TaskOOM { container_id: container.id.clone(), ..Default::default() }));
            }
            let record = container.stopped(exit.code);
            tracing::info!(id = %container.id, code = exit.code, "container exited");
            inner.publish_exit(&container, record);
        });
        Ok(StartResponse { pid, ..Default::default() })
    }

    fn delete_container(&self, id: &str, exec_id: &str) -> Result<DeleteResponse, TaskError> {
        let inner = &self.inner;
        let container = inner.get(id, exec_id)?;
        container.deletable()?;
        let (_, exit) = container.status();
        // A created container that was never started is deleted as if killed.
        let exit = exit.unwrap_or(ExitRecord { code: 128 + libc::SIGKILL as u32, at: SystemTime::now() });
        {
            let mut table = inner.table();
            table.remove(id);
            inner.occupancy.tasks.store(table.len() as u64, Ordering::SeqCst);
        }
        container.report_exit(None);
        bundle::unmount_rootfs(&container.bundle);
        let pid = inner.pid_of(&container);
        inner.events.publish(TaskEvent::Delete(TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        }));
        Ok(DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn kill_container(&self, req: &KillRequest) -> Result<(), TaskError> {
        let container = self.inner.get(&req.id, &req.exec_id)?;
        if let Some(exit) = container.signal(Signal(req.signal))? {
            container.report_exit(None);
            self.inner.publish_exit(&container, exit);
        }
        Ok(())
    }

    fn state_of(&self, req: &StateRequest) -> Result<StateResponse, TaskError> {
        let c = self.inner.get(&req.id, &req.exec_id)?;
        let (phase, exit) = c.status();
        let status = match phase {
            "created" => Status::CREATED,
            "running" => Status::RUNNING,
            _ => Status::STOPPED,
        };
        Ok(StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: self.inner.pid_of(&c),
            status: status.into(),
            stdin: c.stdio.stdin.clone(),
            stdout: c.stdio.stdout.clone(),
            stderr: c.stdio.stderr.clone(),
            terminal: c.stdio.terminal,
            exit_status: exit.map(|e| e.code).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32, ..Default::default() }
}

#[async_trait]
impl<R: Runtime> containerd_shim::Task for TaskService<R> {
    async fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "create");
        Ok(self.inner.create(req).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        tracing::info!(id = %req.id, "start");
        Ok(self.start_container(&req.id, &req.exec_id)?)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.state_of(&req)?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, signal = req.signal, "kill");
        self.kill_container(&req)?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        tracing::info!(id = %req.id, "delete");
        Ok(self.delete_container(&req.id, &req.exec_id)?)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let container = self.inner.get(&req.id, &req.exec_id)?;
        let exit = container.wait().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let container = self.inner.get(&req.id, "")?;
        let process = ProcessInfo { pid: self.inner.pid_of(&container), ..Default::default() };
        Ok(PidsResponse { processes: vec![process], ..Default::default() })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let container = self.inner.get(&req.id, "")?;
        Ok(StatsResponse { stats: MessageField::some(stats::metrics_any(&container.usage)?), ..Default::default() })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.inner.get(&req.id, "").map(|c| self.inner.pid_of(&c)).unwrap_or(self.inner.pid);
        Ok(ConnectResponse {
            shim_pid: self.inner.pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(TaskError::Unimplemented(format!(
            "exec into {}: a WebAssembly component has no shell or processes to run",
            req.id
        ))
        .into())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.inner.get(&req.id, "")?;
        // Limits are fixed when an instance starts; a resize takes effect at the next start.
        tracing::info!(id = %req.id, "resource update accepted; it applies from the next start");
        Ok(Empty::new())
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        let remaining = self.task_count();
        if remaining == 0 {
            tracing::info!("shutdown requested with no task left");
            self.inner.occupancy.shutdown.notify_one();
        } else {
            tracing::debug!(remaining, "shutdown ignored: the daemon still serves tasks");
        }
        Ok(Empty::new())
    }
}

/// Cleans up what a task left in its bundle when its daemon is gone (the `delete` subcommand).
pub fn cleanup_bundle(bundle: &std::path::Path) {
    bundle::unmount_rootfs(bundle);
}

/// Now, as a protobuf timestamp.
pub fn now_timestamp() -> Timestamp {
    timestamp(SystemTime::now())
}
