//! A CRI client (`runtime.v1` RuntimeService and ImageService) over a private containerd's socket,
//! with a small blocking API that drives pods the way the kubelet does.

pub mod log;
pub mod proto;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, IoContext, Result};
pub use log::{parse_cri_log, CriLogLine};
pub use proto::DnsConfig;
use proto::*;

/// `ContainerState` values of CRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// Anything else.
    Unknown,
}

impl From<i32> for ContainerState {
    fn from(v: i32) -> Self {
        match v {
            0 => ContainerState::Created,
            1 => ContainerState::Running,
            2 => ContainerState::Exited,
            _ => ContainerState::Unknown,
        }
    }
}

/// What `ContainerStatus` says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// State.
    pub state: ContainerState,
    /// Exit code (valid when exited).
    pub exit_code: i32,
    /// Short reason (`Completed`, `Error`, …).
    pub reason: String,
    /// Message.
    pub message: String,
    /// The container's CRI log file.
    pub log_path: PathBuf,
}

/// A pod as the harness created it: its id and the config the kubelet would resend.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Sandbox id.
    pub id: String,
    /// The sandbox config (CreateContainer repeats it).
    pub config: PodSandboxConfig,
}

impl Pod {
    /// The pod's log directory on the host.
    pub fn log_directory(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }
}

/// What a test asks for in a pod besides its name.
#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    /// The pod's resolver settings, as the kubelet passes a pod's `dnsPolicy`/`dnsConfig`.
    pub dns_config: Option<DnsConfig>,
    /// The pod's annotations.
    pub annotations: HashMap<String, String>,
}

/// What a test asks for in one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Container name (also its log file name).
    pub name: String,
    /// Image reference (imported into [`crate::containerd::CRI_NAMESPACE`]).
    pub image: String,
    /// Replaces the entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Bind mounts (container path, host path, read-only).
    pub mounts: Vec<(String, PathBuf, bool)>,
    /// Annotations.
    pub annotations: HashMap<String, String>,
    /// `resources.memory_limit_in_bytes`, as the kubelet sets it from `limits.memory`.
    pub memory_limit_bytes: Option<i64>,
}

/// A blocking CRI client.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    log_root: PathBuf,
    timeout: Duration,
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient").field("log_root", &self.log_root).finish_non_exhaustive()
    }
}

const RUNTIME: &str = "/runtime.v1.RuntimeService/";
const IMAGES: &str = "/runtime.v1.ImageService/";

impl CriClient {
    /// Connects to the CRI server on `socket`; pod logs go under `log_root/<pod name>`.
    pub fn connect(socket: &Path, log_root: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "building a tokio runtime for the CRI client".into())?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                // The URI is a placeholder: the connector always dials the unix socket.
                Endpoint::from_static("http://localhost")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                    }))
                    .await
            })
            .map_err(|e| Error::Cri { call: "connect".into(), reason: format!("{}: {e}", socket.display()) })?;
        Ok(Self { rt, channel, log_root: log_root.to_path_buf(), timeout: Duration::from_secs(120) })
    }

    fn call<Req, Resp>(&self, service: &str, method: &str, req: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path: http::uri::PathAndQuery = format!("{service}{method}")
            .parse()
            .map_err(|e| Error::Cri { call: method.into(), reason: format!("bad path: {e}") })?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let fail = |reason: String| Error::Cri { call: method.into(), reason };
        self.rt.block_on(async {
            let work = async {
                grpc.ready().await.map_err(|e| fail(format!("not ready: {e}")))?;
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                grpc.unary(tonic::Request::new(req), path, codec)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| fail(format!("{:?}: {}", s.code(), s.message())))
            };
            tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| fail(format!("no answer within {:?}", self.timeout)))?
        })
    }

    /// RunPodSandbox of pod `name` under runtime `handler`; its logs go to `<log root>/<name>`.
    pub fn run_pod_sandbox(&self, name: &str, handler: &str) -> Result<Pod> {
        self.run_pod_sandbox_with(name, handler, PodOptions::default())
    }

    /// The same with the pod settings in `options`.
    pub fn run_pod_sandbox_with(&self, name: &str, handler: &str, options: PodOptions) -> Result<Pod> {
        let log_directory = self.log_root.join(name);
        std::fs::create_dir_all(&log_directory).ctx(|| format!("creating {}", log_directory.display()))?;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            dns_config: options.dns_config,
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            annotations: options.annotations,
        };
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        let resp: RunPodSandboxResponse = self.call(RUNTIME, "RunPodSandbox", req)?;
        Ok(Pod { id: resp.pod_sandbox_id, config })
    }

    /// CreateContainer in `pod`; its log file is `<pod log dir>/<name>.log`.
    pub fn create_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: spec.name.clone(), attempt: 0 }),
            image: Some(ImageSpec { image: spec.image.clone() }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            envs: spec.env.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
            mounts: spec
                .mounts
                .iter()
                .map(|(c, h, ro)| Mount {
                    container_path: c.clone(),
                    host_path: h.to_string_lossy().into_owned(),
                    readonly: *ro,
                })
                .collect(),
            annotations: spec.annotations.clone(),
            log_path: format!("{}.log", spec.name),
            linux: spec.memory_limit_bytes.map(|limit| LinuxContainerConfig {
                resources: Some(LinuxContainerResources { memory_limit_in_bytes: limit }),
            }),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let resp: CreateContainerResponse = self.call(RUNTIME, "CreateContainer", req)?;
        Ok(resp.container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "StartContainer", ContainerIdRequest { container_id: id.into() })?;
        Ok(())
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout_secs`.
    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<()> {
        let req = StopContainerRequest { container_id: id.into(), timeout: timeout_secs };
        let _: Empty = self.call(RUNTIME, "StopContainer", req)?;
        Ok(())
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "RemoveContainer", ContainerIdRequest { container_id: id.into() })?;
        Ok(())
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<Status> {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: false };
        let resp: ContainerStatusResponse = self.call(RUNTIME, "ContainerStatus", req)?;
        let s = resp
            .status
            .ok_or_else(|| Error::Cri { call: "ContainerStatus".into(), reason: format!("no status for {id}") })?;
        Ok(Status {
            state: s.state.into(),
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            log_path: PathBuf::from(s.log_path),
        })
    }

    /// The environment containerd gave container `id`'s process (its runtime spec's `process.env`, from the
    /// verbose ContainerStatus), as `NAME=value` entries.
    pub fn container_env(&self, id: &str) -> Result<Vec<String>> {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: true };
        let resp: ContainerStatusResponse = self.call(RUNTIME, "ContainerStatus", req)?;
        let info = verbose_info(&resp.info, "ContainerStatus", id)?;
        let env = info.pointer("/runtimeSpec/process/env").and_then(|e| e.as_array()).ok_or_else(|| Error::Cri {
            call: "ContainerStatus".into(),
            reason: format!("the verbose info of {id} has no runtimeSpec.process.env"),
        })?;
        Ok(env.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
    }

    /// Polls ContainerStatus until the container reaches `state`.
    pub fn wait_container_state(&self, id: &str, state: ContainerState, timeout: Duration) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id)?;
            if status.state == state {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Wait {
                    what: format!("container {id} in state {state:?}"),
                    timeout,
                    last: format!("{status:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ContainerStats: (CPU nanoseconds, working-set bytes), zero where CRI reports nothing.
    pub fn container_stats(&self, id: &str) -> Result<(u64, u64)> {
        let resp: ContainerStatsResponse =
            self.call(RUNTIME, "ContainerStats", ContainerStatsRequest { container_id: id.into() })?;
        let stats = resp.stats.unwrap_or_default();
        let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds).map_or(0, |v| v.value);
        let memory = stats.memory.and_then(|m| m.working_set_bytes).map_or(0, |v| v.value);
        Ok((cpu, memory))
    }

    /// StopPodSandbox.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "StopPodSandbox", PodSandboxIdRequest { pod_sandbox_id: id.into() })?;
        Ok(())
    }

    /// RemovePodSandbox (removes its containers too).
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let _: Empty = self.call(RUNTIME, "RemovePodSandbox", PodSandboxIdRequest { pod_sandbox_id: id.into() })?;
        Ok(())
    }

    /// PodSandboxStatus: the pod's IP, as the kubelet reports it (`status.podIP`).
    pub fn pod_ip(&self, pod: &Pod) -> Result<std::net::IpAddr> {
        let req = PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: false };
        let resp: PodSandboxStatusResponse = self.call(RUNTIME, "PodSandboxStatus", req)?;
        let ip = resp.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        ip.parse().map_err(|_| Error::Cri {
            call: "PodSandboxStatus".into(),
            reason: format!("pod {} has no IP: {ip:?}", pod.id),
        })
    }

    /// The network namespace of `pod`'s sandbox, from containerd's verbose PodSandboxStatus: the namespace
    /// file its runtime spec names, else the sandbox process's `/proc/PID/ns/net`.
    pub fn pod_network_namespace(&self, pod: &Pod) -> Result<PathBuf> {
        let req = PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: true };
        let resp: PodSandboxStatusResponse = self.call(RUNTIME, "PodSandboxStatus", req)?;
        let fail = |reason: String| Error::Cri { call: "PodSandboxStatus".into(), reason };
        let info = verbose_info(&resp.info, "PodSandboxStatus", &pod.id)?;
        let namespaces = info.pointer("/runtimeSpec/linux/namespaces").and_then(|n| n.as_array());
        let from_spec = namespaces
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        let from_pid =
            || info["pid"].as_u64().filter(|pid| *pid > 0).map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
        from_spec.or_else(from_pid).ok_or_else(|| fail(format!("pod {} names no network namespace", pod.id)))
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet ends a pod.
    pub fn remove_pod(&self, pod: &Pod) -> Result<()> {
        self.stop_pod_sandbox(&pod.id)?;
        self.remove_pod_sandbox(&pod.id)
    }

    /// ImageStatus: the image's id when CRI knows `image`.
    pub fn image_id(&self, image: &str) -> Result<Option<String>> {
        let req = ImageStatusRequest { image: Some(ImageSpec { image: image.into() }), verbose: false };
        let resp: ImageStatusResponse = self.call(IMAGES, "ImageStatus", req)?;
        Ok(resp.image.map(|i| i.id))
    }

    /// The parsed CRI log file of a container (`ContainerStatus.log_path`).
    pub fn read_log(&self, id: &str) -> Result<Vec<CriLogLine>> {
        let path = self.container_status(id)?.log_path;
        let text = std::fs::read_to_string(&path).ctx(|| format!("reading the CRI log {}", path.display()))?;
        Ok(parse_cri_log(&text))
    }
}

/// The JSON document containerd puts under `info` in a verbose status answer of `call` about `id`.
fn verbose_info(info: &HashMap<String, String>, call: &str, id: &str) -> Result<serde_json::Value> {
    let fail = |reason: String| Error::Cri { call: call.into(), reason };
    let info = info.get("info").ok_or_else(|| fail(format!("no verbose info for {id}")))?;
    serde_json::from_str(info).map_err(|e| fail(format!("the verbose info of {id} is not JSON: {e}")))
}
