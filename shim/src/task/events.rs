//! Task events, published in the order they happen.
//!
//! The service emits events through [`EventSink`]; the daemon forwards them to containerd, tests read
//! them from a channel.

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

/// One lifecycle event of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// The task was created.
    Create(TaskCreate),
    /// The task started.
    Start(TaskStart),
    /// The task's workload hit its memory limit (published just before its exit).
    Oom(TaskOOM),
    /// The task's workload ended.
    Exit(TaskExit),
    /// The task was deleted.
    Delete(TaskDelete),
}

impl TaskEvent {
    /// The containerd topic of the event.
    pub fn topic(&self) -> &'static str {
        match self {
            TaskEvent::Create(_) => topics::TASK_CREATE_EVENT_TOPIC,
            TaskEvent::Start(_) => topics::TASK_START_EVENT_TOPIC,
            TaskEvent::Oom(_) => topics::TASK_OOM_EVENT_TOPIC,
            TaskEvent::Exit(_) => topics::TASK_EXIT_EVENT_TOPIC,
            TaskEvent::Delete(_) => topics::TASK_DELETE_EVENT_TOPIC,
        }
    }

    fn into_message(self) -> Box<dyn MessageDyn> {
        match self {
            TaskEvent::Create(e) => Box::new(e),
            TaskEvent::Start(e) => Box::new(e),
            TaskEvent::Oom(e) => Box::new(e),
            TaskEvent::Exit(e) => Box::new(e),
            TaskEvent::Delete(e) => Box::new(e),
        }
    }
}

/// Where task events go. Publishing never blocks the caller and keeps the order of calls.
pub trait EventSink: Send + Sync + 'static {
    /// Queues one event.
    fn publish(&self, event: TaskEvent);
}

impl EventSink for mpsc::UnboundedSender<TaskEvent> {
    fn publish(&self, event: TaskEvent) {
        let _ = self.send(event);
    }
}

/// Forwards events to containerd through one queue, so they arrive in the order they were published.
pub struct ContainerdEvents {
    queue: mpsc::UnboundedSender<TaskEvent>,
}

impl ContainerdEvents {
    /// Starts the forwarding task for `namespace`.
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<TaskEvent>();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let topic = event.topic();
                let ctx = containerd_shim::protos::ttrpc::context::Context::default();
                if let Err(e) = publisher.publish(ctx, topic, &namespace, event.into_message()).await {
                    tracing::warn!(topic, error = %e, "cannot publish task event to containerd");
                }
            }
        });
        Self { queue }
    }
}

impl EventSink for ContainerdEvents {
    fn publish(&self, event: TaskEvent) {
        self.queue.publish(event);
    }
}
