//! Signalling demand: the `Waker` seam, its Kubernetes implementation, and the per-app rate limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::Resource;
use tokio::time::Instant;

use super::routes::AppKey;
use crate::crd::WasmApp;

/// Why waking an app failed.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The request to the API server could not be built.
    #[error("building the scale patch of {app}")]
    Build {
        /// The app.
        app: AppKey,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The API server refused or could not be reached.
    #[error("scaling {app} from 0 to 1")]
    Scale {
        /// The app.
        app: AppKey,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Tells whoever scales an app that requests wait for it.
#[async_trait]
pub trait Waker: Send + Sync {
    /// Ask for at least one replica of `app`.
    async fn wake(&self, app: &AppKey) -> Result<(), WakeError>;
}

/// Wakes an app by scaling its WasmApp from 0 to 1 through the scale subresource (never changing other counts).
pub struct ScaleWaker {
    client: kube::Client,
}

impl ScaleWaker {
    /// A waker using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// The JSON patch that sets `spec.replicas` to 1 only if it is 0.
pub fn wake_patch() -> serde_json::Value {
    serde_json::json!([
        { "op": "test", "path": "/spec/replicas", "value": 0 },
        { "op": "replace", "path": "/spec/replicas", "value": 1 },
    ])
}

/// The request that wakes `app` (a JSON patch of its scale subresource).
pub fn wake_request(app: &AppKey) -> Result<http::Request<Vec<u8>>, http::Error> {
    let url = format!("{}/{}/scale", WasmApp::url_path(&(), Some(&app.namespace)), app.name);
    http::Request::patch(url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .body(wake_patch().to_string().into_bytes())
}

#[async_trait]
impl Waker for ScaleWaker {
    async fn wake(&self, app: &AppKey) -> Result<(), WakeError> {
        let request = wake_request(app).map_err(|source| WakeError::Build { app: app.clone(), source })?;
        match self.client.request::<Scale>(request).await {
            Ok(_) => {
                tracing::info!(%app, "scaled from 0 to 1 for waiting requests");
                Ok(())
            }
            // Why: the `test` op fails with 422 when replicas is not 0, i.e. the app is already scaled up.
            Err(kube::Error::Api(status)) if status.code == 422 => Ok(()),
            Err(source) => Err(WakeError::Scale { app: app.clone(), source }),
        }
    }
}

/// Lets each app be woken at most once per interval.
pub struct WakeLimiter {
    interval: Duration,
    last: Mutex<HashMap<AppKey, Instant>>,
}

impl WakeLimiter {
    /// A limiter allowing one wake per `interval` per app.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::default() }
    }

    /// Whether `app` may be woken now; if so, the interval starts again.
    pub fn allow(&self, app: &AppKey) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // Why: forget apps not woken for long, so the map does not grow with every app ever seen.
        last.retain(|_, t| now.duration_since(*t) < self.interval);
        if last.contains_key(app) {
            return false;
        }
        last.insert(app.clone(), now);
        true
    }
}
