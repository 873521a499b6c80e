//! The per-app bound on held requests; a guard per held request keeps the count and the gauge right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;

use super::metrics::ActivatorMetrics;
use super::routes::AppKey;

/// Counts held requests per app and refuses the one beyond the bound.
pub struct HoldQueue {
    max_per_app: usize,
    held: Arc<Mutex<HashMap<AppKey, usize>>>,
    metrics: ActivatorMetrics,
}

/// A held request; dropping it releases its place.
pub struct Held {
    app: AppKey,
    held: Arc<Mutex<HashMap<AppKey, usize>>>,
    gauge: Gauge,
}

impl HoldQueue {
    /// A queue holding at most `max_per_app` requests per app.
    pub fn new(max_per_app: usize, metrics: ActivatorMetrics) -> Self {
        Self { max_per_app, held: Arc::default(), metrics }
    }

    /// Take a place for a request to `app`; `None` when `max_per_app` requests already wait.
    pub fn enter(&self, app: &AppKey) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(app.clone()).or_default();
        if *count >= self.max_per_app {
            return None;
        }
        *count += 1;
        let gauge = self.metrics.held_gauge(app);
        gauge.inc();
        Some(Held { app: app.clone(), held: self.held.clone(), gauge })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.app) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.app);
            }
        }
    }
}
