//! The settings of the node's one `Engine`: epoch interruption for kills, and the pooling allocator
//! when the host can reserve its address space.

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the engine allocates instances; the daemon logs it and `stats`-minded readers compare by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved up front and reused: instantiation is a few page-table operations.
    Pooling,
    /// mmap per instance, for hosts that refuse the pool's reservation (small `ulimit -v`, no overcommit).
    OnDemand,
}

/// Bounds of the pool. A dense node runs 1,000 pods (issue 16; the kubelet's default is 110), each
/// container one component instance, plus in-flight wasi:http requests (one instance each); a Rust wasip2
/// component uses 1–4 core instances. Slots are virtual address space until used: 8,000 memories reserve
/// about 32 TiB of the 128 TiB a 64-bit process has, and touch none of it.
const COMPONENT_INSTANCES: u32 = 4_000;
const CORE_INSTANCES: u32 = 16_000;
const MEMORIES: u32 = 8_000;
const TABLES: u32 = 16_000;
/// Bytes of a freed memory or table slot reset in place instead of given back with `madvise`, where the
/// kernel can tell which of them were written (`PAGEMAP_SCAN`).
const KEEP_RESIDENT: usize = 1 << 20;
/// The first kernel with the `PAGEMAP_SCAN` ioctl. Without it wasmtime would `memset` all of the kept bytes
/// after every instance, written or not, so older kernels keep nothing resident (the `madvise` of before).
const PAGEMAP_SCAN_SINCE: (u32, u32) = (6, 7);
/// Every running store needs a fiber stack (async host calls); 4,000 × 2 MiB, committed on touch.
const STACKS: u32 = 4_000;

/// Settings shared by both allocators.
fn base() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true).wasm_component_model(true);
    config
}

fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(COMPONENT_INSTANCES)
        .total_core_instances(CORE_INSTANCES)
        .total_memories(MEMORIES)
        .total_tables(TABLES)
        .total_stacks(STACKS)
        .max_core_instances_per_component(16)
        .max_memories_per_component(16)
        .max_tables_per_component(16)
        .pagemap_scan(Enabled::Auto);
    let keep_resident = if kernel_has_pagemap_scan() { KEEP_RESIDENT } else { 0 };
    pool.linear_memory_keep_resident(keep_resident).table_keep_resident(keep_resident);
    pool
}

fn kernel_has_pagemap_scan() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| kernel_version(&release))
        .is_some_and(|version| version >= PAGEMAP_SCAN_SINCE)
}

/// `(major, minor)` of a kernel release such as `6.1.0-28-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?))
}

/// The engine: pooled when the host allows the reservation (the probe is creating it), else on-demand.
pub fn build_engine() -> anyhow::Result<(Engine, Allocator)> {
    let mut config = base();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
    match Engine::new(&config) {
        Ok(engine) => return Ok((engine, Allocator::Pooling)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the pooling allocator is not available here; instances are allocated on demand")
        }
    }
    let engine = Engine::new(&base()).map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e:#}"))?;
    Ok((engine, Allocator::OnDemand))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_read_as_major_and_minor() {
        assert_eq!(kernel_version("6.1.0-28-amd64\n"), Some((6, 1)));
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("5.15"), Some((5, 15)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("6.1.0").is_some_and(|v| v < PAGEMAP_SCAN_SINCE));
        assert!(kernel_version("6.7.0").is_some_and(|v| v >= PAGEMAP_SCAN_SINCE));
    }

    #[test]
    fn the_pool_fits_a_full_node_of_components() {
        let pool = pooling();
        // Every component instance can have its memories and tables at the per-component maxima of a
        // typical wasip2 component (main module + shims: ≤ 4 core instances, 2 memories, 4 tables).
        assert!(pool.get_total_core_instances() >= 4 * pool.get_total_component_instances());
        assert!(pool.get_total_memories() >= 2 * pool.get_total_component_instances());
        assert!(pool.get_total_tables() >= 4 * pool.get_total_component_instances());
    }

    #[test]
    fn pooled_engine_instantiates_components() {
        let (engine, allocator) = build_engine().unwrap();
        // Linux x86-64/aarch64 with default overcommit (this project's nodes and CI) reserves the pool.
        assert_eq!(allocator, Allocator::Pooling);
        let component = wasmtime::component::Component::new(
            &engine,
            "(component (core module $m (memory 1) (table 1 funcref)) (core instance (instantiate $m)))",
        )
        .unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        for _ in 0..3 {
            // Slots are returned when the instance's store goes, and reused.
            linker.instantiate(&mut store, &component).unwrap();
        }
    }
}
