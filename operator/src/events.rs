//! Events about WasmApps, published by a task of their own: a reconcile hands them over and goes on. Why: awaiting
//! the API server's answer to each Event made it part of every reconcile that had something to say, and of the
//! reconcile-duration tail (docs/operator.md, "At scale").

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;

use crate::error::message_chain;

/// Events waiting to be published, at most; beyond, new ones are dropped with a log line (as client-go's broadcaster
/// drops them) rather than holding memory while the API server is slow.
pub const QUEUE_CAPACITY: usize = 1024;

/// An Event to publish about a WasmApp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable note.
    pub note: String,
}

impl EventSpec {
    /// An Event with this reason and note.
    pub fn new(warning: bool, reason: &str, note: String) -> Self {
        Self { warning, reason: reason.to_string(), note }
    }
}

/// Hands Events to the publishing task, which publishes them in order, one at a time.
#[derive(Clone, Debug)]
pub struct EventQueue {
    tx: mpsc::Sender<(ObjectReference, EventSpec)>,
}

impl EventQueue {
    /// Start the task that publishes through `recorder` (within a Tokio runtime); it ends when every queue handle is
    /// dropped and the queued Events are published.
    pub fn start(recorder: Recorder) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(publish_all(recorder, rx));
        Self { tx }
    }

    /// Queue `events` about the object `regarding`, without waiting.
    pub fn send(&self, regarding: &ObjectReference, events: Vec<EventSpec>) {
        for ev in events {
            if let Err(e) = self.tx.try_send((regarding.clone(), ev)) {
                let reason = match &e {
                    mpsc::error::TrySendError::Full((_, ev)) | mpsc::error::TrySendError::Closed((_, ev)) => {
                        ev.reason.clone()
                    }
                };
                tracing::warn!(error = %e, reason, "an Event was dropped");
            }
        }
    }
}

async fn publish_all(recorder: Recorder, mut rx: mpsc::Receiver<(ObjectReference, EventSpec)>) {
    while let Some((regarding, ev)) = rx.recv().await {
        let event = Event {
            type_: if ev.warning { EventType::Warning } else { EventType::Normal },
            reason: ev.reason,
            note: Some(ev.note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %message_chain(&e), "could not publish an Event");
        }
    }
}
