//! What both kinds of workload share: the container's log streams.

use std::time::Duration;

use super::log_pipe::{LogDrain, LogPipe};
use crate::runtime::Stdio;

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
