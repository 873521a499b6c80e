//! The one store-data type: WASI and HTTP contexts, resource table, outbound policy and limits of one instance.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outbound::OutboundPolicy;
use super::wasi_ctx::{ContainerView, WasiTemplate};
use crate::runtime::Usage;

/// Per-instance host state; a fresh one for every store.
pub struct Host {
    pub(crate) wasi: WasiCtx,
    /// The container's args, env and output streams, which the guest reads from here (`wasi_ctx`).
    pub(crate) template: WasiTemplate,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limits,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: OutboundPolicy,
}

impl Host {
    /// Fresh state for one instance of the container `template` describes.
    pub fn new(template: &WasiTemplate, limits: Limits, outbound: OutboundPolicy) -> Self {
        Self {
            // Only what wasmtime-wasi keeps per instance (clocks, random generators, socket policy): the
            // container's args, env, streams and directories are served from the template (`wasi_ctx`).
            wasi: WasiCtx::builder().build(),
            template: template.clone(),
            table: ResourceTable::new(),
            limits,
            http: WasiHttpCtx::new(),
            outbound,
        }
    }

    /// The guest's view of its container: args, env, output streams, preopened directories.
    pub(crate) fn container(&mut self) -> ContainerView<'_> {
        self.template.view(&mut self.table)
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// A store for one instance: the memory limit enforced, and a yield to the executor on every epoch tick
/// so that a busy guest shares the daemon's threads and can be stopped.
pub fn new_store(engine: &Engine, host: Host) -> Store<Host> {
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

/// Why a guest failed, in words for the container's log: each cause from the outermost to the root (a
/// host error keeps the context we gave it; a trap is its kind), then the guest's stack when wasmtime
/// recorded one (its lines name the component's functions).
pub fn guest_failure(e: &wasmtime::Error) -> String {
    // wasmtime attaches the stack as a layer of the chain; it goes last, on lines of its own.
    let stack = e.downcast_ref::<wasmtime::WasmBacktrace>().map(ToString::to_string);
    let causes: Vec<String> =
        e.chain().map(ToString::to_string).filter(|layer| Some(layer) != stack.as_ref()).collect();
    let cause = causes.join(": ");
    match stack {
        Some(stack) => format!("{cause}\n{stack}"),
        None => cause,
    }
}

/// The instance grew past the container's memory limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "OOMKilled: the component tried to grow its memory to {wanted} bytes, over the container's limit of {limit} bytes"
)]
pub struct MemoryLimitExceeded {
    /// Bytes the instance would have held after the growth.
    pub wanted: u64,
    /// The container's memory limit.
    pub limit: u64,
}

/// Enforces the container's memory limit over all linear memories and tables of one instance, and
/// counts them in the container's [`Usage`] while the instance lives, so that `stats` can report it.
pub struct Limits {
    limit: Option<u64>,
    memories: u64,
    tables: u64,
    usage: Arc<Usage>,
}

/// Tables hold references; count each element as one pointer.
const TABLE_ELEMENT_BYTES: u64 = std::mem::size_of::<usize>() as u64;

impl Limits {
    /// Limits with an optional byte bound, reporting into `usage`.
    pub fn new(limit: Option<u64>, usage: Arc<Usage>) -> Self {
        Self { limit, memories: 0, tables: 0, usage }
    }

    fn grow(&mut self, current: u64, desired: u64, tables: bool) -> wasmtime::Result<bool> {
        let (memories, tables_bytes) = if tables {
            (self.memories, self.tables - current + desired)
        } else {
            (self.memories - current + desired, self.tables)
        };
        let wanted = memories + tables_bytes;
        if let Some(limit) = self.limit {
            if wanted > limit {
                // A trap rather than a failed grow: the guest cannot recover, and the user must see why.
                return Err(wasmtime::Error::new(MemoryLimitExceeded { wanted, limit }));
            }
        }
        self.usage.memory_grew(self.memories + self.tables, wanted);
        self.memories = memories;
        self.tables = tables_bytes;
        Ok(true)
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        // The store, and with it the instance's memories, goes with this.
        self.usage.memory_released(self.memories + self.tables);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64, false)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |n: usize| n as u64 * TABLE_ELEMENT_BYTES;
        self.grow(bytes(current), bytes(desired), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_failure_says_every_cause_in_words_and_no_debug_dump() {
        let e = wasmtime::Error::new(MemoryLimitExceeded { wanted: 2, limit: 1 }).context("while running");
        assert_eq!(
            guest_failure(&e),
            "while running: OOMKilled: the component tried to grow its memory to 2 bytes, over the container's \
             limit of 1 bytes"
        );
    }

    #[test]
    fn growth_within_the_limit_is_counted() {
        let usage = Arc::new(Usage::default());
        let mut limits = Limits::new(Some(1 << 20), usage.clone());
        assert!(limits.memory_growing(0, 65536, None).unwrap());
        assert!(limits.table_growing(0, 10, None).unwrap());
        let one = 65536 + 10 * TABLE_ELEMENT_BYTES;
        assert_eq!(usage.memory_bytes(), one);
        // A second instance of the container, from another thread: the usage is their sum until each ends.
        let other = std::thread::scope(|s| {
            s.spawn(|| {
                let mut limits = Limits::new(None, usage.clone());
                limits.memory_growing(0, 131072, None).unwrap();
                limits
            })
            .join()
            .unwrap()
        });
        assert_eq!(usage.memory_bytes(), one + 131072);
        assert_eq!(usage.memory_peak_bytes(), one + 131072, "a stats read while both live sees their total");
        drop(limits);
        assert_eq!(usage.memory_bytes(), 131072);
        drop(other);
        assert_eq!(usage.memory_bytes(), 0);
        assert_eq!(usage.memory_peak_bytes(), one + 131072, "and keeps it after they end");
    }

    #[test]
    fn growth_past_the_limit_traps_with_the_figures() {
        let usage = Arc::new(Usage::default());
        let mut limits = Limits::new(Some(100_000), usage.clone());
        assert!(limits.memory_growing(0, 65536, None).unwrap());
        let err = limits.memory_growing(65536, 131072, None).unwrap_err();
        let over = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!((over.wanted, over.limit), (131072, 100_000));
        assert_eq!(usage.memory_peak_bytes(), 65536, "a refused growth is not counted");
    }
}
