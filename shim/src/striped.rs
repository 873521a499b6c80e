//! Counters that every request on every core updates, striped so that the cores do not share them.
//!
//! A wasi:http container's requests run on all of the daemon's threads at once. One `AtomicU64` that each
//! of them writes is one cache line that moves between cores on every write, several times per request.
//! Here each thread writes a line of its own, and a reader (a scrape, a `stats` call: rare) sums the lines.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// At most this many lines (1 KiB) per counter, so that a container on a large node stays small; past it,
/// threads share lines round-robin (a few threads per line instead of all of them).
const MAX_STRIPES: usize = 16;

/// A sum that many threads add to and subtract from: a counter, or a gauge whose ups and downs may land on
/// different threads' lines (the wrapping sum over all lines is still exact).
#[derive(Debug)]
pub struct StripedU64 {
    lines: Box<[Line]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

impl Default for StripedU64 {
    fn default() -> Self {
        Self { lines: (0..stripe_count()).map(|_| Line::default()).collect() }
    }
}

impl StripedU64 {
    /// Adds `n` (wrapping).
    pub fn add(&self, n: u64) {
        self.local().fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (wrapping: another thread's line may hold the matching add).
    pub fn sub(&self, n: u64) {
        self.local().fetch_sub(n, Ordering::Relaxed);
    }

    /// The total of every add and subtract so far.
    pub fn get(&self) -> u64 {
        self.lines.iter().fold(0u64, |sum, line| sum.wrapping_add(line.0.load(Ordering::Relaxed)))
    }

    fn local(&self) -> &AtomicU64 {
        &self.lines[thread_index() % self.lines.len()].0
    }
}

/// One line per core the daemon may run on (tokio runs a worker per core), at most [`MAX_STRIPES`].
fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_STRIPES))
}

/// A number per thread, given out in turn as threads first ask: the runtime's workers get consecutive
/// numbers, so distinct lines.
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_exactly() {
        let counter = Arc::new(StripedU64::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(3)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 24_000);
    }

    #[test]
    fn a_gauge_raised_on_one_thread_and_lowered_on_another_reads_right() {
        let gauge = Arc::new(StripedU64::default());
        gauge.add(2);
        let g = gauge.clone();
        std::thread::spawn(move || g.sub(1)).join().unwrap();
        assert_eq!(gauge.get(), 1);
        gauge.sub(1);
        assert_eq!(gauge.get(), 0);
    }
}
