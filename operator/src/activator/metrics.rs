//! The activator's Prometheus metrics: requests held now and requests by outcome, per app.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wasmkube_contract::metrics::{ACTIVATOR_HELD, ACTIVATOR_WAKES};

use super::routes::AppKey;

/// Labels naming an app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// Namespace of the WasmApp.
    pub namespace: String,
    /// Name of the WasmApp.
    pub wasmapp: String,
}

impl From<&AppKey> for AppLabels {
    fn from(app: &AppKey) -> Self {
        Self { namespace: app.namespace.clone(), wasmapp: app.name.clone() }
    }
}

/// How a request through the activator ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Sent to a backend and answered.
    Proxied,
    /// No ready replica within the hold deadline.
    Timeout,
    /// Too many requests already waiting for the app.
    Overflow,
    /// The request named no known app.
    UnknownApp,
    /// The backend failed after the request was sent.
    BackendError,
}

impl Outcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxied => "proxied",
            Self::Timeout => "timeout",
            Self::Overflow => "overflow",
            Self::UnknownApp => "unknown_app",
            Self::BackendError => "backend_error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How an attempt to wake an app ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum WakeOutcome {
    /// The app was at zero and is now scaled to one replica.
    Scaled,
    /// The app already had replicas (none ready yet): nothing to patch.
    AlreadyAwake,
    /// Reading or patching the scale failed.
    Failed,
}

impl WakeOutcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scaled => "scaled",
            Self::AlreadyAwake => "already_awake",
            Self::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for WakeOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the wake counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeLabels {
    /// Namespace of the WasmApp.
    pub namespace: String,
    /// Name of the WasmApp.
    pub wasmapp: String,
    /// How the wake ended.
    pub outcome: WakeOutcome,
}

/// Labels of the outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Namespace of the WasmApp (empty for an unknown app).
    pub namespace: String,
    /// Name of the WasmApp (empty for an unknown app).
    pub wasmapp: String,
    /// How the request ended.
    pub outcome: Outcome,
}

/// Which connection bound closed a connection at once.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// The bound of all listeners together.
    All,
    /// The bound of one app's port.
    App,
}

impl EncodeLabelValue for ConnectionLimit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&if *self == Self::All { "all" } else { "app" }, encoder)
    }
}

/// Labels of the refused-connections counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The bound that was reached.
    pub limit: ConnectionLimit,
}

/// `wasmkube_activator_requests_held`, `wasmkube_activator_requests_total`, `wasmkube_activator_wakes_total` and
/// `wasmkube_activator_connections_refused_total`.
#[derive(Clone, Default)]
pub struct ActivatorMetrics {
    held: Family<AppLabels, Gauge>,
    requests: Family<OutcomeLabels, Counter>,
    wakes: Family<WakeLabels, Counter>,
    refused: Family<LimitLabels, Counter>,
}

impl ActivatorMetrics {
    /// Register the metrics in `registry`, which must have no prefix (the names start with `wasmkube_activator_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            ACTIVATOR_HELD,
            "Requests the activator holds now, waiting for a ready replica",
            self.held.clone(),
        );
        registry.register(
            "wasmkube_activator_requests",
            "Requests through the activator, by outcome",
            self.requests.clone(),
        );
        // prometheus-client appends `_total` to a counter's name.
        registry.register(
            ACTIVATOR_WAKES.strip_suffix("_total").unwrap_or(ACTIVATOR_WAKES),
            "Attempts to wake an app at zero for a waiting request, by outcome",
            self.wakes.clone(),
        );
        registry.register(
            "wasmkube_activator_connections_refused",
            "Client connections closed at once because a connection bound was reached",
            self.refused.clone(),
        );
    }

    /// Connections closed at once because `limit` was reached.
    pub fn refused(&self, limit: ConnectionLimit) -> u64 {
        self.refused.get_or_create(&LimitLabels { limit }).get()
    }

    pub(super) fn count_refused(&self, limit: ConnectionLimit) {
        self.refused.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Wake attempts for `app` that ended with `outcome`.
    pub fn wakes(&self, app: &AppKey, outcome: WakeOutcome) -> u64 {
        self.wakes.get_or_create(&wake_labels(app, outcome)).get()
    }

    pub(crate) fn count_wake(&self, app: &AppKey, outcome: WakeOutcome) {
        self.wakes.get_or_create(&wake_labels(app, outcome)).inc();
    }

    /// Requests held now for `app` (demand the metrics aggregator adds to the app's in-flight requests).
    pub fn held(&self, app: &AppKey) -> i64 {
        self.held.get_or_create(&AppLabels::from(app)).get()
    }

    /// Requests through the activator for `app` that ended with `outcome`.
    pub fn requests(&self, app: Option<&AppKey>, outcome: Outcome) -> u64 {
        self.requests.get_or_create(&outcome_labels(app, outcome)).get()
    }

    pub(super) fn held_gauge(&self, app: &AppKey) -> Gauge {
        self.held.get_or_create(&AppLabels::from(app)).clone()
    }

    pub(crate) fn count(&self, app: Option<&AppKey>, outcome: Outcome) {
        self.requests.get_or_create(&outcome_labels(app, outcome)).inc();
    }
}

fn wake_labels(app: &AppKey, outcome: WakeOutcome) -> WakeLabels {
    WakeLabels { namespace: app.namespace.clone(), wasmapp: app.name.clone(), outcome }
}

fn outcome_labels(app: Option<&AppKey>, outcome: Outcome) -> OutcomeLabels {
    let (namespace, wasmapp) = app.map(|a| (a.namespace.clone(), a.name.clone())).unwrap_or_default();
    OutcomeLabels { namespace, wasmapp, outcome }
}
