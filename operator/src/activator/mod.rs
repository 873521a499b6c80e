//! The activator: receives the traffic of apps with no ready replica, holds it, wakes the app, then proxies.
//!
//! The operator points a Service at the activator with an extra EndpointSlice (managed by
//! [`ACTIVATOR_SLICE_MANAGER`]) on the app's own activator port while the app has no ready pod; the activator
//! listens on every such port and finds the app of each request by that port (else pre-DNAT destination, else
//! `Host`), proxies at once when it knows ready pods, else holds the request within a per-app bound and a
//! deadline while a [`Waker`] scales the app up.

mod handler;
mod hold;
pub mod metrics;
mod ports;
pub mod proxy;
pub mod routes;
mod server;
pub mod state;
pub mod wake;
pub mod watch;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

pub use metrics::{ActivatorMetrics, ConnectionLimit, Outcome, WakeOutcome};
pub use ports::serve_app_ports;
pub use routes::{
    app_from_host, backends_from_slices, ports_from_slices, route_key_from_host, routes_from_services, AppKey,
    ACTIVATOR_SLICE_MANAGER,
};
pub use server::{original_dst, serve};
pub use state::{AppPorts, RoutingState, PORT_LINGER};
pub use wake::{ScaleWaker, WakeError, Waker, Woken};

use hold::HoldQueue;
use wake::WakeLimiter;

/// Default address the activator listens on.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8090";

/// Limits of the activator.
#[derive(Clone, Debug)]
pub struct ActivatorSettings {
    /// How long a request waits for a ready replica before a 503.
    pub hold_timeout: Duration,
    /// Requests held per app at most; the one beyond gets a 503 at once.
    pub max_held_per_app: usize,
    /// Requests held for all apps together at most; the one beyond gets a 503 at once.
    pub max_held: usize,
    /// Open client connections at most, all listeners together; a connection beyond is closed at once.
    pub max_connections: usize,
    /// Open client connections of one app's port at most; a connection beyond is closed at once.
    pub max_connections_per_app: usize,
    /// Longest a client may take to send a request's headers (also the idle limit of a kept-alive connection);
    /// then its connection is closed, so slow clients cannot hold connections.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; a larger one is answered 431.
    pub max_header_bytes: usize,
    /// Time allowed to open a TCP connection to a backend before the next one is tried.
    pub connect_timeout: Duration,
    /// Least time between two wakes of one app while requests wait.
    pub wake_interval: Duration,
    /// Pause before connecting again when every known backend refused.
    pub retry_interval: Duration,
}

impl Default for ActivatorSettings {
    fn default() -> Self {
        Self {
            hold_timeout: Duration::from_secs(60),
            max_held_per_app: 256,
            max_held: 4096,
            max_connections: 10_000,
            max_connections_per_app: 1_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(1),
            wake_interval: Duration::from_secs(5),
            retry_interval: Duration::from_millis(100),
        }
    }
}

/// The activator's shared state: settings, routing, held requests, waker and metrics.
pub struct Activator {
    settings: ActivatorSettings,
    state: RoutingState,
    queue: HoldQueue,
    /// Open client connections of every listener; a permit per connection.
    connections: Arc<Semaphore>,
    waker: Arc<dyn Waker>,
    wakes: WakeLimiter,
    metrics: ActivatorMetrics,
    on_wake: OnceLock<WakeHook>,
}

/// Called with the app at each wake attempt, before the API server is asked.
pub type WakeHook = Box<dyn Fn(&AppKey) + Send + Sync>;

impl Activator {
    /// An activator with no routes and no backends yet.
    pub fn new(settings: ActivatorSettings, waker: Arc<dyn Waker>, metrics: ActivatorMetrics) -> Arc<Self> {
        Arc::new(Self {
            queue: HoldQueue::new(settings.max_held_per_app, settings.max_held, metrics.clone()),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            wakes: WakeLimiter::new(settings.wake_interval),
            state: RoutingState::default(),
            settings,
            waker,
            metrics,
            on_wake: OnceLock::new(),
        })
    }

    /// Have `hook` called at every wake attempt (the operator tells its demand store, so the HPA sees the wake
    /// before any scrape does); only the first hook set is kept.
    pub fn set_wake_hook(&self, hook: WakeHook) {
        let _ = self.on_wake.set(hook);
    }

    /// The routing state (written by the Kubernetes feed, or by tests).
    pub fn state(&self) -> &RoutingState {
        &self.state
    }

    /// The activator's metrics.
    pub fn metrics(&self) -> &ActivatorMetrics {
        &self.metrics
    }

    /// The activator's settings.
    pub fn settings(&self) -> &ActivatorSettings {
        &self.settings
    }

    /// Wake `app` (a request waits for it) unless that was tried within the wake interval; never blocks the
    /// request. Every attempt and its outcome is logged and counted.
    fn wake(&self, app: &AppKey) {
        if !self.wakes.allow(app) {
            return;
        }
        let waker = self.waker.clone();
        let metrics = self.metrics.clone();
        let app = app.clone();
        tracing::info!(%app, "a request waits for the app: waking it");
        if let Some(hook) = self.on_wake.get() {
            hook(&app);
        }
        tokio::spawn(async move {
            let outcome = match waker.wake(&app).await {
                Ok(Woken::Scaled) => {
                    tracing::info!(%app, "woken: scaled from 0 to 1 replica");
                    WakeOutcome::Scaled
                }
                Ok(Woken::AlreadyAwake(replicas)) => {
                    tracing::info!(%app, replicas, "already scaled up, waiting for a ready replica");
                    WakeOutcome::AlreadyAwake
                }
                Err(e) => {
                    tracing::warn!(%app, error = %crate::error::message_chain(&e), "waking the app failed");
                    WakeOutcome::Failed
                }
            };
            metrics.count_wake(&app, outcome);
        });
    }
}
