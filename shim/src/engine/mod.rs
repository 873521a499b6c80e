//! The node's one wasmtime engine: compiles each component once (by content digest), links it against
//! the complete WASI 0.2 set, and prepares instances for containers.

mod cache;
mod cli;
mod config;
mod cpu;
mod deadline;
mod host;
mod http;
mod log_pipe;
mod netns;
mod outbound;
mod registry;
mod settings;
mod source;
mod wasi_ctx;
mod workload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use cli::CliWorkload;
pub use config::{build_engine, Allocator};
pub use host::{Host, MemoryLimitExceeded};
pub use http::HttpWorkload;
pub use log_pipe::{LogDrain, LogPipe};
pub use netns::{bind_listener, BindError};
pub use settings::{EngineSettings, HttpSettings};

use host::Limits;
use outbound::OutboundPolicy;
use wasi_ctx::WasiTemplate;
use wasmkube_contract::component::strip_oci_scheme;

use crate::metrics::HttpMetrics;
use crate::runtime::{Launch, LaunchError, Runtime, Usage, Workload};

/// How often the epoch advances: the longest a busy guest runs before it yields or sees a kill.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The node clock that ends late requests advances every this many epoch ticks.
const EPOCHS_PER_CLOCK_TICK: u32 = (deadline::CLOCK_TICK.as_millis() / EPOCH_TICK.as_millis()) as u32;
const _: () = assert!(EPOCHS_PER_CLOCK_TICK > 0, "the node clock cannot tick faster than the epoch");

/// A component compiled and linked once, shared by every container that runs it.
enum Prepared {
    Cli(CommandPre<Host>),
    /// Exports `wasi:http/incoming-handler`: served, one instance per request.
    Http(ProxyPre<Host>),
}

type Slot = Arc<OnceCell<Arc<Prepared>>>;

/// The engine, linker and compiled components shared by every container of the node.
pub struct NodeEngine {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<Host>,
    components: Mutex<HashMap<String, Slot>>,
    cache: Arc<cache::NodeCache>,
    registry: registry::RegistrySource,
    ticker_stop: Arc<AtomicBool>,
    clock: deadline::NodeClock,
    http: HttpSettings,
    metrics: Arc<HttpMetrics>,
}

impl NodeEngine {
    /// Builds the engine and linker; fails at daemon start, not at a pod's start, when the host cannot.
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        // oci-client's TLS needs a process-wide crypto provider; another one already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (engine, allocator) = config::build_engine()?;
        tracing::info!(?allocator, "wasmtime engine ready");

        let mut linker = Linker::new(&engine);
        // The complete WASI 0.2 set (0.2.0 … 0.2.12, `exit-with-code` included), for every component;
        // preopens and the network policy decide what a guest can reach.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI into the engine: {e:#}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link wasi:http into the engine: {e:#}"))?;
        wasi_ctx::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link the container's wasi:cli view into the engine: {e:#}"))?;

        let EngineSettings { cache_dir, cache_max_bytes, insecure_registries, http } = settings;
        let cache = cache::NodeCache::open(&cache_dir, cache_max_bytes, &engine)
            .map_err(|e| anyhow::anyhow!("cannot use the cache directory {}: {e}", cache_dir.display()))?;
        let cache = Arc::new(cache);
        let registry = registry::RegistrySource::new(insecure_registries, cache.clone());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let clock = deadline::NodeClock::default();
        spawn_epoch_ticker(engine.clone(), clock.clone(), ticker_stop.clone())?;
        Ok(Self {
            engine,
            allocator,
            linker,
            components: Mutex::default(),
            cache,
            registry,
            ticker_stop,
            clock,
            http,
            metrics: Arc::default(),
        })
    }

    /// How the engine allocates instances.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The request series of every wasi:http container this engine serves, for the metrics endpoint.
    pub fn http_metrics(&self) -> Arc<HttpMetrics> {
        self.metrics.clone()
    }

    /// Number of distinct components compiled so far.
    pub fn compiled_components(&self) -> usize {
        self.components.lock().map(|m| m.len()).unwrap_or(0)
    }

    async fn prepared(&self, component: source::ComponentBytes) -> Result<Arc<Prepared>, LaunchError> {
        let slot = {
            let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(component.digest.clone()).or_default().clone()
        };
        // Concurrent containers of one component wait for one compilation.
        slot.get_or_try_init(|| self.compile(component)).await.cloned()
    }

    async fn compile(&self, component: source::ComponentBytes) -> Result<Arc<Prepared>, LaunchError> {
        let origin = component.origin.clone();
        check_is_component(&origin, &component.bytes)?;
        let compiled = match self.cache.load_compiled(&self.engine, &component.digest).await {
            Some(compiled) => {
                tracing::info!(component = %origin, "precompiled component loaded from the node cache");
                compiled
            }
            None => self.compile_and_store(component).await?,
        };
        let pre = self
            .linker
            .instantiate_pre(&compiled)
            .map_err(|e| LaunchError::cannot_run(format!("component {origin} cannot be linked: {e:#}")))?;
        // What the component is comes from its type, not from its name.
        if http::exports_incoming_handler(&self.engine, &compiled) {
            let proxy = ProxyPre::new(pre).map_err(|e| {
                LaunchError::cannot_run(format!(
                    "component {origin}: its wasi:http/incoming-handler export cannot be used: {e:#}"
                ))
            })?;
            tracing::info!(component = %origin, "compiled and linked wasi:http component");
            return Ok(Arc::new(Prepared::Http(proxy)));
        }
        let command = CommandPre::new(pre).map_err(|e| {
            LaunchError::cannot_run(format!(
                "component {origin} exports neither wasi:cli/run nor wasi:http/incoming-handler, so it cannot run: {e:#}"
            ))
        })?;
        tracing::info!(component = %origin, "compiled and linked component");
        Ok(Arc::new(Prepared::Cli(command)))
    }

    /// Compiles on a blocking thread and keeps the compiled code in the node cache.
    async fn compile_and_store(&self, component: source::ComponentBytes) -> Result<Component, LaunchError> {
        let origin = component.origin.clone();
        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        // Everything the compilation allocates is freed on the thread that allocated it, and that thread
        // gives it back before it goes idle (`release_freed_memory`).
        tokio::task::spawn_blocking(move || {
            let compiled = compile_and_store_here(&engine, &cache, component);
            release_freed_memory();
            compiled
        })
        .await
        .map_err(|e| LaunchError::cannot_run(format!("component {origin}: compilation aborted: {e}")))?
    }
}

impl Drop for NodeEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl Runtime for NodeEngine {
    async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError> {
        let Launch { id, spec, rootfs, stdio, bundle: _ } = launch;
        let reference = spec.component.as_deref().ok_or_else(|| {
            LaunchError::not_found("the container spec has no process.args: nothing names a component")
        })?;
        // wasi:http components bind their listener inside this namespace.
        if let Some(netns) = &spec.network_namespace {
            tracing::info!(%id, netns = %netns.display(), "component joins this network namespace");
        }
        let outbound = OutboundPolicy::new(
            &id,
            &spec.env.allowed_outbound_hosts,
            spec.network_namespace.as_deref(),
            &spec.name_files,
        )
        .map_err(|e| LaunchError::cannot_run(e.to_string()))?;
        // The pin keeps the component's cache entries from eviction while the container lives.
        let (bytes, cache_pin) = if strip_oci_scheme(reference).is_some() {
            self.registry.fetch(reference, &spec.pull_secrets).await?
        } else {
            let bytes = source::read(reference, &rootfs)?;
            let pin = self.cache.pin(vec![bytes.digest.clone()]);
            (bytes, pin)
        };
        let notice = bytes.notice.clone();
        let prepared = self.prepared(bytes).await?;

        let (stdout, stderr, logs) = workload::open_logs(stdio);
        if let Some(notice) = notice {
            // Before the guest's own output, so `kubectl logs` shows why an old digest may be running.
            let mut log = stderr.clone();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut log, format!("{notice}\n").as_bytes()).await;
        }
        // The access log shares the guest's stdout, so its lines and the guest's keep their order.
        let access_log = spec.env.http_access_log.then(|| stdout.clone());
        let wasi = WasiTemplate::new(&spec, stdout, stderr.clone())?;
        match &*prepared {
            Prepared::Cli(pre) => {
                let usage = Arc::new(Usage::default());
                Ok(Box::new(CliWorkload {
                    engine: self.engine.clone(),
                    pre: pre.clone(),
                    // A wasi:cli container is one instance.
                    host: Host::new(&wasi, Limits::new(spec.memory_limit, usage.clone()), outbound),
                    usage,
                    logs,
                    cache_pin,
                }))
            }
            Prepared::Http(pre) => Ok(Box::new(HttpWorkload::bind(
                pre.clone(),
                http::HttpLaunch {
                    metrics: self.metrics.register(&id, spec.labels.clone()),
                    id,
                    port: spec.env.http_port.unwrap_or(self.http.default_port),
                    wasi,
                    network_namespace: spec.network_namespace,
                    stderr,
                    access_log,
                    logs,
                    memory_limit: spec.memory_limit,
                    outbound,
                    settings: self.http.clone(),
                    cache_pin,
                    clock: self.clock.clone(),
                },
            )?)),
        }
    }
}

fn compile_and_store_here(
    engine: &Engine,
    cache: &cache::NodeCache,
    component: source::ComponentBytes,
) -> Result<Component, LaunchError> {
    let origin = &component.origin;
    let serialized = engine
        .precompile_component(&component.bytes)
        .map_err(|e| LaunchError::cannot_run(format!("component {origin} failed to compile: {e:#}")))?;
    // Code mapped from the cache file is page cache the kernel can drop and share, not anonymous memory
    // (wasmtime also maps linear-memory images straight from it): a 13 MB JavaScript component's code
    // is tens of MiB (docs/shim.md, "Memory of large components").
    match cache.store_compiled(&component.digest, &serialized) {
        // SAFETY: the file holds the bytes `precompile_component` of this very engine produced just now,
        // and cache entries are never changed in place.
        Some(path) => unsafe { Component::deserialize_file(engine, &path) },
        // SAFETY: these bytes were produced just now by `precompile_component` of this very engine.
        None => unsafe { Component::deserialize(engine, &serialized) },
    }
    .map_err(|e| LaunchError::cannot_run(format!("component {origin}: compiled code not loadable: {e:#}")))
}

/// Hands the memory a compilation freed back to the kernel at once. Compiling a large component peaks at
/// hundreds of MiB on the compiler's threads (the blocking thread that compiles, which must call this, and
/// rayon's pool, where wasmtime compiles functions in parallel), which then sit idle; mimalloc keeps a
/// thread's freed pages until that thread allocates again (docs/shim.md, "Memory of large components").
fn release_freed_memory() {
    #[cfg(feature = "mimalloc")]
    {
        // SAFETY: mi_collect takes no pointers; with `force` it frees and purges what no allocation uses.
        let collect = || unsafe { libmimalloc_sys::mi_collect(true) };
        rayon::broadcast(|_| collect());
        collect();
    }
}

/// Says what the bytes are when they are not a component, instead of a parser error.
fn check_is_component(origin: &str, bytes: &[u8]) -> Result<(), LaunchError> {
    match wasmkube_oci::not_a_component(bytes) {
        None => Ok(()),
        Some(what) => Err(LaunchError::cannot_run(format!("component {origin} is {what}"))),
    }
}

/// Advances the engine's epoch and, more slowly, the node clock of request deadlines.
fn spawn_epoch_ticker(engine: Engine, clock: deadline::NodeClock, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    // A plain thread, so that busy tokio workers cannot delay the tick that interrupts them.
    std::thread::Builder::new()
        .name("wasmkube-epoch".into())
        .spawn(move || {
            let mut ticks = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
                ticks += 1;
                if ticks == EPOCHS_PER_CLOCK_TICK {
                    ticks = 0;
                    clock.nudge();
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_components_are_named_for_what_they_are() {
        let core = check_is_component("/m.wasm", b"\0asm\x01\0\0\0").unwrap_err();
        assert!(core.message.contains("core WebAssembly module"), "{}", core.message);
        let junk = check_is_component("/j.wasm", b"#!/bin/sh\n").unwrap_err();
        assert!(junk.message.contains("23 21 2f 62"), "{}", junk.message);
        assert_eq!(junk.exit_code, 126);
    }
}
