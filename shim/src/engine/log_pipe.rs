//! Guest stdout/stderr into the container's log without blocking the daemon.
//!
//! The guest writes into a bounded in-memory buffer; one task per stream drains it into the container's
//! FIFO. A slow or absent reader makes the guest wait (as a process blocks on a full pipe) but never
//! blocks a daemon thread that other pods share.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes a stream may hold before the guest has to wait for the reader.
const BUFFER_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: VecDeque<u8>,
    closed: bool,
    waiting_writers: Vec<Waker>,
}

struct Shared {
    buffer: Mutex<Buffer>,
    data: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A poisoned lock only means a writer panicked mid-append; the bytes are still usable.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The guest's end of a log stream: handed to WASI as stdout or stderr.
#[derive(Clone)]
pub struct LogPipe {
    shared: Arc<Shared>,
}

/// The host's end: closes the stream and waits for the drain. Dropped without [`LogDrain::finish`] (its
/// container failed before it ran), it still closes the stream, so the drain task ends and lets go of the
/// container's log FIFO.
pub struct LogDrain {
    shared: Arc<Shared>,
    /// Taken by `finish`.
    task: Option<JoinHandle<()>>,
}

impl LogPipe {
    /// A pipe draining into `sink`, or discarding when there is none.
    pub fn new(sink: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>) -> (LogPipe, LogDrain) {
        let shared = Arc::new(Shared { buffer: Mutex::default(), data: Notify::new() });
        let task = tokio::spawn(drain(shared.clone(), sink));
        (LogPipe { shared: shared.clone() }, LogDrain { shared, task: Some(task) })
    }
}

async fn drain(shared: Arc<Shared>, mut sink: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>) {
    loop {
        let notified = shared.data.notified();
        let (chunk, closed) = {
            let mut buf = shared.lock();
            let chunk: Vec<u8> = buf.bytes.drain(..).collect();
            for w in buf.waiting_writers.drain(..) {
                w.wake();
            }
            (chunk, buf.closed)
        };
        if !chunk.is_empty() {
            if let Some(out) = sink.as_mut() {
                if let Err(e) = out.write_all(&chunk).await {
                    tracing::warn!(error = %e, "container log stream failed; further output is discarded");
                    sink = None;
                }
            }
            continue;
        }
        if closed {
            if let Some(mut out) = sink {
                let _ = out.flush().await;
            }
            return;
        }
        notified.await;
    }
}

impl LogDrain {
    /// Closes the stream and waits up to `grace` for buffered output to reach the reader.
    pub async fn finish(mut self, grace: Duration) {
        self.close();
        let Some(task) = self.task.take() else { return };
        let abort = task.abort_handle();
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("container log reader did not take the last output in time; dropping it");
            abort.abort();
        }
    }
}

impl LogDrain {
    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.data.notify_one();
    }
}

impl Drop for LogDrain {
    fn drop(&mut self) {
        self.close();
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut buf = self.shared.lock();
        if buf.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = BUFFER_BYTES.saturating_sub(buf.bytes.len());
        if room == 0 {
            buf.waiting_writers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        buf.bytes.extend(&data[..n]);
        drop(buf);
        self.shared.data.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Accepted bytes are the drain's to deliver; waiting for the reader here would let one slow
        // `kubectl logs` stall the guest on every line.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn everything_written_reaches_the_sink_before_finish_returns() {
        let (tx, mut rx) = tokio::io::duplex(1 << 20);
        let (mut pipe, drain) = LogPipe::new(Some(Box::new(tx)));
        for i in 0..1000 {
            pipe.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        drain.finish(Duration::from_secs(5)).await;
        let mut out = String::new();
        rx.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.lines().count(), 1000);
        assert!(out.ends_with("line 999\n"));
    }

    #[tokio::test]
    async fn a_reader_that_never_reads_cannot_hang_finish() {
        let (tx, _rx) = tokio::io::duplex(16);
        let (mut pipe, drain) = LogPipe::new(Some(Box::new(tx)));
        pipe.write_all(&[b'x'; 4096]).await.unwrap();
        let started = std::time::Instant::now();
        drain.finish(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_drain_dropped_without_finish_still_ends_and_releases_its_sink() {
        let (tx, mut rx) = tokio::io::duplex(1 << 10);
        let (mut pipe, drain) = LogPipe::new(Some(Box::new(tx)));
        pipe.write_all(b"before the failure\n").await.unwrap();
        drop(drain);
        // The reader sees the output and then end of file: the task ended and dropped the sink.
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), rx.read_to_string(&mut out)).await.unwrap().unwrap();
        assert_eq!(out, "before the failure\n");
        assert!(pipe.write_all(b"late").await.is_err());
    }

    #[tokio::test]
    async fn writes_after_close_fail() {
        let (mut pipe, drain) = LogPipe::new(None);
        drain.finish(Duration::from_secs(1)).await;
        assert!(pipe.write_all(b"late").await.is_err());
    }
}
