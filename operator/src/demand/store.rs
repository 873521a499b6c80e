//! The demand store: recent samples of every scraped series, and the per-app demand computed from them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::parse::Sample;

/// Counter of requests served, per container (node shim daemon).
pub const REQUESTS_TOTAL: &str = "wasmkube_http_requests_total";
/// Gauge of requests being served, per container (node shim daemon).
pub const REQUESTS_IN_FLIGHT: &str = "wasmkube_http_requests_in_flight";
/// Gauge of requests held by the activator while the app has no ready pod (operator).
pub const ACTIVATOR_HELD: &str = "wasmkube_activator_requests_held";
/// Label carrying the app's namespace.
pub const LABEL_NAMESPACE: &str = "namespace";
/// Label carrying the WasmApp's name.
pub const LABEL_WASMAPP: &str = "wasmapp";
/// Default span of the window the request rate is computed over.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

pub use crate::app_key::AppKey;

/// The demand of one app at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AppDemand {
    /// Requests per second served over the window, plus the requests the activator holds now.
    pub requests_per_second: f64,
    /// Requests being served now, plus the requests the activator holds now.
    pub in_flight: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Requests,
    InFlight,
    Held,
}

impl Kind {
    fn of(name: &str) -> Option<Self> {
        match name {
            REQUESTS_TOTAL => Some(Self::Requests),
            REQUESTS_IN_FLIGHT => Some(Self::InFlight),
            ACTIVATOR_HELD => Some(Self::Held),
            _ => None,
        }
    }

    fn is_gauge(self) -> bool {
        !matches!(self, Self::Requests)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    target: String,
    kind: Kind,
    app: AppKey,
    /// Every label (pod, container, ...), so two containers of one app stay two series.
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Series {
    /// Samples in time order, none older than the window.
    samples: VecDeque<(Instant, f64)>,
}

impl Series {
    fn last(&self) -> f64 {
        self.samples.back().map_or(0.0, |&(_, v)| v)
    }

    /// Counter increase per second over the retained samples; a drop is a restart counting from zero.
    fn rate(&self) -> f64 {
        let (Some(&(first, _)), Some(&(last, _))) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let span = last.saturating_duration_since(first).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        let increase: f64 = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(&(_, prev), &(_, next))| if next >= prev { next - prev } else { next })
            .sum();
        increase / span
    }
}

/// Recent samples of the scraped series and the per-app demand they imply. Time is always passed in.
#[derive(Debug)]
pub struct Demand {
    window: Duration,
    series: Mutex<HashMap<SeriesKey, Series>>,
}

impl Default for Demand {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW)
    }
}

impl Demand {
    /// A store computing rates over `window` and dropping series not refreshed for that long.
    pub fn new(window: Duration) -> Self {
        Self { window, series: Mutex::new(HashMap::new()) }
    }

    /// The window rates are computed over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Record a successful scrape of `target` taken at `now`. Samples other than ours, or without the
    /// namespace and wasmapp labels, are ignored. The target's gauges missing from this scrape are
    /// dropped (the pod or the held request is gone); its counters age out with the window so that the
    /// requests a pod served before it went away still count.
    pub fn record(&self, target: &str, samples: &[Sample], now: Instant) {
        let mut series = self.lock();
        let mut seen = HashSet::new();
        for sample in samples {
            let Some(kind) = Kind::of(&sample.name) else { continue };
            let (Some(namespace), Some(name)) = (sample.labels.get(LABEL_NAMESPACE), sample.labels.get(LABEL_WASMAPP))
            else {
                continue;
            };
            if !sample.value.is_finite() {
                continue;
            }
            let key = SeriesKey {
                target: target.to_string(),
                kind,
                app: AppKey::new(namespace.as_str(), name.as_str()),
                labels: sample.labels.clone(),
            };
            let entry = series.entry(key.clone()).or_default();
            // An out-of-order record would break the rate's time order; the newer samples win.
            if entry.samples.back().is_none_or(|&(t, _)| t <= now) {
                entry.samples.push_back((now, sample.value));
            }
            seen.insert(key);
        }
        series.retain(|key, _| key.target != target || !key.kind.is_gauge() || seen.contains(key));
        Self::prune_locked(&mut series, self.window, now);
    }

    /// The demand of `app` at `now`; zero when nothing is known about it.
    pub fn app(&self, app: &AppKey, now: Instant) -> AppDemand {
        let mut series = self.lock();
        Self::prune_locked(&mut series, self.window, now);
        let mut rate = 0.0;
        let mut in_flight = 0.0;
        let mut held = 0.0;
        for (key, s) in series.iter().filter(|(key, _)| &key.app == app) {
            match key.kind {
                Kind::Requests => rate += s.rate(),
                Kind::InFlight => in_flight += s.last(),
                Kind::Held => held += s.last(),
            }
        }
        AppDemand { requests_per_second: rate + held, in_flight: in_flight + held }
    }

    /// Every app with data at `now`, with its demand.
    pub fn apps(&self, now: Instant) -> BTreeMap<AppKey, AppDemand> {
        let keys: Vec<AppKey> = {
            let mut series = self.lock();
            Self::prune_locked(&mut series, self.window, now);
            series.keys().map(|k| k.app.clone()).collect()
        };
        keys.into_iter().map(|k| (k.clone(), self.app(&k, now))).collect()
    }

    fn prune_locked(series: &mut HashMap<SeriesKey, Series>, window: Duration, now: Instant) {
        let oldest = now.checked_sub(window);
        series.retain(|_, s| {
            if let Some(oldest) = oldest {
                while s.samples.front().is_some_and(|&(t, _)| t < oldest) {
                    s.samples.pop_front();
                }
            }
            !s.samples.is_empty()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, Series>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters here.
        self.series.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, ns: &str, app: &str, container: &str, value: f64) -> Sample {
        let labels = [("namespace", ns), ("wasmapp", app), ("pod", container), ("container", "app")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sample { name: name.into(), labels, value }
    }

    fn held(ns: &str, app: &str, value: f64) -> Sample {
        let labels =
            [("namespace", ns), ("wasmapp", app)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Sample { name: ACTIVATOR_HELD.into(), labels, value }
    }

    fn hello() -> AppKey {
        AppKey::new("apps", "hello")
    }

    #[test]
    fn rate_is_increase_over_span() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 100.0)], t0);
        assert_eq!(d.app(&hello(), t0).requests_per_second, 0.0, "one sample has no rate");
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 150.0)], t0 + Duration::from_secs(5));
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 200.0)], t0 + Duration::from_secs(10));
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(10)).requests_per_second, 10.0);
    }

    #[test]
    fn counter_reset_counts_the_new_value() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 100.0)], t0);
        // The node daemon restarted: 100 → 30 means 30 new requests, not -70.
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 30.0)], t0 + Duration::from_secs(5));
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 50.0)], t0 + Duration::from_secs(10));
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(10)).requests_per_second, 5.0);
    }

    #[test]
    fn old_samples_and_stale_series_age_out() {
        let d = Demand::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 0.0)], t0);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 600.0)], t0 + Duration::from_secs(30));
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 600.0)], t0 + Duration::from_secs(70));
        // The 0 → 600 burst fell out of the window: only 600 → 600 remains.
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(70)).requests_per_second, 0.0);
        assert_eq!(d.apps(t0 + Duration::from_secs(70)).len(), 1);
        // No scrape for longer than the window (the pod went away, or its node stopped answering).
        assert!(d.apps(t0 + Duration::from_secs(131)).is_empty());
    }

    #[test]
    fn failed_scrape_keeps_last_samples_until_they_age_out() {
        let d = Demand::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p1", 3.0)], t0);
        // No record for node-a at t0+30 (scrape failed): the gauge still counts.
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(30)).in_flight, 3.0);
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(61)).in_flight, 0.0);
    }

    #[test]
    fn gauges_missing_from_a_successful_scrape_are_dropped() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record("operator-1", &[held("apps", "hello", 4.0)], t0);
        assert_eq!(d.app(&hello(), t0).in_flight, 4.0);
        d.record("operator-1", &[], t0 + Duration::from_secs(5));
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(5)).in_flight, 0.0);
    }

    #[test]
    fn held_requests_add_to_rate_and_in_flight() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 0.0)], t0);
        d.record(
            "node-a",
            &[
                sample(REQUESTS_TOTAL, "apps", "hello", "p1", 20.0),
                sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p1", 2.0),
            ],
            t0 + Duration::from_secs(10),
        );
        d.record("operator-1", &[held("apps", "hello", 3.0)], t0 + Duration::from_secs(10));
        d.record("operator-2", &[held("apps", "hello", 1.0)], t0 + Duration::from_secs(10));
        let got = d.app(&hello(), t0 + Duration::from_secs(10));
        assert_eq!(got, AppDemand { requests_per_second: 2.0 + 4.0, in_flight: 2.0 + 4.0 });
    }

    #[test]
    fn containers_of_one_app_are_summed_across_nodes() {
        let d = Demand::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 0.0)], t0);
        d.record("node-b", &[sample(REQUESTS_TOTAL, "apps", "hello", "p2", 0.0)], t0);
        d.record(
            "node-a",
            &[
                sample(REQUESTS_TOTAL, "apps", "hello", "p1", 30.0),
                sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p1", 1.0),
            ],
            t1,
        );
        d.record(
            "node-b",
            &[
                sample(REQUESTS_TOTAL, "apps", "hello", "p2", 70.0),
                sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p2", 2.0),
            ],
            t1,
        );
        assert_eq!(d.app(&hello(), t1), AppDemand { requests_per_second: 10.0, in_flight: 3.0 });
    }

    #[test]
    fn apps_are_kept_apart_by_namespace() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record(
            "node-a",
            &[
                sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p1", 1.0),
                sample(REQUESTS_IN_FLIGHT, "other", "hello", "p1", 5.0),
            ],
            t0,
        );
        assert_eq!(d.app(&hello(), t0).in_flight, 1.0);
        assert_eq!(d.app(&AppKey::new("other", "hello"), t0).in_flight, 5.0);
        assert_eq!(d.app(&AppKey::new("apps", "nobody"), t0), AppDemand::default());
    }

    #[test]
    fn foreign_and_unlabelled_samples_are_ignored() {
        let d = Demand::default();
        let t0 = Instant::now();
        let mut no_app = sample(REQUESTS_IN_FLIGHT, "apps", "hello", "p1", 9.0);
        no_app.labels.remove("wasmapp");
        d.record("node-a", &[no_app, sample("process_cpu_seconds_total", "apps", "hello", "p1", 9.0)], t0);
        assert!(d.apps(t0).is_empty());
    }
}
