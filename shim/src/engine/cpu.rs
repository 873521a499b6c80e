//! CPU time of a guest, measured per poll of its future.
//!
//! Every instance runs on the daemon's shared tokio threads, so process or thread CPU clocks alone cannot
//! attribute time to a container; reading the thread clock around each poll can.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

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
        let before = thread_cpu_nanos();
        let out = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_nanos().saturating_sub(before);
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
}
