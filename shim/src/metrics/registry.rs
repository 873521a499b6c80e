//! The node's request series: one entry per serving container, counted with atomics on the request
//! path; the map's lock is taken only when a container comes or goes and when the endpoint is scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use http::HeaderMap;

use super::labels::ContainerLabels;

/// `User-Agent` prefix of the kubelet's HTTP probes.
const KUBE_PROBE_AGENT: &str = "kube-probe/";

/// Whether a request is a kubelet probe: served as usual, but not demand, so not counted (readiness
/// probes would otherwise keep an idle app scaled up).
pub fn is_kubelet_probe(headers: &HeaderMap) -> bool {
    headers.get(http::header::USER_AGENT).is_some_and(|ua| ua.as_bytes().starts_with(KUBE_PROBE_AGENT.as_bytes()))
}

/// The counters of one container.
#[derive(Debug)]
pub struct ContainerSeries {
    labels: ContainerLabels,
    requests_total: AtomicU64,
    in_flight: AtomicU64,
}

impl ContainerSeries {
    /// Counts a request that is not a kubelet probe and puts it in flight; when it did (true), [`Self::end`]
    /// must follow once the request is done. The caller holds that obligation in a guard of its own, which
    /// already holds the container's state, so a request costs no handle on the series.
    pub fn start(&self, headers: &HeaderMap) -> bool {
        if is_kubelet_probe(headers) {
            return false;
        }
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A request [`Self::start`] counted is done.
    pub fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn sample(&self) -> Sample {
        Sample {
            labels: self.labels.clone(),
            requests_total: self.requests_total.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// One container's values at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Whose values these are.
    pub labels: ContainerLabels,
    /// Requests counted since the container started serving.
    pub requests_total: u64,
    /// Requests being handled now.
    pub in_flight: u64,
}

type Entries = HashMap<String, Arc<ContainerSeries>>;

/// Every serving container's series on this node.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    entries: Arc<Mutex<Entries>>,
}

impl HttpMetrics {
    /// Adds container `id`'s series; they go away when the returned registration drops.
    pub fn register(&self, id: &str, labels: ContainerLabels) -> Registration {
        let series =
            Arc::new(ContainerSeries { labels, requests_total: AtomicU64::new(0), in_flight: AtomicU64::new(0) });
        lock(&self.entries).insert(id.to_string(), series.clone());
        Registration { id: id.to_string(), series, entries: Arc::downgrade(&self.entries) }
    }

    /// The values of every registered container, ordered by their labels.
    pub fn samples(&self) -> Vec<Sample> {
        let mut samples: Vec<Sample> = lock(&self.entries).values().map(|s| s.sample()).collect();
        samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        samples
    }
}

/// A container's place in [`HttpMetrics`]: held as long as its HTTP server lives.
#[derive(Debug)]
pub struct Registration {
    id: String,
    series: Arc<ContainerSeries>,
    entries: Weak<Mutex<Entries>>,
}

impl Registration {
    /// The counters the container's requests update.
    pub fn series(&self) -> Arc<ContainerSeries> {
        self.series.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(entries) = self.entries.upgrade() else { return };
        let mut entries = lock(&entries);
        // Only our own entry: a later registration under the same id is not ours to remove.
        if entries.get(&self.id).is_some_and(|s| Arc::ptr_eq(s, &self.series)) {
            entries.remove(&self.id);
        }
    }
}

/// Counters stay consistent whatever a panicking holder did, so a poisoned lock is still usable.
fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    entries.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(container: &str) -> ContainerLabels {
        ContainerLabels { container: container.into(), ..Default::default() }
    }

    fn agent(ua: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, ua.parse().unwrap());
        headers
    }

    #[test]
    fn only_kube_probe_agents_are_probes() {
        assert!(is_kubelet_probe(&agent("kube-probe/1.33")));
        assert!(is_kubelet_probe(&agent("kube-probe/1.30+k3s1")));
        assert!(!is_kubelet_probe(&agent("curl/8.5.0")));
        assert!(!is_kubelet_probe(&agent("my-kube-probe/1.0")));
        assert!(!is_kubelet_probe(&HeaderMap::new()));
    }

    #[test]
    fn requests_count_and_stay_in_flight_until_they_end() {
        let metrics = HttpMetrics::default();
        let reg = metrics.register("c1", labels("app"));
        let series = reg.series();
        assert!(series.start(&agent("curl/8")));
        assert!(series.start(&HeaderMap::new()));
        assert!(!series.start(&agent("kube-probe/1.33")), "probes are not counted");
        let sample = |m: &HttpMetrics| m.samples().first().map(|s| (s.requests_total, s.in_flight));
        assert_eq!(sample(&metrics), Some((2, 2)));
        series.end();
        assert_eq!(sample(&metrics), Some((2, 1)));
        series.end();
        assert_eq!(sample(&metrics), Some((2, 0)));
    }

    #[test]
    fn series_go_away_with_their_registration() {
        let metrics = HttpMetrics::default();
        let a = metrics.register("a", labels("a"));
        let b = metrics.register("b", labels("b"));
        assert_eq!(metrics.samples().len(), 2);
        drop(a);
        let left: Vec<String> = metrics.samples().into_iter().map(|s| s.labels.container).collect();
        assert_eq!(left, ["b"]);
        drop(b);
        assert!(metrics.samples().is_empty());
    }

    #[test]
    fn a_stale_registration_does_not_remove_its_successor() {
        let metrics = HttpMetrics::default();
        let old = metrics.register("c1", labels("old"));
        let _new = metrics.register("c1", labels("new"));
        drop(old);
        let left: Vec<String> = metrics.samples().into_iter().map(|s| s.labels.container).collect();
        assert_eq!(left, ["new"]);
    }
}
