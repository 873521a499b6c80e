//! The subset of CRI `runtime.v1` messages the harness sends and reads, declared with prost derives.
//!
//! Field numbers and types follow `kubernetes/cri-api` `pkg/apis/runtime/v1/api.proto`; fields the
//! harness never sets are left out (absent fields encode as defaults, unknown ones are skipped on decode),
//! which keeps protoc out of the build.

use std::collections::HashMap;

/// `RunPodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    /// The pod's configuration.
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    /// The RuntimeClass handler (containerd runtime name).
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

/// `RunPodSandboxResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    /// The new sandbox's id.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `PodSandboxConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    /// Name, uid, namespace, attempt.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    /// The pod's hostname.
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// Host directory the pod's container logs go under.
    #[prost(string, tag = "3")]
    pub log_directory: String,
    /// The pod's resolver settings (CRI writes them into the resolv.conf its containers get).
    #[prost(message, optional, tag = "4")]
    pub dns_config: Option<DnsConfig>,
    /// Labels.
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "7")]
    pub annotations: HashMap<String, String>,
}

/// `DNSConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DnsConfig {
    /// Nameserver addresses.
    #[prost(string, repeated, tag = "1")]
    pub servers: Vec<String>,
    /// Search domains.
    #[prost(string, repeated, tag = "2")]
    pub searches: Vec<String>,
    /// resolv.conf options, e.g. `ndots:5`.
    #[prost(string, repeated, tag = "3")]
    pub options: Vec<String>,
}

/// `PodSandboxMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    /// Pod name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Pod uid.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Kubernetes namespace.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// Attempt number.
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `PodSandboxIdRequest`: the shape of `StopPodSandboxRequest` and `RemovePodSandboxRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxIdRequest {
    /// The sandbox id.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `CreateContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    /// The sandbox the container joins.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// The container's configuration.
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    /// The sandbox's configuration, as the kubelet resends it.
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// `CreateContainerResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    /// The new container's id.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `ContainerConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    /// Name and attempt.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    /// The image.
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    /// Replaces the image's entrypoint.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "5")]
    pub working_dir: String,
    /// Environment.
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    /// Bind mounts.
    #[prost(message, repeated, tag = "7")]
    pub mounts: Vec<Mount>,
    /// Labels.
    #[prost(map = "string, string", tag = "9")]
    pub labels: HashMap<String, String>,
    /// Annotations.
    #[prost(map = "string, string", tag = "10")]
    pub annotations: HashMap<String, String>,
    /// Log file, relative to the sandbox's `log_directory`.
    #[prost(string, tag = "11")]
    pub log_path: String,
    /// Linux settings (resources).
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

/// `LinuxContainerConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    /// Resource limits.
    #[prost(message, optional, tag = "1")]
    pub resources: Option<LinuxContainerResources>,
}

/// `LinuxContainerResources` (the fields the tests set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerResources {
    /// Memory limit in bytes; 0 is none.
    #[prost(int64, tag = "4")]
    pub memory_limit_in_bytes: i64,
}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// Container name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Attempt number.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    /// Image reference or id.
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `Mount`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Path inside the container.
    #[prost(string, tag = "1")]
    pub container_path: String,
    /// Path on the host.
    #[prost(string, tag = "2")]
    pub host_path: String,
    /// Read-only.
    #[prost(bool, tag = "3")]
    pub readonly: bool,
}

/// `ContainerIdRequest`: the shape of `StartContainerRequest` and `RemoveContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerIdRequest {
    /// The container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `StopContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    /// The container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Seconds between SIGTERM and SIGKILL.
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

/// `ContainerStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusRequest {
    /// The container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Ask for the runtime's extra info.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ContainerStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusResponse {
    /// The status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<ContainerStatus>,
    /// The runtime's extra info when asked for (`verbose`); containerd puts one JSON document under `info`.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `ContainerStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    /// Container id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `ContainerState`: 0 created, 1 running, 2 exited, 3 unknown.
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// Exit code (valid when exited).
    #[prost(int32, tag = "7")]
    pub exit_code: i32,
    /// Short reason (`Completed`, `Error`, `OOMKilled`).
    #[prost(string, tag = "10")]
    pub reason: String,
    /// Human-readable message.
    #[prost(string, tag = "11")]
    pub message: String,
    /// Absolute path of the container's log file.
    #[prost(string, tag = "15")]
    pub log_path: String,
}

/// `ImageStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    /// The image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    /// Ask for extra info.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ImageStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    /// The image, absent when CRI does not know it.
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// `Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    /// Image id (config digest).
    #[prost(string, tag = "1")]
    pub id: String,
    /// Tags.
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
}

/// `PodSandboxStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusRequest {
    /// The sandbox id.
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    /// Ask for the runtime's extra info.
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `PodSandboxStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatusResponse {
    /// The status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    /// The runtime's extra info when asked for (`verbose`); containerd puts one JSON document under `info`.
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

/// `PodSandboxStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxStatus {
    /// Sandbox id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `PodSandboxState`: 0 ready, 1 not ready.
    #[prost(int32, tag = "3")]
    pub state: i32,
    /// The pod's network, when CNI gave it one.
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxNetworkStatus {
    /// The pod's primary IP.
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// Any response without fields (`StartContainerResponse`, `StopPodSandboxResponse`, …).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// `ContainerStatsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatsRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `ContainerStatsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatsResponse {
    /// The stats.
    #[prost(message, optional, tag = "1")]
    pub stats: Option<ContainerStats>,
}

/// `ContainerStats` (CPU and memory).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStats {
    /// CPU usage.
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<CpuUsage>,
    /// Memory usage.
    #[prost(message, optional, tag = "3")]
    pub memory: Option<MemoryUsage>,
}

/// `CpuUsage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuUsage {
    /// Cumulative CPU time, in nanoseconds.
    #[prost(message, optional, tag = "2")]
    pub usage_core_nano_seconds: Option<UInt64Value>,
}

/// `MemoryUsage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryUsage {
    /// Working set, the figure the kubelet evicts and `kubectl top` reports by.
    #[prost(message, optional, tag = "2")]
    pub working_set_bytes: Option<UInt64Value>,
    /// Total usage.
    #[prost(message, optional, tag = "4")]
    pub usage_bytes: Option<UInt64Value>,
}

/// `UInt64Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UInt64Value {
    /// The value.
    #[prost(uint64, tag = "1")]
    pub value: u64,
}
