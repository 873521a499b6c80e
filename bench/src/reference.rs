//! The reference host: wasmtime-wasi-http's own serving recipe (as in `wasmtime serve`), with the engine
//! settings the shim uses (`wasmkube_shim::engine::build_engine`: pooling allocator, epoch interruption ticking
//! every 10 ms, a yield on every tick), serving a component with one store per request on a listener the caller
//! binds (the bench binds it in a pod's network namespace, as the shim's is). It is what the shim is measured
//! against: the same component, wasmtime and allocator, without containerd or the shim's policies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: wasmtime_wasi_http::default_hooks() }
    }
}

/// What every host gives the guest of its container.
#[derive(Clone)]
pub struct GuestContext {
    /// The environment.
    pub env: Vec<(String, String)>,
    /// Host directory and the path the guest sees it at, read-only.
    pub read_only_dirs: Vec<(PathBuf, String)>,
}

/// A running reference host; stops when dropped.
pub struct ReferenceHost {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ReferenceHost {
    /// Compiles `wasm` and serves it on `listener`, which `addr` reaches, giving the guest `guest`.
    pub fn start(wasm: &[u8], listener: std::net::TcpListener, addr: SocketAddr, guest: &GuestContext) -> Result<Self> {
        // The shim's own engine settings (pooling allocator, epoch interruption).
        let (engine, _) = wasmkube_shim::engine::build_engine()?;
        let component = Component::new(&engine, wasm).map_err(|e| anyhow!("compiling the component: {e:?}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("linking WASI: {e:?}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow!("linking wasi:http: {e:?}"))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| anyhow!("pre-instantiating: {e:?}"))?;
        let pre = ProxyPre::new(pre).map_err(|e| anyhow!("not a wasi:http proxy: {e:?}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            while !ticker.1.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                ticker.0.increment_epoch();
            }
        });

        listener.set_nonblocking(true).context("making the reference host's listener non-blocking")?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let guest = Arc::new(guest.clone());
        std::thread::spawn(move || runtime.block_on(serve(listener, Arc::new(pre), guest, stopped)));
        Ok(Self { addr, stop, shutdown: Some(shutdown) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ReferenceHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    pre: Arc<ProxyPre<RequestState>>,
    guest: Arc<GuestContext>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let (pre, guest) = (pre.clone(), guest.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(pre.clone(), guest.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(
    pre: Arc<ProxyPre<RequestState>>,
    guest: Arc<GuestContext>,
    req: hyper::Request<hyper::body::Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    // As `wasmtime serve` does with `--env` and `--dir`: the environment copied into each request's context,
    // the directories opened for it.
    let mut wasi = WasiCtx::builder();
    wasi.envs(&guest.env);
    for (host, path) in &guest.read_only_dirs {
        wasi.preopened_dir(host, path, FsPerms::ReadOnly)?;
    }
    let wasi = wasi.build();
    let state = RequestState { wasi, http: WasiHttpCtx::new(), table: ResourceTable::new() };
    let mut store = Store::new(pre.engine(), state);
    store.epoch_deadline_async_yield_and_update(1);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(wasmtime::format_err!("guest error code {code:?}")),
        Err(_) => Err(match task.await {
            Ok(Ok(())) => wasmtime::format_err!("guest set no response"),
            Ok(Err(e)) => e,
            Err(e) => e.into(),
        }),
    }
}
