//! Events about WasmApps, published by a task of their own: a reconcile hands them over and goes on. Why: awaiting
//! the API server's answer to each Event made it part of every reconcile that had something to say, and of the
//! reconcile-duration tail (docs/operator.md, "At scale").

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;

use crate::error::message_chain;

/// Events waiting to be published, at most; beyond, new ones are dropped with a log line (as client-go's broadcaster
/// drops them) rather than holding memory while the API server is slow.
pub const QUEUE_CAPACITY: usize = 1024;

/// The recorder is dropped, with the copy it keeps of every Event it published, once no Event came for this long.
/// Why: kube's `Recorder` keeps each Event for 6 minutes (to count a repeat as a series), but forgets old ones only
/// when it publishes the next; Events are published on transitions, so at rest it held the ~1,000 Events of the
/// start for the life of the process (docs/operator.md, "At scale"). A repeat after this pause is a new Event instead
/// of a series.
pub const RECORDER_IDLE: Duration = Duration::from_secs(60);

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
    /// Start the task that publishes as `reporter` (within a Tokio runtime); it ends when every queue handle is
    /// dropped and the queued Events are published.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(publish_all(client, reporter, rx));
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

async fn publish_all(client: Client, reporter: Reporter, mut rx: mpsc::Receiver<(ObjectReference, EventSpec)>) {
    let mut recorder: Option<Recorder> = None;
    loop {
        let next = match recorder {
            None => rx.recv().await,
            Some(_) => match tokio::time::timeout(RECORDER_IDLE, rx.recv()).await {
                Ok(next) => next,
                Err(_idle) => {
                    recorder = None;
                    continue;
                }
            },
        };
        let Some((regarding, ev)) = next else { break };
        let recorder = recorder.get_or_insert_with(|| Recorder::new(client.clone(), reporter.clone()));
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

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// The method of the next request, answered with the Event it carried.
    async fn next_method(handle: &mut Handle) -> Option<String> {
        let (request, send) = handle.next_request().await?;
        let method = request.method().to_string();
        let body = request.into_body().collect_bytes().await.ok()?;
        send.send_response(Response::builder().body(Body::from(body.to_vec())).ok()?);
        Some(method)
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_after_the_recorder_was_dropped_is_a_new_event() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let reporter = Reporter { controller: "wasmkube-operator".into(), instance: None };
        let queue = EventQueue::start(Client::new(mock, "apps"), reporter);
        let regarding = ObjectReference {
            kind: Some("WasmApp".into()),
            namespace: Some("apps".into()),
            name: Some("hello".into()),
            ..ObjectReference::default()
        };
        let event = EventSpec::new(true, "ApplyFailed", "refused".into());
        queue.send(&regarding, vec![event.clone()]);
        assert_eq!(next_method(&mut handle).await.as_deref(), Some("POST"));
        // Past the pause, the recorder that would have made the repeat a series (a PATCH) is gone.
        tokio::time::sleep(RECORDER_IDLE + Duration::from_secs(1)).await;
        queue.send(&regarding, vec![event]);
        assert_eq!(next_method(&mut handle).await.as_deref(), Some("POST"));
    }
}
