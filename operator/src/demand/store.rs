//! The demand store: recent samples of every scraped series, and the per-app demand computed from them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::parse::Sample;

pub use wasmkube_contract::metrics::{
    ACTIVATOR_HELD, ACTIVATOR_WAKES, LABEL_NAMESPACE, LABEL_POD, LABEL_WASMAPP, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL,
};
/// Shortest span a new series' first increase is spread over: about one scrape interval, so that a pod's first
/// requests never read as a burst that would scale the app to its maximum.
pub const MIN_NEW_SERIES_SPAN: Duration = Duration::from_secs(5);
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
    Wakes,
}

impl Kind {
    fn of(name: &str) -> Option<Self> {
        match name {
            REQUESTS_TOTAL => Some(Self::Requests),
            REQUESTS_IN_FLIGHT => Some(Self::InFlight),
            ACTIVATOR_HELD => Some(Self::Held),
            ACTIVATOR_WAKES => Some(Self::Wakes),
            _ => None,
        }
    }

    fn is_gauge(self) -> bool {
        matches!(self, Self::InFlight | Self::Held)
    }
}

/// A pod, by namespace and name: the key of pod start times.
pub type PodRef = (String, String);

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
    /// Last successful scrape of each target within the window.
    scraped: Mutex<HashMap<String, Instant>>,
    /// When the pods of the last target listing started (from the API server).
    pod_starts: Mutex<HashMap<PodRef, Instant>>,
    /// Last wake of each app by this process's own activator, known before any scrape could show it.
    local_wakes: Mutex<HashMap<AppKey, Instant>>,
}

impl Default for Demand {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW)
    }
}

impl Demand {
    /// A store computing rates over `window` and dropping series not refreshed for that long.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            series: Mutex::new(HashMap::new()),
            scraped: Mutex::new(HashMap::new()),
            pod_starts: Mutex::new(HashMap::new()),
            local_wakes: Mutex::new(HashMap::new()),
        }
    }

    /// The window rates are computed over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Replace the known pod start times (from the latest listing of the pods).
    pub fn set_pod_starts(&self, starts: HashMap<PodRef, Instant>) {
        *lock(&self.pod_starts) = starts;
    }

    /// Note that this process's activator woke `app` at `now`: until the window has passed, the app's request
    /// rate is at least one request over the window, even before a scrape shows the wake, so an HPA sync
    /// right after the wake cannot scale the app back to zero.
    pub fn note_local_wake(&self, app: &AppKey, now: Instant) {
        lock(&self.local_wakes).insert(app.clone(), now);
    }

    /// Record a successful scrape of `target` taken at `now`. Samples other than ours, or without the
    /// namespace and wasmapp labels, are ignored. The target's gauges missing from this scrape are
    /// dropped (the pod or the held request is gone); its counters age out with the window so that the
    /// requests a pod served before it went away still count.
    ///
    /// A counter seen for the first time counts its value as an increase from 0 when it is known to have
    /// started at 0 within the window: its pod started within the window (the zero is placed at the pod's
    /// start), or the target answered a scrape within the window without it (the zero is placed at that
    /// scrape). Otherwise (the operator just started, or a target it had not scraped) the first value is only
    /// the baseline: it may hold hours of requests.
    pub fn record(&self, target: &str, samples: &[Sample], now: Instant) {
        let previous_scrape = {
            let mut scraped = lock(&self.scraped);
            let oldest = now.checked_sub(self.window);
            scraped.retain(|_, t| oldest.is_none_or(|oldest| *t >= oldest));
            scraped.insert(target.to_string(), now).filter(|t| *t < now)
        };
        let pod_starts = lock(&self.pod_starts).clone();
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
            let entry = series.entry(key.clone()).or_insert_with(|| {
                let mut new = Series::default();
                if kind == Kind::Requests || kind == Kind::Wakes {
                    let pod = sample.labels.get(LABEL_POD).map(|pod| (namespace.clone(), pod.clone()));
                    let started = pod.and_then(|pod| pod_starts.get(&pod).copied());
                    if let Some(zero) = counter_zero(started, previous_scrape, now, self.window) {
                        new.samples.push_back((zero, 0.0));
                    }
                }
                new
            });
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
                // Why wakes: a wake is a request that waited, counted before any pod could count it, so the
                // app's demand stays above zero between the wake and the first scrape of the new pod.
                Kind::Requests | Kind::Wakes => rate += s.rate(),
                Kind::InFlight => in_flight += s.last(),
                Kind::Held => held += s.last(),
            }
        }
        drop(series);
        let floor = {
            let mut wakes = lock(&self.local_wakes);
            let oldest = now.checked_sub(self.window);
            wakes.retain(|_, t| oldest.is_none_or(|oldest| *t >= oldest));
            // Why one request over the window: what the scraped wake counter will add once it is seen.
            wakes.get(app).filter(|t| **t <= now).map_or(0.0, |_| 1.0 / self.window.as_secs_f64().max(1.0))
        };
        AppDemand { requests_per_second: (rate + held).max(floor), in_flight: in_flight + held }
    }

    /// Every app with data at `now`, with its demand.
    pub fn apps(&self, now: Instant) -> BTreeMap<AppKey, AppDemand> {
        let keys: Vec<AppKey> = {
            let mut series = self.lock();
            Self::prune_locked(&mut series, self.window, now);
            let mut keys: Vec<AppKey> = series.keys().map(|k| k.app.clone()).collect();
            keys.extend(lock(&self.local_wakes).keys().cloned());
            keys
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
        lock(&self.series)
    }
}

// A panic while holding a lock cannot leave the maps half-updated in a way that matters here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a counter seen for the first time at `now` was 0, if that is known within the window: at its pod's
/// start (`started`), else at the target's previous scrape, which did not show it. The zero lies at least
/// [`MIN_NEW_SERIES_SPAN`] before `now` so a first increase is never read as a burst.
fn counter_zero(
    started: Option<Instant>,
    previous_scrape: Option<Instant>,
    now: Instant,
    window: Duration,
) -> Option<Instant> {
    let oldest = now.checked_sub(window);
    let within = |t: &Instant| oldest.is_none_or(|oldest| *t >= oldest);
    let zero = started.filter(within).or(previous_scrape.filter(within))?;
    let latest = now.checked_sub(MIN_NEW_SERIES_SPAN).unwrap_or(zero);
    Some(zero.min(latest))
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

    fn wakes(ns: &str, app: &str, outcome: &str, value: f64) -> Sample {
        let labels = [("namespace", ns), ("wasmapp", app), ("outcome", outcome)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Sample { name: ACTIVATOR_WAKES.into(), labels, value }
    }

    fn pod_started(d: &Demand, pod: &str, at: Instant) {
        d.set_pod_starts(HashMap::from([(("apps".to_string(), pod.to_string()), at)]));
    }

    #[test]
    fn a_new_pods_first_requests_count() {
        // The real-cluster case: the app was woken, its new pod served 3 requests before the first scrape.
        let d = Demand::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(4);
        pod_started(&d, "p-new", t0);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p-new", 3.0)], t1);
        // The counter started at 0 at the pod's start, but the increase is spread over at least 5 s.
        assert_eq!(d.app(&hello(), t1).requests_per_second, 3.0 / 5.0);
        let t2 = t1 + Duration::from_secs(5);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p-new", 3.0)], t2);
        assert!(d.app(&hello(), t2).requests_per_second > 0.0, "the pod just served: not idle");
    }

    #[test]
    fn an_old_series_seen_first_after_a_restart_is_only_a_baseline() {
        // The operator restarted: a pod that started hours ago shows its lifetime total, which is not demand.
        let d = Demand::default();
        let t0 = Instant::now() + Duration::from_secs(7200);
        pod_started(&d, "p-old", t0 - Duration::from_secs(3600));
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p-old", 50_000.0)], t0);
        assert_eq!(d.app(&hello(), t0).requests_per_second, 0.0);
        // Without any start time known (a pod outside the listing), the same.
        let d = Demand::default();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p-x", 50_000.0)], t0);
        assert_eq!(d.app(&hello(), t0).requests_per_second, 0.0);
    }

    #[test]
    fn a_series_missing_from_the_previous_scrape_of_its_target_started_at_zero() {
        // A new container on a node already scraped (no start time known): it was not there 5 s ago.
        let d = Demand::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "other", "p1", 10.0)], t0);
        d.record(
            "node-a",
            &[sample(REQUESTS_TOTAL, "apps", "other", "p1", 10.0), sample(REQUESTS_TOTAL, "apps", "hello", "p2", 4.0)],
            t1,
        );
        assert_eq!(d.app(&hello(), t1).requests_per_second, 4.0 / 5.0);
        // A target last scraped longer ago than the window tells nothing: baseline.
        let d = Demand::new(Duration::from_secs(60));
        d.record("node-a", &[], t0);
        let late = t0 + Duration::from_secs(61);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p2", 4.0)], late);
        assert_eq!(d.app(&hello(), late).requests_per_second, 0.0);
    }

    #[test]
    fn a_wake_keeps_the_app_above_zero_for_the_window() {
        // The activator woke the app and served the held request between two scrapes: the held gauge was never
        // seen, but the wake counter is new on a scraped activator.
        let d = Demand::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.record("operator-1", &[], t0);
        let t1 = t0 + Duration::from_secs(5);
        d.record("operator-1", &[wakes("apps", "hello", "scaled", 1.0)], t1);
        for after in [0, 20, 50] {
            let t = t1 + Duration::from_secs(after);
            d.record("operator-1", &[wakes("apps", "hello", "scaled", 1.0)], t);
            assert!(d.app(&hello(), t).requests_per_second > 0.0, "{after}s after the wake");
        }
        // Past the window, with nothing served, the app is idle again.
        let t = t1 + Duration::from_secs(61);
        d.record("operator-1", &[wakes("apps", "hello", "scaled", 1.0)], t);
        assert_eq!(d.app(&hello(), t).requests_per_second, 0.0);
    }

    #[test]
    fn a_served_request_keeps_the_app_above_zero_for_the_window() {
        let d = Demand::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 7.0)], t0);
        let t1 = t0 + Duration::from_secs(5);
        d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 8.0)], t1);
        for after in (5..=55).step_by(5) {
            let t = t1 + Duration::from_secs(after);
            d.record("node-a", &[sample(REQUESTS_TOTAL, "apps", "hello", "p1", 8.0)], t);
            assert!(d.app(&hello(), t).requests_per_second > 0.0, "{after}s after the request was counted");
        }
    }

    #[test]
    fn a_local_wake_counts_before_any_scrape_shows_it() {
        let d = Demand::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(d.app(&hello(), t0).requests_per_second, 0.0);
        d.note_local_wake(&hello(), t0);
        assert_eq!(d.app(&hello(), t0).requests_per_second, 1.0 / 60.0);
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(59)).requests_per_second, 1.0 / 60.0);
        assert!(d.apps(t0).contains_key(&hello()));
        assert_eq!(d.app(&hello(), t0 + Duration::from_secs(61)).requests_per_second, 0.0);
        assert_eq!(d.app(&AppKey::new("apps", "other"), t0).requests_per_second, 0.0);
    }

    #[test]
    fn held_requests_count_while_they_wait() {
        let d = Demand::default();
        let t0 = Instant::now();
        d.record("operator-1", &[held("apps", "hello", 2.0)], t0);
        let got = d.app(&hello(), t0);
        assert_eq!(got, AppDemand { requests_per_second: 2.0, in_flight: 2.0 });
    }
}
