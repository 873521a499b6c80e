//! Serves a wasi:http component (one that exports `wasi:http/incoming-handler`) on a port inside its
//! pod's network namespace: one fresh `Store` and instance per request from the container's `ProxyPre`,
//! a bound on requests in flight, a per-request deadline, a request-body limit, and a graceful drain on
//! SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error as HttpError, WasiHttpView};

use super::cache::Pin;
use super::cpu::CpuMetered;
use super::deadline::{Guarded, KillSwitch, NodeClock};
use super::host::{guest_failure, new_store, Host, Limits};
use super::log_pipe::LogPipe;
use super::netns::bind_listener;
use super::outbound::OutboundPolicy;
use super::settings::HttpSettings;
use super::wasi_ctx::WasiTemplate;
use super::workload::LogDrains;
use crate::metrics::{ContainerSeries, Registration};
use crate::runtime::{next_signal, Exit, LaunchError, Signal, Usage, Workload};

/// The export that makes a component a wasi:http server, any 0.2.x version.
const INCOMING_HANDLER_EXPORT: &str = "wasi:http/incoming-handler@0.2.";

/// Whether the compiled component exports `wasi:http/incoming-handler` (read from its type).
pub fn exports_incoming_handler(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> bool {
    component.component_type().exports(engine).any(|(name, _)| name.starts_with(INCOMING_HANDLER_EXPORT))
}

/// What one HTTP container is made of.
pub struct HttpLaunch {
    /// The container id (for logs).
    pub id: String,
    /// The port the container's env names, else the node's default.
    pub port: u16,
    /// Every request's WASI context comes from it.
    pub wasi: WasiTemplate,
    /// The pod's network namespace, where the listener is bound.
    pub network_namespace: Option<PathBuf>,
    /// The guest's stderr (also in `wasi`), where a failed request's cause is written.
    pub stderr: LogPipe,
    /// The container's stdout when it asked for an access log (`WASMKUBE_HTTP_ACCESS_LOG`), else `None`.
    pub access_log: Option<LogPipe>,
    /// Drains of the guest's stdout and stderr, finished when the container ends.
    pub logs: LogDrains,
    /// The container's memory limit, applied to every instance.
    pub memory_limit: Option<u64>,
    /// Hosts the guest may call.
    pub outbound: OutboundPolicy,
    /// Node-wide serving settings.
    pub settings: HttpSettings,
    /// Keeps the component's cache entries from eviction while the container lives.
    pub cache_pin: Pin,
    /// The container's request series; they leave the node's metrics when the server stops.
    pub metrics: Registration,
    /// The node's coarse clock, which ends requests past their deadline.
    pub clock: NodeClock,
}

/// A wasi:http component with its listener bound, ready to serve.
pub struct HttpWorkload {
    listener: std::net::TcpListener,
    server: Arc<Server>,
    logs: LogDrains,
    _cache_pin: Pin,
    _metrics: Registration,
}

impl HttpWorkload {
    /// Binds the listener in the pod's network namespace (so it is up before the task reports started;
    /// connections made before `start` wait in the backlog).
    pub fn bind(pre: ProxyPre<Host>, launch: HttpLaunch) -> Result<Self, LaunchError> {
        let addr = SocketAddr::from(([0, 0, 0, 0], launch.port));
        let listener = bind_listener(launch.network_namespace.as_deref(), addr)
            .map_err(|e| LaunchError::cannot_run(format!("the wasi:http component cannot listen: {e}")))?;
        tracing::info!(id = %launch.id, %addr, netns = ?launch.network_namespace, "wasi:http component listening");
        let server = Arc::new(Server {
            id: launch.id,
            pre,
            wasi: launch.wasi,
            stderr: launch.stderr,
            access_log: launch.access_log,
            memory_limit: launch.memory_limit,
            outbound: launch.outbound,
            in_flight: AtomicUsize::new(0),
            settings: launch.settings,
            usage: Arc::new(Usage::default()),
            series: launch.metrics.series(),
            killed: KillSwitch::default(),
            clock: launch.clock,
        });
        Ok(Self { listener, server, logs: launch.logs, _cache_pin: launch.cache_pin, _metrics: launch.metrics })
    }
}

impl Workload for HttpWorkload {
    fn start(self: Box<Self>, signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
        Box::pin(self.serve(signals))
    }

    fn usage(&self) -> Arc<Usage> {
        self.server.usage.clone()
    }
}

/// Per-container state every request shares.
struct Server {
    id: String,
    pre: ProxyPre<Host>,
    wasi: WasiTemplate,
    stderr: LogPipe,
    /// Where access-log lines go, when the container asked for them.
    access_log: Option<LogPipe>,
    memory_limit: Option<u64>,
    outbound: OutboundPolicy,
    /// Requests admitted and not yet done, bounded by `settings.max_in_flight`.
    in_flight: AtomicUsize,
    settings: HttpSettings,
    usage: Arc<Usage>,
    /// Requests and requests in flight, for the node's metrics endpoint.
    series: Arc<ContainerSeries>,
    /// Turned when the container is killed: guests still running stop at their next yield.
    killed: KillSwitch,
    clock: NodeClock,
}

impl HttpWorkload {
    async fn serve(self, mut signals: watch::Receiver<Option<Signal>>) -> Exit {
        let HttpWorkload { listener, server, logs, _cache_pin, _metrics } = self;
        let exit = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => accept_until_stopped(listener, server.clone(), &mut signals).await,
            Err(e) => Exit::failed(126, format!("the wasi:http listener cannot be used: {e}")),
        };
        // Whatever still runs in a guest now ends at its next yield point.
        server.killed.kill(&server.clock);
        drop(server);
        logs.finish().await;
        exit
    }
}

/// Accepts connections until a signal; SIGTERM then stops accepting and lets every open connection
/// finish its requests (exit 0) unless another signal (SIGKILL) ends the drain at once (128+N).
async fn accept_until_stopped(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    signals: &mut watch::Receiver<Option<Signal>>,
) -> Exit {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let signal = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let server = server.clone();
                    let service = hyper::service::service_fn(move |req| server.clone().handle(peer, req));
                    // wasi:http has no upgrades (a guest cannot take over the connection), so hyper need not offer them.
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(id = %server.id, error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Finished connections are reaped as we go, so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            signal = next_signal(signals) => break signal,
        }
    };
    drop(listener);
    if signal != Signal::TERM {
        connections.abort_all();
        return Exit::code(128 + signal.0);
    }
    tracing::info!(id = %server.id, "SIGTERM: no new connections; draining requests in flight");
    tokio::select! {
        () = graceful.shutdown() => Exit::code(0),
        signal = signal_after_term(signals) => {
            connections.abort_all();
            Exit::code(128 + signal.0)
        }
    }
}

/// Waits for a signal other than the SIGTERM already being handled (a repeated SIGTERM keeps draining).
async fn signal_after_term(signals: &mut watch::Receiver<Option<Signal>>) -> Signal {
    loop {
        if signals.changed().await.is_err() {
            return Signal::KILL;
        }
        match *signals.borrow_and_update() {
            Some(s) if s != Signal::TERM => return s,
            _ => {}
        }
    }
}

impl Server {
    async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Infallible> {
        let Some(log) = self.access_log.clone() else { return Ok(self.respond(req).await) };
        let entry = AccessEntry::new(peer, &req);
        let response = self.respond(req).await;
        entry.write(log, response.status()).await;
        Ok(response)
    }

    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        // Kept to name the request should it fail; formatted only then.
        let what = RequestLine { method: req.method().clone(), uri: req.uri().clone() };
        let admission = Admission::of(&self, req.headers());
        if !admission.admitted {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight for this container\n");
        }
        let limit = self.settings.max_request_body_bytes;
        if declared_length(&req).is_some_and(|n| n > limit) {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {limit} bytes\n"));
        }
        let req = req.map(|body| limited(body, limit));
        let mut store = self.new_store();
        let (sender, receiver) = oneshot::channel();
        let handles = {
            let mut http = store.data_mut().http();
            http.new_incoming_request(Scheme::Http, req).and_then(|r| Ok((r, http.new_response_outparam(sender)?)))
        };
        let (incoming, outparam) = match handles {
            Ok(handles) => handles,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("invalid request: {e}\n")),
        };

        let timeout = self.settings.request_timeout;
        let deadline = Instant::now() + timeout;
        let guest = async move {
            let server = &admission.server;
            let run = CpuMetered::new(
                async {
                    let proxy = server.pre.instantiate_async(&mut store).await?;
                    proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam).await
                },
                &server.usage,
            );
            server.clock.guard(run, deadline, &server.killed).await
        };

        // The guest runs in a task of its own: it may go on writing the body after the response head is sent.
        let guest = tokio::spawn(guest);
        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => self.failed(&what, &format!("the component answered with error {code}")).await,
            // The guest ended without setting a response: find out why.
            Err(_) => match guest.await {
                Ok(Guarded::Done(Ok(()))) => self.failed(&what, "the component returned without a response").await,
                Ok(Guarded::Done(Err(e))) => {
                    self.failed(&what, &format!("the component trapped: {}", guest_failure(&e))).await
                }
                Ok(Guarded::TimedOut) => plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the component did not answer within {}s\n", timeout.as_secs_f64()),
                ),
                Ok(Guarded::Killed) => plain(StatusCode::SERVICE_UNAVAILABLE, "the container is stopping\n"),
                Err(e) => self.failed(&what, &format!("the request task failed: {e}")).await,
            },
        }
    }

    fn new_store(&self) -> Store<Host> {
        let limits = Limits::new(self.memory_limit, self.usage.clone());
        new_store(self.pre.engine(), Host::new(&self.wasi, limits, self.outbound.clone()))
    }

    /// A 500 whose cause goes to the container's stderr (so `kubectl logs` shows it) and the daemon log;
    /// the client only learns that the component failed.
    async fn failed(&self, what: &RequestLine, why: &str) -> Response<HyperOutgoingBody> {
        tracing::warn!(id = %self.id, request = %what, "{why}");
        let line = format!("wasmkube: {what}: {why}\n");
        let mut stderr = self.stderr.clone();
        if let Err(e) = stderr.write_all(line.as_bytes()).await {
            tracing::debug!(id = %self.id, error = %e, "container log closed");
        }
        plain(StatusCode::INTERNAL_SERVER_ERROR, "the component failed to handle the request\n")
    }
}

/// A request in the container's bound on requests in flight and (unless a kubelet probe) in its metrics,
/// until the guest that serves it ends; it holds the request's one handle on the server. One handle, not
/// clones of the server's parts: each would be a shared counter that every request on every core increments
/// and decrements.
struct Admission {
    server: Arc<Server>,
    /// Counted in the metrics: every request but a probe, whatever its answer (503 and 413 included).
    counted: bool,
    /// Within `max_in_flight`; a request that is not gets a 503.
    admitted: bool,
}

impl Admission {
    fn of(server: &Arc<Server>, headers: &http::HeaderMap) -> Self {
        let counted = server.series.start(headers);
        let admitted = server.in_flight.fetch_add(1, Ordering::Relaxed) < server.settings.max_in_flight;
        if !admitted {
            server.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        Self { server: server.clone(), counted, admitted }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.admitted {
            self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if self.counted {
            self.server.series.end();
        }
    }
}

/// Method and target of a request, to name it in a failure message.
struct RequestLine {
    method: Method,
    uri: Uri,
}

impl std::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

/// What an access-log line says of a request, taken when it arrives.
struct AccessEntry {
    peer: SocketAddr,
    line: RequestLine,
    version: Version,
    started: Instant,
}

impl AccessEntry {
    fn new(peer: SocketAddr, req: &Request<Incoming>) -> Self {
        let line = RequestLine { method: req.method().clone(), uri: req.uri().clone() };
        Self { peer, line, version: req.version(), started: Instant::now() }
    }

    /// One line in the container's stdout, when the response head is ready (a streamed body may go on):
    /// `PEER "METHOD TARGET VERSION" STATUS MILLISECONDSms`. A full log buffer makes the request wait, as
    /// it makes the guest's own output wait: a line is never dropped silently.
    async fn write(self, mut log: LogPipe, status: StatusCode) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let line = format!("{} \"{} {:?}\" {} {ms:.3}ms\n", self.peer, self.line, self.version, status.as_u16());
        if let Err(e) = log.write_all(line.as_bytes()).await {
            tracing::debug!(error = %e, "container log closed; access-log line dropped");
        }
    }
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The request body, cut off with `HttpRequestBodySize` past `limit` bytes (chunked bodies have no
/// declared length to check up front).
fn limited(body: Incoming, limit: u64) -> impl hyper::body::Body<Data = Bytes, Error = HttpError> {
    Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).map_err(move |e| {
        if e.is::<LengthLimitError>() {
            return HttpError::HttpRequestBodySize(Some(limit));
        }
        match e.downcast::<hyper::Error>() {
            Ok(e) => HttpError::Hyper(*e),
            Err(_) => HttpError::HttpProtocolError,
        }
    })
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text.into())).map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}
