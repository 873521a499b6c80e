//! CPU time of a guest, measured per poll of its future.
//!
//! Every instance runs on the daemon's shared tokio threads, so process or thread CPU clocks alone cannot
//! attribute time to a container; reading the thread clock around each poll can.
//!
//! The thread CPU clock is a system call (Linux has no vDSO for it, and it takes the run queue's lock), and
//! a wasi:http request is polled a few times, so reading it around every poll was a measurable share of a
//! request's cost (2.3 reads per request in `strace -c` of the daemon under `wasmkube-bench http`). A poll
//! never blocks (the guest yields at host I/O and at every epoch tick), so a poll's wall time is its CPU
//! time unless the kernel ran something else on the thread meanwhile — and then the wall time is long,
//! since another task got a time slice. So:
//! - a poll shorter than [`EXACT_ABOVE`] (wall time, vDSO, no system call) counts its wall time, at most
//!   that much off and only when an interrupt hit it;
//! - a longer poll counts `min(wall time, thread CPU now − the thread's last reading)`. Both bound the
//!   poll's CPU time from above; the reading is at most [`READING_MAX_AGE`] old when the poll starts (it is
//!   taken again when older), so a poll the kernel preempted counts at most that much of the thread's
//!   earlier work. The clock is then read about once per thread per [`READING_MAX_AGE`] plus once per long
//!   poll, instead of once per poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Polls whose wall time reaches this are measured with the thread CPU clock.
const EXACT_ABOVE: Duration = Duration::from_micros(100);
/// The oldest thread CPU reading a poll starts from.
const READING_MAX_AGE: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's last CPU clock reading and when it was taken.
    static LAST_READING: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

use crate::runtime::Usage;

/// Wraps a future and adds the CPU time of each of its polls to the container's [`Usage`].
pub struct CpuMetered<'a, F> {
    inner: Pin<Box<F>>,
    usage: &'a Usage,
}

impl<'a, F: Future> CpuMetered<'a, F> {
    /// Meters `inner` into `usage`.
    pub fn new(inner: F, usage: &'a Usage) -> Self {
        Self { inner: Box::pin(inner), usage }
    }
}

impl<F: Future> Future for CpuMetered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let wall_before = Instant::now();
        let cpu_before = recent_reading(wall_before);
        let out = self.inner.as_mut().poll(cx);
        let wall_after = Instant::now();
        let wall = wall_after.saturating_duration_since(wall_before).as_nanos() as u64;
        let spent = if wall < EXACT_ABOVE.as_nanos() as u64 {
            wall
        } else {
            let cpu_after = thread_cpu_nanos();
            LAST_READING.set(Some((wall_after, cpu_after)));
            wall.min(cpu_after.saturating_sub(cpu_before))
        };
        self.usage.add_cpu_nanos(spent);
        out
    }
}

/// This thread's CPU time at most [`READING_MAX_AGE`] before `now`.
fn recent_reading(now: Instant) -> u64 {
    match LAST_READING.get() {
        Some((at, cpu)) if now.saturating_duration_since(at) < READING_MAX_AGE => cpu,
        _ => {
            let cpu = thread_cpu_nanos();
            LAST_READING.set(Some((now, cpu)));
            cpu
        }
    }
}

fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the kernel to fill; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_polls_are_counted() {
        let usage = Usage::default();
        CpuMetered::new(async { burn_cpu(20_000_000) }, &usage).await;
        assert!(usage.cpu_nanos() >= 20_000_000);
    }

    #[tokio::test]
    async fn a_long_poll_off_the_cpu_counts_only_its_cpu_time() {
        let usage = Usage::default();
        // 50 ms of wall time in which the thread does not run: the CPU clock, not the wall clock, decides.
        assert_a_sleeping_poll_counts_little(&usage).await;
    }

    #[tokio::test]
    async fn a_long_poll_off_the_cpu_does_not_count_the_threads_earlier_work() {
        let usage = Usage::default();
        // A reading, then 30 ms of unmetered CPU work on this thread, then a poll that sleeps: the poll must
        // start from a fresh reading, not charge the earlier work to the guest.
        recent_reading(Instant::now());
        burn_cpu(30_000_000);
        assert_a_sleeping_poll_counts_little(&usage).await;
    }

    /// Spends `nanos` of this thread's CPU (not wall) time, so that a loaded machine cannot fail a test.
    fn burn_cpu(nanos: u64) {
        let start = thread_cpu_nanos();
        let mut x = 0u64;
        while thread_cpu_nanos() - start < nanos {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    /// A poll that sleeps 50 ms adds well under that to `usage`.
    async fn assert_a_sleeping_poll_counts_little(usage: &Usage) {
        let sleeping = async { std::thread::sleep(Duration::from_millis(50)) };
        CpuMetered::new(sleeping, usage).await;
        let counted = usage.cpu_nanos();
        assert!(counted < 25_000_000, "counted {counted} ns for a poll that slept 50 ms");
    }

    #[tokio::test]
    async fn short_polls_are_counted_too() {
        let usage = Usage::default();
        let mut polls = 0;
        // Many polls each well under the exact threshold: every one adds its (wall) time.
        let yielding = std::future::poll_fn(|cx| {
            polls += 1;
            if polls == 1000 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        CpuMetered::new(yielding, &usage).await;
        assert!(usage.cpu_nanos() > 0);
    }
}
