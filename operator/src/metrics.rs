//! Prometheus metrics of the controller: reconciles, failures by category, reconcile duration.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's category ([`crate::error::Error::category`]).
    pub error: String,
}

/// The controller's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmkube_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by error category", failures.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconciles", duration.clone());
        Self { registry, reconciles, failures, duration }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Count a reconcile and time it until the returned guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { start: Instant::now(), histogram: &self.duration }
    }

    /// Count a failed reconcile.
    pub fn reconcile_failed(&self, category: &str) {
        self.failures.get_or_create(&ErrorLabels { error: category.to_string() }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let m = Metrics::default();
        drop(m.reconcile_started());
        m.reconcile_failed("ApplyFailed");
        let text = m.encode().unwrap();
        assert!(text.contains("wasmkube_operator_reconciles_total 1"), "{text}");
        assert!(text.contains("wasmkube_operator_reconcile_failures_total{error=\"ApplyFailed\"} 1"), "{text}");
        assert!(text.contains("wasmkube_operator_reconcile_duration_seconds_count 1"));
    }
}
