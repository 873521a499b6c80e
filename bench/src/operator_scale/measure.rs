//! What the benchmark reads off the operator and the API server: the reconcile-duration histogram, the audit log
//! of the operator's requests, the process's memory, and the machine's load.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// The reconcile-duration histogram's name in the operator's `/metrics`.
const RECONCILE_HISTOGRAM: &str = "wasmkube_operator_reconcile_duration_seconds";

/// A Prometheus histogram: cumulative counts at each upper bound (seconds), `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)` in ascending `le`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// The reconcile-duration histogram from the text of `/metrics`.
    pub fn reconcile_durations(metrics: &str) -> Result<Self> {
        let prefix = format!("{RECONCILE_HISTOGRAM}_bucket{{le=\"");
        let mut buckets = Vec::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else { continue };
            let (le, count) = rest.split_once("\"}").with_context(|| format!("bucket line {line:?}"))?;
            let le =
                if le == "+Inf" { f64::INFINITY } else { le.parse().with_context(|| format!("le in {line:?}"))? };
            let count = count.trim().parse().with_context(|| format!("count in {line:?}"))?;
            buckets.push((le, count));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        anyhow::ensure!(!buckets.is_empty(), "no {RECONCILE_HISTOGRAM} in the operator's metrics");
        Ok(Self { buckets })
    }

    /// The observations made since `earlier` (same buckets).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let before = earlier.buckets.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
                (le, n.saturating_sub(before))
            })
            .collect();
        Histogram { buckets }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; the largest finite bound when it falls in `+Inf`; `None` without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            if n as f64 >= rank && n > below {
                if le.is_infinite() {
                    return Some(lower * 1000.0);
                }
                let share = (rank - below as f64) / (n - below) as f64;
                return Some((lower + (le - lower) * share) * 1000.0);
            }
            if le.is_finite() {
                lower = le;
            }
            below = n;
        }
        Some(lower * 1000.0)
    }

    /// p50, p99 and the count, for the results.
    pub fn summary(&self) -> Quantiles {
        Quantiles { count: self.count(), p50_ms: self.quantile_ms(0.5), p99_ms: self.quantile_ms(0.99) }
    }
}

/// Quantiles of reconcile durations.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quantiles {
    /// Reconciles observed.
    pub count: u64,
    /// Median, ms (bucket-interpolated).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms (bucket-interpolated).
    pub p99_ms: Option<f64>,
}

/// The operator's requests as the audit log recorded them, by `verb resource[/subresource]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Requests {
    /// Requests that change something (create, update, patch, delete, deletecollection).
    pub writes: BTreeMap<String, u64>,
    /// Requests that only read (get, list, watch).
    pub reads: BTreeMap<String, u64>,
}

impl Requests {
    /// All writes.
    pub fn write_count(&self) -> u64 {
        self.writes.values().sum()
    }

    /// Writes other than the leader-election Lease's renewals (which a replica makes whatever the apps do).
    pub fn app_write_count(&self) -> u64 {
        self.writes.iter().filter(|(k, _)| !k.ends_with(" leases")).map(|(_, n)| n).sum()
    }

    /// All reads.
    pub fn read_count(&self) -> u64 {
        self.reads.values().sum()
    }
}

/// The audit log's size now: the offset that starts a window.
pub fn log_offset(log: &Path) -> Result<u64> {
    Ok(std::fs::metadata(log).with_context(|| format!("reading {}", log.display()))?.len())
}

/// The completed requests of the audit log between two offsets (JSON lines; a line cut by either offset is left out).
pub fn requests_between(log: &Path, from: u64, to: u64) -> Result<Requests> {
    let mut file = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    file.seek(SeekFrom::Start(from))?;
    let mut text = String::new();
    file.take(to.saturating_sub(from)).read_to_string(&mut text).context("reading the audit log")?;
    Ok(count_requests(&text))
}

/// Count the completed requests of audit-log lines; lines that are not whole events are skipped.
pub fn count_requests(text: &str) -> Requests {
    let mut requests = Requests::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or("?");
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or("-").to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let key = format!("{verb} {resource}");
        let map = if matches!(verb, "get" | "list" | "watch") { &mut requests.reads } else { &mut requests.writes };
        *map.entry(key).or_insert(0) += 1;
    }
    requests
}

/// Resident memory of a process: now and its peak, MiB.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Memory {
    /// VmRSS.
    pub rss_mib: f64,
    /// VmHWM: the largest RSS so far.
    pub peak_mib: f64,
    /// RssAnon: the heap and stacks, as opposed to the binary's pages (RssFile), which a bigger binary adds.
    pub anon_mib: f64,
}

/// The memory of process `pid` from `/proc`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the operator's status")?;
    let field = |name: &str| -> Result<f64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in status"))?;
        let kib: f64 = line.split_whitespace().nth(1).context("empty field")?.parse()?;
        Ok(kib / 1024.0)
    };
    Ok(Memory { rss_mib: field("VmRSS:")?, peak_mib: field("VmHWM:")?, anon_mib: field("RssAnon:")? })
}

/// The machine's 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Compiler processes running now (other builds on the machine skew every figure).
pub fn compilers_running() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| matches!(comm.trim(), "rustc" | "cc1" | "cc1plus" | "ld" | "go"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE wasmkube_operator_reconcile_duration_seconds histogram
wasmkube_operator_reconcile_duration_seconds_sum 1.5
wasmkube_operator_reconcile_duration_seconds_count 100
wasmkube_operator_reconcile_duration_seconds_bucket{le=\"0.01\"} 50
wasmkube_operator_reconcile_duration_seconds_bucket{le=\"0.05\"} 98
wasmkube_operator_reconcile_duration_seconds_bucket{le=\"0.1\"} 100
wasmkube_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 100
";

    #[test]
    fn quantiles_interpolate_inside_the_bucket() -> Result<()> {
        let h = Histogram::reconcile_durations(METRICS)?;
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(10.0));
        // Rank 99 is the first of the two observations between 50 and 100 ms: half way.
        let p99 = h.quantile_ms(0.99).unwrap_or_default();
        assert!((p99 - 75.0).abs() < 1e-9, "{p99}");
        let empty = h.since(&h);
        assert_eq!((empty.count(), empty.quantile_ms(0.5)), (0, None));
        Ok(())
    }

    #[test]
    fn a_quantile_beyond_the_last_bound_is_that_bound() -> Result<()> {
        let h = Histogram::reconcile_durations(&METRICS.replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 200"))?;
        assert_eq!(h.quantile_ms(0.99), Some(100.0));
        Ok(())
    }

    #[test]
    fn audit_lines_are_counted_by_verb_and_resource() {
        let log = r#"{"stage":"ResponseComplete","verb":"patch","objectRef":{"resource":"wasmapps","subresource":"status"}}
{"stage":"ResponseStarted","verb":"watch","objectRef":{"resource":"deployments"}}
{"stage":"ResponseComplete","verb":"get","objectRef":{"resource":"deployments"}}
{"stage":"ResponseComplete","verb":"update","objectRef":{"resource":"leases"}}
{"stage":"ResponseComplete","verb":"pat"#;
        let r = count_requests(log);
        assert_eq!(r.writes.get("patch wasmapps/status"), Some(&1));
        assert_eq!(r.reads.get("get deployments"), Some(&1));
        assert_eq!((r.write_count(), r.app_write_count(), r.read_count()), (2, 1, 1));
    }
}
