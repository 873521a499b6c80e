//! One container's lifecycle as an explicit state machine: created → running → stopped (→ deleted,
//! when the service forgets it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use super::bundle::ExitReporter;
use super::error::TaskError;
use crate::runtime::{LaunchError, Signal, Usage, Workload};

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// Exit status as a process reports it.
    pub code: u32,
    /// When it ended.
    pub at: SystemTime,
}

/// Where a container is in its life.
pub enum Phase {
    /// Created: the workload is prepared (or its preparation failed, to be reported at start).
    Created(Result<Box<dyn Workload>, LaunchError>),
    /// Running: signals reach the workload through this sender.
    Running(watch::Sender<Option<Signal>>),
    /// Stopped with this exit.
    Stopped(ExitRecord),
}

impl Phase {
    /// The name containerd's `state` reports.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Created(_) => "created",
            Phase::Running(_) => "running",
            Phase::Stopped(_) => "stopped",
        }
    }
}

/// What containerd gave us for a container's stdio.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    /// stdin path (unused: components get an empty stdin).
    pub stdin: String,
    /// stdout FIFO or file.
    pub stdout: String,
    /// stderr FIFO or file.
    pub stderr: String,
    /// Whether a terminal was asked for.
    pub terminal: bool,
}

/// One container served by the daemon.
pub struct Container {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The stdio containerd set up.
    pub stdio: StdioPaths,
    /// Reports why the container ended; taken once, when it does.
    reporter: Mutex<Option<ExitReporter>>,
    /// Resource usage, live while running.
    pub usage: Arc<Usage>,
    /// The workload's own process, when it is not an instance inside the daemon.
    pub pid: Option<u32>,
    phase: Mutex<Phase>,
    exited: watch::Sender<Option<ExitRecord>>,
}

/// What `start` hands the caller to run.
pub type StartedWorkload = (Result<Box<dyn Workload>, LaunchError>, watch::Receiver<Option<Signal>>);

impl Container {
    /// A created container holding its prepared workload (or the reason it cannot start).
    pub fn new(
        id: String,
        bundle: PathBuf,
        stdio: StdioPaths,
        reporter: ExitReporter,
        prepared: Result<Box<dyn Workload>, LaunchError>,
    ) -> Self {
        let usage = prepared.as_ref().map(|w| w.usage()).unwrap_or_default();
        let pid = prepared.as_ref().ok().and_then(|w| w.pid());
        Self {
            id,
            bundle,
            stdio,
            reporter: Mutex::new(Some(reporter)),
            usage,
            pid,
            phase: Mutex::new(Phase::Created(prepared)),
            exited: watch::channel(None).0,
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // Transitions are single assignments; a panic elsewhere cannot leave a half-written phase.
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current phase name, and the exit if stopped.
    pub fn status(&self) -> (&'static str, Option<ExitRecord>) {
        let phase = self.phase();
        let exit = match &*phase {
            Phase::Stopped(e) => Some(*e),
            _ => None,
        };
        (phase.name(), exit)
    }

    /// created → running: hands out the workload to run and keeps the signal sender.
    pub fn start(&self) -> Result<StartedWorkload, TaskError> {
        let mut phase = self.phase();
        if !matches!(&*phase, Phase::Created(_)) {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is {}, not created: it cannot be started",
                self.id,
                phase.name()
            )));
        }
        let (tx, rx) = watch::channel(None);
        let Phase::Created(prepared) = std::mem::replace(&mut *phase, Phase::Running(tx)) else {
            unreachable!("checked above while holding the lock")
        };
        Ok((prepared, rx))
    }

    /// Delivers a signal. A created container is stopped at once and its exit returned, so the caller
    /// can publish it; a stopped one has no process to signal.
    pub fn signal(&self, signal: Signal) -> Result<Option<ExitRecord>, TaskError> {
        let mut phase = self.phase();
        match &*phase {
            Phase::Running(tx) => {
                if signal.0 != 0 {
                    tx.send_replace(Some(signal));
                }
                Ok(None)
            }
            Phase::Created(_) if signal.0 == 0 => Ok(None),
            Phase::Created(_) => {
                let exit = ExitRecord { code: 128 + signal.0, at: SystemTime::now() };
                *phase = Phase::Stopped(exit);
                drop(phase);
                self.exited.send_replace(Some(exit));
                Ok(Some(exit))
            }
            Phase::Stopped(_) => Err(TaskError::NotFound(format!("container {}: process already finished", self.id))),
        }
    }

    /// Reports why the container ended (once) and lets go of its stderr.
    pub fn report_exit(&self, reason: Option<&str>) {
        let reporter = self.reporter.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(reporter) = reporter {
            reporter.report(reason);
        }
    }

    /// running → stopped.
    pub fn stopped(&self, code: u32) -> ExitRecord {
        let exit = ExitRecord { code, at: SystemTime::now() };
        *self.phase() = Phase::Stopped(exit);
        self.exited.send_replace(Some(exit));
        exit
    }

    /// Whether the container may be deleted (everything but running).
    pub fn deletable(&self) -> Result<(), TaskError> {
        match &*self.phase() {
            Phase::Running(_) => Err(TaskError::FailedPrecondition(format!(
                "container {} is running: kill it before deleting it",
                self.id
            ))),
            _ => Ok(()),
        }
    }

    /// Waits until the container has stopped.
    pub async fn wait(&self) -> ExitRecord {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`, so this cannot happen while we borrow it.
                return ExitRecord { code: 128 + libc::SIGKILL as u32, at: SystemTime::now() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Exit;
    use futures::future::BoxFuture;

    struct Idle;
    impl Workload for Idle {
        fn start(self: Box<Self>, _s: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
            Box::pin(async { Exit::code(0) })
        }
        fn usage(&self) -> Arc<Usage> {
            Arc::default()
        }
    }

    fn created() -> Container {
        let reporter = ExitReporter::open("", None).unwrap();
        Container::new("c1".into(), PathBuf::from("/b"), StdioPaths::default(), reporter, Ok(Box::new(Idle)))
    }

    #[tokio::test]
    async fn lifecycle_created_running_stopped() {
        let c = created();
        assert_eq!(c.status().0, "created");
        let (_w, mut rx) = c.start().unwrap();
        assert_eq!(c.status().0, "running");
        assert!(c.start().is_err(), "a running container cannot start again");
        assert!(c.deletable().is_err());
        c.signal(Signal::TERM).unwrap();
        assert_eq!(*rx.borrow_and_update(), Some(Signal::TERM));
        c.stopped(143);
        assert_eq!(c.wait().await.code, 143);
        assert!(c.deletable().is_ok());
        assert!(matches!(c.signal(Signal::KILL), Err(TaskError::NotFound(_))));
    }

    #[tokio::test]
    async fn killing_a_created_container_stops_it_with_128_plus_signal() {
        let c = created();
        let exit = c.signal(Signal::KILL).unwrap().unwrap();
        assert_eq!(exit.code, 137);
        assert_eq!(c.wait().await.code, 137);
        assert!(c.start().is_err());
    }
}
