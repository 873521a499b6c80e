//! `stats` in the cgroup v1 metrics shape containerd and the kubelet decode.

use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

use super::error::TaskError;
use crate::runtime::Usage;

/// The type URL containerd registers for cgroup v1 metrics.
const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// Encodes a container's usage as containerd's metrics message.
pub fn metrics_any(usage: &Usage) -> Result<Any, TaskError> {
    let memory = MemoryEntry { usage: usage.memory_bytes(), max: usage.memory_peak_bytes(), ..Default::default() };
    let metrics = Metrics {
        memory: MessageField::some(MemoryStat {
            usage: MessageField::some(memory),
            // The kubelet reads working set as usage minus inactive file; a guest has no page cache.
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage { total: usage.cpu_nanos(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let value = metrics.write_to_bytes().map_err(|e| TaskError::Internal(format!("cannot encode metrics: {e}")))?;
    Ok(Any { type_url: METRICS_TYPE_URL.to_string(), value, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_through_the_metrics_message() {
        let usage = Usage::default();
        usage.memory_grew(0, 4096);
        usage.add_cpu_nanos(12_345);
        let any = metrics_any(&usage).unwrap();
        assert_eq!(any.type_url, METRICS_TYPE_URL);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.cpu.usage.total, 12_345);
    }
}
