//! The scrape loop against loopback HTTP servers serving fixture metrics, with scripted targets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use wasmkube_operator::demand::node_token::BearerToken;
use wasmkube_operator::demand::{scrape_once, AppKey, Demand, DemandSettings, Targets, TargetsError};

/// A loopback `/metrics` whose text the test replaces between scrapes.
struct Fixture {
    url: String,
    text: Arc<Mutex<String>>,
}

impl Fixture {
    async fn start(text: &str) -> Self {
        let text = Arc::new(Mutex::new(text.to_string()));
        let served = text.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let served = served.clone();
                async move { served.lock().unwrap().clone() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{addr}/metrics"), text }
    }

    fn set(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_string();
    }
}

struct FixedTargets(Vec<String>);

#[async_trait]
impl Targets for FixedTargets {
    async fn targets(&self) -> Result<Vec<String>, TargetsError> {
        Ok(self.0.clone())
    }
}

fn node_text(pod: &str, total: u64, in_flight: u64) -> String {
    format!(
        "# HELP wasmkube_http_requests Requests served.\n\
         # TYPE wasmkube_http_requests counter\n\
         wasmkube_http_requests_total{{namespace=\"apps\",wasmapp=\"hello\",pod=\"{pod}\",container=\"app\"}} {total}\n\
         # TYPE wasmkube_http_requests_in_flight gauge\n\
         wasmkube_http_requests_in_flight{{namespace=\"apps\",wasmapp=\"hello\",pod=\"{pod}\",container=\"app\"}} {in_flight}\n\
         # EOF\n"
    )
}

/// A TCP port with nothing listening (bound, then released).
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/metrics")
}

fn settings() -> DemandSettings {
    DemandSettings { scrape_timeout: Duration::from_secs(2), scrape_concurrency: 2, ..DemandSettings::default() }
}

#[tokio::test]
async fn two_scrapes_give_the_rate_the_counters_imply_despite_a_failing_target() {
    let node_a = Fixture::start(&node_text("hello-1", 1000, 0)).await;
    let node_b = Fixture::start(&node_text("hello-2", 500, 0)).await;
    let activator = Fixture::start("").await;
    let targets = FixedTargets(vec![
        closed_port_url().await,
        node_a.url.clone(),
        "not a url".into(),
        node_b.url.clone(),
        activator.url.clone(),
    ]);
    let demand = Demand::default();
    let hello = AppKey::new("apps", "hello");

    let start = tokio::time::Instant::now();
    assert_eq!(scrape_once(&targets, &demand, &settings()).await, 3, "the two bad targets fail, the others answer");
    // The rate divides by the time between the two scrapes, so let that time be long enough to measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    node_a.set(&node_text("hello-1", 1300, 2));
    node_b.set(&node_text("hello-2", 700, 1));
    activator.set("wasmkube_activator_requests_held{namespace=\"apps\",wasmapp=\"hello\"} 4\n");
    assert_eq!(scrape_once(&targets, &demand, &settings()).await, 3);
    let elapsed = start.elapsed().as_secs_f64();

    let got = demand.app(&hello, std::time::Instant::now());
    // 500 new requests between two scrapes at most `elapsed` apart (and at least 0.5 s apart).
    let served = got.requests_per_second - 4.0;
    assert!(served >= 500.0 / elapsed && served <= 500.0 / 0.5, "rate {served} for 500 requests in {elapsed} s");
    assert_eq!(got.in_flight, 2.0 + 1.0 + 4.0);
}

#[tokio::test]
async fn a_target_that_stops_answering_keeps_its_last_samples() {
    let node = Fixture::start(&node_text("hello-1", 10, 3)).await;
    let targets = FixedTargets(vec![node.url.clone()]);
    let demand = Demand::default();
    assert_eq!(scrape_once(&targets, &demand, &settings()).await, 1);
    node.set("");
    let gone = FixedTargets(vec![closed_port_url().await]);
    assert_eq!(scrape_once(&gone, &demand, &settings()).await, 0);
    assert_eq!(demand.app(&AppKey::new("apps", "hello"), std::time::Instant::now()).in_flight, 3.0);
}

#[tokio::test]
async fn run_scrapes_every_interval_until_shutdown() {
    struct Counting(Arc<AtomicUsize>);
    #[async_trait]
    impl Targets for Counting {
        async fn targets(&self) -> Result<Vec<String>, TargetsError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
    }
    let rounds = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let settings = DemandSettings { scrape_interval: Duration::from_millis(20), ..settings() };
    let task = tokio::spawn(wasmkube_operator::demand::run(
        Arc::new(Counting(rounds.clone())),
        Arc::new(Demand::default()),
        settings,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rounds.load(Ordering::SeqCst) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "fewer than 3 rounds in 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn scrapes_carry_the_node_token() {
    // A node endpoint that, like the shim's with a token file, serves only scrapes with its token.
    let app = Router::new().route(
        "/metrics",
        get(|headers: axum::http::HeaderMap| async move {
            match headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                Some("Bearer node-secret") => (axum::http::StatusCode::OK, node_text("hello-1", 10, 1)),
                _ => (axum::http::StatusCode::UNAUTHORIZED, String::new()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let targets = FixedTargets(vec![format!("http://{addr}/metrics")]);
    let demand = Demand::default();

    assert_eq!(scrape_once(&targets, &demand, &settings()).await, 0, "no token, no metrics");
    let with_token = DemandSettings { node_token: Some(BearerToken::new("node-secret")), ..settings() };
    assert_eq!(scrape_once(&targets, &demand, &with_token).await, 1);
}
