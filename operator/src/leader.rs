//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica reconciles.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease (`POD_NAMESPACE`, else `default`).
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a holder keeps the lease without renewing it.
    pub lease_duration: Duration,
    /// How often the holder renews, and a candidate retries.
    pub retry_period: Duration,
}

/// What to do with a Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decide from the Lease, our identity and the time.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match spec.renew_time {
        Some(MicroTime(renewed)) => renewed + duration < now,
        None => true,
    };
    if holder.is_empty() || expired {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

/// Lease-based elector.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector using `client`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One election round: true when this replica holds the lease afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let result = match decide(current.as_ref(), &self.config.identity, now) {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver => {
                let mut lease = current.unwrap_or_default();
                let old = lease.spec.clone().unwrap_or_default();
                let renew = old.holder_identity.as_deref() == Some(&self.config.identity);
                let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!renew);
                let acquired = if renew { old.acquire_time } else { None };
                lease.spec = Some(self.spec(now, acquired, transitions));
                // Why replace: the resourceVersion makes two candidates' writes conflict instead of both winning.
                self.api.replace(&self.config.name, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election round failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renew until the lease is lost (not renewed for a whole lease duration); then return.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_lead().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the lease failed");
                    if last_renewed.elapsed() >= self.config.lease_duration {
                        return;
                    }
                }
            }
        }
    }

    /// Give the lease up so another replica takes over at once (on shutdown).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let ours =
            lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.config.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        if let Err(e) = self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "releasing the lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(decide(Some(&lease(Some("me"), 1, 15, now)), "me", now), Decision::Renew);
        assert_eq!(
            decide(Some(&lease(Some("other"), 1, 15, now)), "me", now),
            Decision::Follow { holder: "other".into() }
        );
        assert_eq!(decide(Some(&lease(Some("other"), 16, 15, now)), "me", now), Decision::TakeOver);
        assert_eq!(decide(Some(&lease(None, 1, 15, now)), "me", now), Decision::TakeOver);
    }
}
