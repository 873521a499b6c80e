//! CPU time of a guest, measured per poll of its future.
//!
//! Every instance runs on the daemon's shared tokio threads, so process or thread CPU clocks alone cannot
//! attribute time to a container; reading the thread clock around each poll can.
//!
//! The thread CPU clock is a system call (Linux has no vDSO for it), and a wasi:http request is polled a
//! few times, so reading it twice per poll was a measurable share of a request's cost. A poll never
//! blocks (the guest yields at host I/O and at every epoch tick), so a poll's wall time is its CPU time
//! unless the kernel ran something else on the thread meanwhile — and then the wall time is long, since
//! another task got a time slice. So the clock is read at the start of every poll (one system call) and
//! at its end only when the wall time (vDSO, no system call) reached [`EXACT_ABOVE`]; shorter polls count
//! their wall time, which is at most that much off and only when an interrupt hit them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Polls whose wall time reaches this are measured with the thread CPU clock at both ends.
const EXACT_ABOVE: Duration = Duration::from_micros(100);

use crate::runtime::Usage;

/// Wraps a future and adds the CPU time of each of its polls to [`Usage::cpu_nanos`].
pub struct CpuMetered<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
}

impl<F: Future> CpuMetered<F> {
    /// Meters `inner` into `usage`.
    pub fn new(inner: F, usage: Arc<Usage>) -> Self {
        Self { inner: Box::pin(inner), usage }
    }
}

impl<F: Future> Future for CpuMetered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let cpu_before = thread_cpu_nanos();
        let wall_before = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        let wall = wall_before.elapsed();
        let spent =
            if wall < EXACT_ABOVE { wall.as_nanos() as u64 } else { thread_cpu_nanos().saturating_sub(cpu_before) };
        self.usage.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
        out
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
        let usage = Arc::new(Usage::default());
        // Burn 20 ms of this thread's CPU (not wall) time, so a loaded machine cannot fail the test.
        let busy = async {
            let start = thread_cpu_nanos();
            let mut x = 0u64;
            while thread_cpu_nanos() - start < 20_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        };
        CpuMetered::new(busy, usage.clone()).await;
        assert!(usage.cpu_nanos.load(Ordering::Relaxed) >= 20_000_000);
    }

    #[tokio::test]
    async fn a_long_poll_off_the_cpu_counts_only_its_cpu_time() {
        let usage = Arc::new(Usage::default());
        // 50 ms of wall time in which the thread does not run: the CPU clock, not the wall clock, decides.
        let sleeping = async { std::thread::sleep(Duration::from_millis(50)) };
        CpuMetered::new(sleeping, usage.clone()).await;
        let counted = usage.cpu_nanos.load(Ordering::Relaxed);
        assert!(counted < 25_000_000, "counted {counted} ns for a poll that slept 50 ms");
    }

    #[tokio::test]
    async fn short_polls_are_counted_too() {
        let usage = Arc::new(Usage::default());
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
        CpuMetered::new(yielding, usage.clone()).await;
        assert!(usage.cpu_nanos.load(Ordering::Relaxed) > 0);
    }
}
