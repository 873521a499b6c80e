//! Request deadlines and container kills without a tokio timer per request.
//!
//! A `tokio::time::timeout` per wasi:http request cost more than the rest of the shim's own work per request:
//! every timer is registered and cancelled under the runtime's one time-driver lock, which the workers then
//! contend for (parking_lot spins, then `sched_yield`), and a timer earlier than the driver's next wake-up
//! unparks the driver through its eventfd. `strace -c` of the node daemon under `wasmkube-bench http` counted
//! 0.3 eventfd writes and 0.2 `sched_yield`s per request that the reference host did not make
//! (docs/shim.md, "Serving wasi:http").
//!
//! Instead, the epoch thread (a tick every 10 ms anyway) publishes a coarse node clock every [`CLOCK_TICK`]; a
//! request waits on that watch channel, a sharded notify list, for its deadline or its container's kill. A
//! request therefore ends at most one tick after its deadline, and a killed container's guests at once
//! ([`NodeClock::nudge`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often the node clock advances: how late past its deadline a request may end.
pub const CLOCK_TICK: Duration = Duration::from_millis(250);

/// The node's coarse clock, which every request of every container waits on.
#[derive(Clone)]
pub struct NodeClock {
    tx: Arc<watch::Sender<Instant>>,
}

impl Default for NodeClock {
    fn default() -> Self {
        Self { tx: Arc::new(watch::Sender::new(Instant::now())) }
    }
}

impl NodeClock {
    /// Advances the clock to now, waking every waiting request to check its deadline (and kill).
    pub fn nudge(&self) {
        self.tx.send_replace(Instant::now());
    }

    /// Runs `guest` until it ends, `deadline` passes or `killed` is turned (checked at every tick and nudge).
    pub async fn guard<F: Future>(&self, guest: F, deadline: Instant, killed: &KillSwitch) -> Guarded<F::Output> {
        if killed.is_turned() {
            return Guarded::Killed;
        }
        // Most guests end in their first poll: only one that does not waits on the clock, so the others never
        // touch its shared waiter list.
        let mut guest = std::pin::pin!(guest);
        if let std::task::Poll::Ready(out) = futures::poll!(guest.as_mut()) {
            return Guarded::Done(out);
        }
        let mut clock = self.tx.subscribe();
        tokio::select! {
            biased;
            out = guest => Guarded::Done(out),
            _ = clock.wait_for(|now| *now >= deadline || killed.is_turned()) => {
                if killed.is_turned() { Guarded::Killed } else { Guarded::TimedOut }
            }
        }
    }
}

/// How a guarded run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Guarded<T> {
    /// The guest ended by itself.
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// Its container was killed first.
    Killed,
}

/// A container's kill switch: set once when the container ends, so its guests still running stop.
#[derive(Default)]
pub struct KillSwitch(AtomicBool);

impl KillSwitch {
    /// Turns the switch and wakes every waiting guest to see it.
    pub fn kill(&self, clock: &NodeClock) {
        self.0.store(true, Ordering::Relaxed);
        clock.nudge();
    }

    fn is_turned(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_guest_that_ends_in_time_gives_its_output() {
        let clock = NodeClock::default();
        let out = clock.guard(async { 7 }, Instant::now() + Duration::from_secs(60), &KillSwitch::default()).await;
        assert_eq!(out, Guarded::Done(7));
    }

    #[tokio::test]
    async fn a_stuck_guest_times_out_at_the_first_tick_past_its_deadline() {
        let clock = NodeClock::default();
        let ticker = clock.clone();
        let ticks = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ticker.nudge();
            }
        });
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let out = clock.guard(std::future::pending::<()>(), deadline, &KillSwitch::default()).await;
        assert_eq!(out, Guarded::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        ticks.abort();
    }

    #[tokio::test]
    async fn a_kill_ends_a_stuck_guest_without_waiting_for_a_tick() {
        let clock = NodeClock::default();
        let switch = Arc::new(KillSwitch::default());
        let (c, s) = (clock.clone(), switch.clone());
        let guarded = tokio::spawn(async move {
            c.guard(std::future::pending::<()>(), Instant::now() + Duration::from_secs(600), &s).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        switch.kill(&clock);
        let out = tokio::time::timeout(Duration::from_secs(10), guarded).await.unwrap().unwrap();
        assert_eq!(out, Guarded::Killed);
    }

    #[tokio::test]
    async fn an_already_killed_container_does_not_run_its_guest_to_the_end() {
        let clock = NodeClock::default();
        let switch = KillSwitch::default();
        switch.kill(&clock);
        let out = clock.guard(std::future::pending::<()>(), Instant::now() + Duration::from_secs(600), &switch);
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), out).await.unwrap(), Guarded::Killed);
    }
}
