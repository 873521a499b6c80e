//! The bounds on held requests, per app and in all; a guard per held request keeps the counts and the gauge right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;

use super::metrics::ActivatorMetrics;
use super::routes::AppKey;

/// Counts held requests per app and refuses the one beyond either bound.
pub struct HoldQueue {
    max_per_app: usize,
    max_total: usize,
    held: Arc<Mutex<Counts>>,
    metrics: ActivatorMetrics,
}

/// Held requests per app, and their sum.
#[derive(Default)]
struct Counts {
    per_app: HashMap<AppKey, usize>,
    total: usize,
}

/// Which bound refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// The app's own bound.
    App(usize),
    /// The bound of all apps together.
    Total(usize),
}

/// A held request; dropping it releases its place.
pub struct Held {
    app: AppKey,
    held: Arc<Mutex<Counts>>,
    gauge: Gauge,
}

impl HoldQueue {
    /// A queue holding at most `max_per_app` requests per app and `max_total` in all.
    pub fn new(max_per_app: usize, max_total: usize, metrics: ActivatorMetrics) -> Self {
        Self { max_per_app, max_total, held: Arc::default(), metrics }
    }

    /// Take a place for a request to `app`, unless a bound is reached.
    pub fn enter(&self, app: &AppKey) -> Result<Held, QueueFull> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.total >= self.max_total {
            return Err(QueueFull::Total(self.max_total));
        }
        let count = held.per_app.entry(app.clone()).or_default();
        if *count >= self.max_per_app {
            return Err(QueueFull::App(self.max_per_app));
        }
        *count += 1;
        held.total += 1;
        let gauge = self.metrics.held_gauge(app);
        gauge.inc();
        Ok(Held { app: app.clone(), held: self.held.clone(), gauge })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.per_app.get_mut(&self.app) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.per_app.remove(&self.app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppKey {
        AppKey { namespace: "ns".into(), name: name.into() }
    }

    #[test]
    fn both_bounds_refuse_and_leaving_frees_a_place() {
        let queue = HoldQueue::new(2, 3, ActivatorMetrics::default());
        let a1 = queue.enter(&app("a")).unwrap();
        let _a2 = queue.enter(&app("a")).unwrap();
        assert_eq!(queue.enter(&app("a")).err(), Some(QueueFull::App(2)));
        let _b1 = queue.enter(&app("b")).unwrap();
        assert_eq!(queue.enter(&app("c")).err(), Some(QueueFull::Total(3)), "all apps together");
        drop(a1);
        assert!(queue.enter(&app("c")).is_ok(), "a request that left frees its place in both counts");
    }
}
