//! Leadership around the controller: elect, reconcile while leading, and on stop hand the lease over.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};

use crate::leader::LeaderElector;

use super::stop::stopped;

/// What the sequence needs of an elector; a seam so tests script the election.
pub trait Leadership {
    /// Wait until this replica leads.
    fn acquire(&self) -> impl Future<Output = ()> + Send;
    /// Keep leading; resolves when leadership is lost.
    fn hold(&self) -> impl Future<Output = ()> + Send;
    /// Give leadership up so another replica takes over at once.
    fn release(&self) -> impl Future<Output = ()> + Send;
}

impl Leadership for LeaderElector {
    fn acquire(&self) -> impl Future<Output = ()> + Send {
        LeaderElector::acquire(self)
    }

    fn hold(&self) -> impl Future<Output = ()> + Send {
        LeaderElector::hold(self)
    }

    fn release(&self) -> impl Future<Output = ()> + Send {
        LeaderElector::release(self)
    }
}

/// Resolves when the controller must stop (the form `controller::run` takes).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Why the controller stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The stop flag was raised (SIGTERM, SIGINT).
    Stopped,
    /// Another replica leads now.
    LeaseLost,
}

/// Wait for `stop`, or for `hold` to end when there is one (leadership lost).
pub async fn until_stopped(stop: impl Future<Output = ()>, hold: Option<impl Future<Output = ()>>) -> StopReason {
    let hold = async move {
        match hold {
            Some(hold) => hold.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop => StopReason::Stopped,
        () = hold => {
            tracing::error!("leadership lost");
            StopReason::LeaseLost
        },
    }
}

/// Wait for leadership (when `leadership` is given), run `controller` until the stop flag is raised or the lease
/// is lost, then release the lease; losing it is an error, so the process exits non-zero and restarts as a
/// candidate.
pub async fn lead<L, C, F>(
    leadership: Option<&L>,
    identity: &str,
    stop: &watch::Receiver<bool>,
    controller: C,
) -> anyhow::Result<()>
where
    L: Leadership,
    C: FnOnce(Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(leadership) = leadership {
        tracing::info!(identity, "waiting for leadership");
        tokio::select! {
            () = leadership.acquire() => tracing::info!(identity, "leading"),
            () = stopped(stop) => return Ok(()),
        }
    }

    let (tx, rx) = oneshot::channel::<()>();
    let controller = tokio::spawn(controller(Box::pin(async move {
        let _ = rx.await;
    })));
    let reason = until_stopped(stopped(stop), leadership.map(Leadership::hold)).await;
    let _ = tx.send(());
    controller.await.context("controller task")?;
    match reason {
        StopReason::Stopped => {
            if let Some(leadership) = leadership {
                leadership.release().await;
            }
            tracing::info!("stopped");
            Ok(())
        }
        StopReason::LeaseLost => anyhow::bail!("lost the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// An election the test scripts: whether leadership comes, whether it is lost, and what was released.
    #[derive(Default)]
    struct Scripted {
        elected: bool,
        lost: bool,
        released: AtomicBool,
    }

    impl Leadership for Scripted {
        fn acquire(&self) -> impl Future<Output = ()> + Send {
            let elected = self.elected;
            async move {
                if !elected {
                    std::future::pending::<()>().await;
                }
            }
        }

        fn hold(&self) -> impl Future<Output = ()> + Send {
            let lost = self.lost;
            async move {
                if !lost {
                    std::future::pending::<()>().await;
                }
            }
        }

        fn release(&self) -> impl Future<Output = ()> + Send {
            self.released.store(true, Ordering::SeqCst);
            std::future::ready(())
        }
    }

    /// What the controller went through.
    #[derive(Default)]
    struct Ran {
        started: AtomicBool,
        shut_down: AtomicBool,
    }

    /// A controller that records its start and its shutdown, and raises the stop flag itself when `sigterm`.
    fn controller(
        ran: &Arc<Ran>,
        sigterm: Option<watch::Sender<bool>>,
    ) -> impl FnOnce(Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let ran = ran.clone();
        move |shutdown| {
            Box::pin(async move {
                ran.started.store(true, Ordering::SeqCst);
                if let Some(sigterm) = sigterm {
                    let _ = sigterm.send(true);
                }
                shutdown.await;
                ran.shut_down.store(true, Ordering::SeqCst);
            })
        }
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(5), f).await {
            Ok(t) => t,
            Err(_) => panic!("the sequence did not end"),
        }
    }

    #[tokio::test]
    async fn stop_while_waiting_for_leadership_never_starts_the_controller() -> anyhow::Result<()> {
        let (_tx, rx) = watch::channel(true);
        let election = Scripted::default();
        let ran = Arc::new(Ran::default());
        within(lead(Some(&election), "op-0", &rx, controller(&ran, None))).await?;
        assert!(!ran.started.load(Ordering::SeqCst));
        assert!(!election.released.load(Ordering::SeqCst), "released a lease it never held");
        Ok(())
    }

    #[tokio::test]
    async fn stop_while_leading_shuts_the_controller_down_and_releases() -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let election = Scripted { elected: true, ..Scripted::default() };
        let ran = Arc::new(Ran::default());
        within(lead(Some(&election), "op-0", &rx, controller(&ran, Some(tx)))).await?;
        assert!(ran.started.load(Ordering::SeqCst) && ran.shut_down.load(Ordering::SeqCst));
        assert!(election.released.load(Ordering::SeqCst));
        Ok(())
    }

    #[tokio::test]
    async fn losing_the_lease_stops_the_controller_with_an_error() {
        let (_tx, rx) = watch::channel(false);
        let election = Scripted { elected: true, lost: true, ..Scripted::default() };
        let ran = Arc::new(Ran::default());
        let result = within(lead(Some(&election), "op-0", &rx, controller(&ran, None))).await;
        assert!(result.is_err_and(|e| e.to_string() == "lost the leader lease"));
        assert!(ran.shut_down.load(Ordering::SeqCst));
        assert!(!election.released.load(Ordering::SeqCst), "released a lease another replica holds");
    }

    #[tokio::test]
    async fn without_election_the_controller_runs_until_stopped() -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let ran = Arc::new(Ran::default());
        within(lead(None::<&Scripted>, "op-0", &rx, controller(&ran, Some(tx)))).await?;
        assert!(ran.started.load(Ordering::SeqCst) && ran.shut_down.load(Ordering::SeqCst));
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn no_hold_waits_for_the_stop_only() {
        let stop = tokio::time::sleep(Duration::from_secs(3600));
        assert_eq!(until_stopped(stop, None::<std::future::Pending<()>>).await, StopReason::Stopped);
        let lost = until_stopped(std::future::pending(), Some(tokio::time::sleep(Duration::from_secs(1)))).await;
        assert_eq!(lost, StopReason::LeaseLost);
    }
}
