//! What both kinds of workload share: the container's log streams and how signals reach an instance.

use std::time::Duration;

use tokio::sync::watch;

use super::log_pipe::{LogDrain, LogPipe};
use crate::runtime::{Signal, Stdio};

/// How long buffered output may take to reach the log reader after the guest ended.
const LOG_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// The host's ends of a container's stdout and stderr.
pub struct LogDrains([LogDrain; 2]);

/// The guest's stdout and stderr pipes (cloned into every instance) and their drains into `stdio`.
pub fn open_logs(stdio: Stdio) -> (LogPipe, LogPipe, LogDrains) {
    let (stdout, stdout_drain) = LogPipe::new(stdio.stdout);
    let (stderr, stderr_drain) = LogPipe::new(stdio.stderr);
    (stdout, stderr, LogDrains([stdout_drain, stderr_drain]))
}

impl LogDrains {
    /// Closes both streams and waits (bounded) for their buffered output to reach the reader; called
    /// once no instance writes any more.
    pub async fn finish(self) {
        for drain in self.0 {
            drain.finish(LOG_FLUSH_GRACE).await;
        }
    }
}

/// Waits for a terminating signal. wasi:cli has no signal delivery, so any such signal ends the
/// instance at its next yield point (a host call or an epoch tick).
pub async fn next_signal(signals: &mut watch::Receiver<Option<Signal>>) -> Signal {
    loop {
        if let Some(signal) = *signals.borrow_and_update() {
            return signal;
        }
        if signals.changed().await.is_err() {
            // The task side is gone: nobody can observe this instance any more.
            return Signal::KILL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_sent_before_waiting_is_seen_and_a_dropped_sender_is_a_kill() {
        let (tx, mut rx) = watch::channel(None);
        tx.send_replace(Some(Signal::TERM));
        assert_eq!(next_signal(&mut rx).await, Signal::TERM);
        let (tx, mut rx) = watch::channel(None);
        drop(tx);
        assert_eq!(next_signal(&mut rx).await, Signal::KILL);
    }
}
