//! The scrape loop: every interval, fetch each target's `/metrics` and feed the demand store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::parse::parse;
use super::store::{Demand, PodRef};
use super::DemandSettings;
use crate::error::message_chain;

/// Largest metrics page read from one target; a bigger one is an error, not a memory spike.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Why the targets could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("listing scrape targets: {what}")]
pub struct TargetsError {
    /// What was being listed.
    pub what: String,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where the metrics come from (the seam between the loop and Kubernetes).
#[async_trait]
pub trait Targets: Send + Sync {
    /// The URLs (`http://host:port/path`) to scrape now.
    async fn targets(&self) -> Result<Vec<String>, TargetsError>;

    /// When the pods seen by the last [`Targets::targets`] started, so that a new pod's first requests count
    /// (see [`Demand::record`]); none by default.
    fn pod_starts(&self) -> HashMap<PodRef, Instant> {
        HashMap::new()
    }
}

/// Why one target could not be scraped.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The URL is not `http://host:port/path`.
    #[error("invalid target URL {url}: {reason}")]
    Url {
        /// The target.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target did not answer within the timeout.
    #[error("scraping {url}: no answer within {timeout:?}")]
    Timeout {
        /// The target.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Connecting, sending the request or reading the answer failed.
    #[error("scraping {url}")]
    Http {
        /// The target.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The target answered with a status other than 200.
    #[error("scraping {url}: HTTP status {status}")]
    Status {
        /// The target.
        url: String,
        /// The status it answered.
        status: http::StatusCode,
    },
}

/// Scrape every `settings.scrape_interval` until `shutdown` resolves.
pub async fn run(
    targets: Arc<dyn Targets>,
    demand: Arc<Demand>,
    settings: DemandSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(settings.scrape_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = scrape_once(targets.as_ref(), &demand, &settings) => {}
        }
    }
}

/// One round: list the targets, fetch them concurrently (bounded) and record what answered.
/// Returns how many targets were scraped successfully.
pub async fn scrape_once(targets: &dyn Targets, demand: &Demand, settings: &DemandSettings) -> usize {
    let urls = match targets.targets().await {
        Ok(urls) => urls,
        Err(e) => {
            tracing::warn!(error = %message_chain(&e), "cannot list scrape targets; keeping the last samples");
            return 0;
        }
    };
    demand.set_pod_starts(targets.pod_starts());
    let timeout = settings.scrape_timeout;
    let authorization = settings.node_token.as_ref().map(|t| t.header_value());
    let authorization = authorization.as_deref();
    futures::stream::iter(urls)
        .map(|url| async move {
            let result = fetch(&url, timeout, authorization).await;
            (url, result)
        })
        .buffer_unordered(settings.scrape_concurrency.max(1))
        .filter_map(|(url, result)| async move {
            match result {
                Ok(text) => {
                    demand.record(&url, &parse(&text), Instant::now());
                    Some(())
                }
                Err(e) => {
                    tracing::warn!(error = %message_chain(&e), "scrape failed; keeping the target's last samples");
                    None
                }
            }
        })
        .count()
        .await
}

/// GET `url` (plain HTTP/1.1) with `authorization` when given and return the body as text, all within
/// `timeout`.
pub async fn fetch(url: &str, timeout: Duration, authorization: Option<&str>) -> Result<String, ScrapeError> {
    match tokio::time::timeout(timeout, fetch_inner(url, authorization)).await {
        Ok(result) => result,
        Err(_) => Err(ScrapeError::Timeout { url: url.to_string(), timeout }),
    }
}

async fn fetch_inner(url: &str, authorization: Option<&str>) -> Result<String, ScrapeError> {
    let bad_url = |reason: &str| ScrapeError::Url { url: url.to_string(), reason: reason.to_string() };
    let http_err = |e: Box<dyn std::error::Error + Send + Sync>| ScrapeError::Http { url: url.to_string(), source: e };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad_url(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url("only http:// is scraped"));
    }
    let authority = uri.authority().ok_or_else(|| bad_url("no host"))?.clone();
    if authority.port_u16().is_none() {
        return Err(bad_url("no port"));
    }
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| http_err(e.into()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http_err(e.into()))?;
    let connection = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "text/plain; version=0.0.4");
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| http_err(e.into()))?;
    let response = sender.send_request(request).await.map_err(|e| http_err(e.into()));
    let result = match response {
        Ok(response) if response.status() != http::StatusCode::OK => {
            Err(ScrapeError::Status { url: url.to_string(), status: response.status() })
        }
        Ok(response) => match Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(body) => String::from_utf8(body.to_bytes().to_vec()).map_err(|e| http_err(e.into())),
            Err(e) => Err(http_err(e)),
        },
        Err(e) => Err(e),
    };
    connection.abort();
    result
}
