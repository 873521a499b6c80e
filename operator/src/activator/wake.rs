//! Signalling demand: the `Waker` seam, its Kubernetes implementation, and the per-app rate limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kube::Resource;
use tokio::time::Instant;

use super::routes::AppKey;
use crate::crd::WasmApp;

/// Why waking an app failed.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// The request to the API server could not be built.
    #[error("building a request for the scale of {app}")]
    Build {
        /// The app.
        app: AppKey,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The API server refused or could not be reached.
    #[error("{step} the scale of {app}")]
    Scale {
        /// The app.
        app: AppKey,
        /// `reading` or `patching`.
        step: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The scale changed under every patch.
    #[error("the scale of {app} changed during each of {attempts} attempts to scale it from 0 to 1")]
    Contended {
        /// The app.
        app: AppKey,
        /// Attempts made.
        attempts: u32,
    },
}

/// What a wake did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// The app was at zero; it is now at one replica.
    Scaled,
    /// The app already had this many replicas; nothing was changed.
    AlreadyAwake(i32),
}

/// Scales an app up for the requests that wait for it.
#[async_trait]
pub trait Waker: Send + Sync {
    /// Ask for at least one replica of `app`.
    async fn wake(&self, app: &AppKey) -> Result<Woken, WakeError>;
}

/// Wakes an app by scaling its WasmApp from 0 to 1 through the scale subresource (never changing other counts).
pub struct ScaleWaker {
    client: kube::Client,
}

/// Patches tried before giving up when the scale keeps changing between the read and the patch.
const WAKE_ATTEMPTS: u32 = 3;

impl ScaleWaker {
    /// A waker using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// Path of the scale subresource of `app`.
pub fn scale_path(app: &AppKey) -> String {
    format!("{}/{}/scale", WasmApp::url_path(&(), Some(&app.namespace)), app.name)
}

/// Replicas and resourceVersion of an `autoscaling/v1` Scale as the API server sends it: `spec.replicas` is
/// omitted when it is 0 (Go `omitempty` on `ScaleSpec.Replicas`, k8s.io/api/autoscaling/v1/types.go), so a
/// missing field reads as 0.
pub fn read_scale(scale: &serde_json::Value) -> (i32, Option<&str>) {
    let replicas = scale["spec"]["replicas"].as_i64().and_then(|r| i32::try_from(r).ok()).unwrap_or(0);
    (replicas, scale["metadata"]["resourceVersion"].as_str())
}

/// The JSON patch that sets `spec.replicas` to 1 only if the scale is still the one read (`resource_version`).
///
/// `add` works whether or not `spec.replicas` is present (RFC 6902 §4.1 replaces an existing member), unlike
/// `replace` or a `test` of the value, which fail on the omitted zero.
pub fn wake_patch(resource_version: &str) -> serde_json::Value {
    serde_json::json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": resource_version },
        { "op": "add", "path": "/spec/replicas", "value": 1 },
    ])
}

/// The GET of `app`'s scale.
pub fn scale_request(app: &AppKey) -> Result<http::Request<Vec<u8>>, http::Error> {
    http::Request::get(scale_path(app)).header(http::header::ACCEPT, "application/json").body(Vec::new())
}

/// The request that wakes `app` (a JSON patch of its scale subresource read at `resource_version`).
pub fn wake_request(app: &AppKey, resource_version: &str) -> Result<http::Request<Vec<u8>>, http::Error> {
    http::Request::patch(scale_path(app))
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .body(wake_patch(resource_version).to_string().into_bytes())
}

#[async_trait]
impl Waker for ScaleWaker {
    async fn wake(&self, app: &AppKey) -> Result<Woken, WakeError> {
        let build = |source| WakeError::Build { app: app.clone(), source };
        let failed = |step, source| WakeError::Scale { app: app.clone(), step, source };
        for attempt in 1..=WAKE_ATTEMPTS {
            let scale: serde_json::Value =
                self.client.request(scale_request(app).map_err(build)?).await.map_err(|e| failed("reading", e))?;
            let (replicas, resource_version) = read_scale(&scale);
            if replicas > 0 {
                return Ok(Woken::AlreadyAwake(replicas));
            }
            let request = wake_request(app, resource_version.unwrap_or_default()).map_err(build)?;
            match self.client.request::<serde_json::Value>(request).await {
                Ok(_) => return Ok(Woken::Scaled),
                // Why both: a failed `test` is a 422 and a write racing ours a 409 Conflict; either way the
                // scale changed since it was read, so read it again (someone may have scaled it up already).
                Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                    tracing::debug!(%app, attempt, reason = %status.reason, "the scale changed meanwhile; reading it again");
                }
                Err(e) => return Err(failed("patching", e)),
            }
        }
        Err(WakeError::Contended { app: app.clone(), attempts: WAKE_ATTEMPTS })
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
