//! A container's OCI spec, read once when the task is created into what the shim uses of it.
//!
//! Every other module takes a [`ContainerSpec`]; only this one knows the OCI layout, CRI's annotations
//! and the operator's `WASMKUBE_*` variables (their names from `wasmkube_contract`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use wasmkube_contract::component::{DOCKER_CONFIG_KEY, PULL_SECRETS_DIR, SHIM_MOUNTS_DIR};
use wasmkube_contract::env::ContainerEnv;
use wasmkube_contract::runtime::{
    CONTAINER_TYPE_ANNOTATION, DEFAULT_TERMINATION_MESSAGE_PATH, SANDBOX_ID_ANNOTATION, SANDBOX_PROCESS_ANNOTATION,
    TERMINATION_MESSAGE_PATH_ANNOTATION,
};

use crate::metrics::ContainerLabels;
use crate::runtime::LaunchError;

/// Mount destinations that belong to the container's plumbing, not to the guest (the last one holds
/// what the operator mounts for the shim itself, such as registry credentials).
const SYSTEM_MOUNTS: [&str; 4] = ["/proc", "/sys", "/dev", SHIM_MOUNTS_DIR];

/// What kind of container containerd asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// A pod's sandbox (pause) container: it holds the pod's namespaces.
    Sandbox(SandboxHolder),
    /// An application container (of a pod, or started directly with `ctr`).
    App,
}

/// What holds a pod's sandbox (docs/shim.md, "Pod sandboxes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxHolder {
    /// The daemon, with no process: containerd made the pod's network namespace already, and the pod's
    /// components (instances in the daemon) need nothing else the pause process would hold.
    Daemon,
    /// A real pause process under runc, for the reason given.
    Process(ProcessReason),
}

/// Why a sandbox needs a real process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessReason {
    /// The pod asks for one with [`SANDBOX_PROCESS_ANNOTATION`] (e.g. for a non-wasm container).
    Requested,
    /// The spec asks the runtime to create the network namespace (containerd does so for pods with user
    /// namespaces, and then takes the pod's namespace from the sandbox's pid).
    NewNetworkNamespace,
}

/// A bind mount the guest may use as a preopened directory (whether its source is a directory is
/// checked when the WASI context is set up, on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    /// The host path behind the mount.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Mounted `ro`.
    pub read_only: bool,
}

/// What the shim uses of one container's OCI spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Sandbox or application, from CRI's container-type annotation.
    pub kind: ContainerKind,
    /// The pod sandbox an application container belongs to (CRI's sandbox-id annotation).
    pub sandbox_id: Option<String>,
    /// `root.path` (relative to the bundle unless absolute), when the spec names one.
    pub root: Option<PathBuf>,
    /// `process.args[0]`: the component reference (`oci://…` or a path in the rootfs).
    pub component: Option<String>,
    /// `process.args`, the guest's argv (the reference included, as a process sees its own name).
    pub args: Vec<String>,
    /// The operator's settings for the shim (`WASMKUBE_*`).
    pub env: ContainerEnv,
    /// The guest's environment: `process.env` without the shim's variables.
    pub guest_env: Vec<(String, String)>,
    /// The pod's network namespace (`linux.namespaces[type=network].path`); `None`: the daemon's.
    pub network_namespace: Option<PathBuf>,
    /// `linux.resources.memory.limit` (absent or ≤ 0: none).
    pub memory_limit: Option<u64>,
    /// Bind mounts outside the system paths, in spec order.
    pub volumes: Vec<GuestVolume>,
    /// Host paths of the `.dockerconfigjson` files mounted under the pull-secrets directory, in spec order.
    pub pull_secrets: Vec<PathBuf>,
    /// The labels of the container's metric series.
    pub labels: ContainerLabels,
    /// The host file behind the container's termination-message path, when the spec mounts one.
    pub termination_log: Option<PathBuf>,
    /// The pod's name-resolution files, as the container runtime mounts them for a process.
    pub name_files: NameFiles,
}

/// The host files a pod's processes see as `/etc/resolv.conf` and `/etc/hosts` (CRI writes them from the
/// pod's `dnsConfig`/`dnsPolicy`; the kubelet adds `hostAliases`). Outbound HTTP resolves names with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFiles {
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
}

/// Where a process reads its resolver configuration and static host names.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// See [`RESOLV_CONF`].
pub const HOSTS: &str = "/etc/hosts";

impl NameFiles {
    /// Whether the spec mounts neither file (the daemon's own resolver settings apply).
    pub fn is_empty(&self) -> bool {
        self.resolv_conf.is_none() && self.hosts.is_none()
    }
}

/// A spec the shim cannot run: the container ends with `error` when started.
#[derive(Debug, Clone)]
pub struct InvalidSpec {
    /// Why, with the exit code the container reports.
    pub error: LaunchError,
    /// Where the termination message goes (read before the error, so it can be reported).
    pub termination_log: Option<PathBuf>,
}

impl ContainerSpec {
    /// Whether anything runs from the container's root filesystem; a sandbox held by the daemon runs
    /// nothing, so its image is never mounted.
    pub fn uses_rootfs(&self) -> bool {
        self.kind != ContainerKind::Sandbox(SandboxHolder::Daemon)
    }

    /// Reads what the shim needs of container `id`'s spec.
    pub fn from_oci(id: &str, spec: &Spec) -> Result<Self, InvalidSpec> {
        let termination_log = termination_log(spec);
        let process = spec.process().as_ref();
        let env_entries = process.and_then(|p| p.env().as_deref()).unwrap_or_default();
        let (env, guest_env) = ContainerEnv::split_oci_env(env_entries).map_err(|e| InvalidSpec {
            error: LaunchError::cannot_run(e.to_string()),
            termination_log: termination_log.clone(),
        })?;
        let args = process.and_then(|p| p.args().clone()).unwrap_or_default();
        let mounts = spec.mounts().as_deref().unwrap_or_default();
        let empty = HashMap::new();
        let annotations = spec.annotations().as_ref().unwrap_or(&empty);
        let kind = match annotations.get(CONTAINER_TYPE_ANNOTATION).map(String::as_str) {
            Some("sandbox") => ContainerKind::Sandbox(sandbox_holder(spec, annotations)),
            // Containers without the annotation (`ctr run`) are applications.
            _ => ContainerKind::App,
        };
        Ok(Self {
            kind,
            // CRI sets it on the sandbox too; only an application's names another container.
            sandbox_id: annotations.get(SANDBOX_ID_ANNOTATION).filter(|_| kind == ContainerKind::App).cloned(),
            root: spec.root().as_ref().map(|r| r.path().clone()),
            component: args.first().cloned(),
            args,
            labels: ContainerLabels::resolve(id, &env, annotations),
            env,
            guest_env,
            network_namespace: network_namespace(spec),
            memory_limit: memory_limit(spec),
            volumes: mounts.iter().filter_map(guest_volume).collect(),
            pull_secrets: pull_secret_files(mounts),
            termination_log,
            name_files: NameFiles {
                resolv_conf: mounted_file(mounts, RESOLV_CONF),
                hosts: mounted_file(mounts, HOSTS),
            },
        })
    }
}

/// The host file bind-mounted at `destination`.
fn mounted_file(mounts: &[Mount], destination: &str) -> Option<PathBuf> {
    mounts.iter().rev().find(|m| m.destination() == Path::new(destination)).and_then(|m| m.source().clone())
}

/// A sandbox is held by the daemon unless the pod asks for a process or only a process can give it its
/// network namespace.
fn sandbox_holder(spec: &Spec, annotations: &HashMap<String, String>) -> SandboxHolder {
    if annotations.get(SANDBOX_PROCESS_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return SandboxHolder::Process(ProcessReason::Requested);
    }
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| n.iter().find(|ns| ns.typ() == LinuxNamespaceType::Network));
    match network {
        // A new namespace without a path: the runtime would have to create it.
        Some(ns) if ns.path().is_none() => SandboxHolder::Process(ProcessReason::NewNetworkNamespace),
        // A path containerd pinned, or none at all (host network).
        _ => SandboxHolder::Daemon,
    }
}

fn network_namespace(spec: &Spec) -> Option<PathBuf> {
    let namespaces = spec.linux().as_ref()?.namespaces().as_ref()?;
    namespaces.iter().find(|ns| ns.typ() == LinuxNamespaceType::Network)?.path().clone()
}

fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec.linux().as_ref()?.resources().as_ref()?.memory().as_ref()?.limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// The pod's own termination-message path (CRI passes it as an annotation) or Kubernetes' default, and
/// the host file mounted there.
fn termination_log(spec: &Spec) -> Option<PathBuf> {
    let wanted = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(TERMINATION_MESSAGE_PATH_ANNOTATION).map(String::as_str))
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
    spec.mounts().iter().flatten().find(|m| m.destination() == Path::new(wanted)).and_then(|m| m.source().clone())
}

fn guest_volume(mount: &Mount) -> Option<GuestVolume> {
    let dest = mount.destination();
    let options = mount.options().as_deref().unwrap_or_default();
    let is_bind = mount.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
    let system = SYSTEM_MOUNTS.iter().any(|s| dest.starts_with(Path::new(s)))
        || dest == Path::new(RESOLV_CONF)
        || dest == Path::new(HOSTS);
    if !is_bind || system {
        return None;
    }
    Some(GuestVolume {
        host: mount.source().clone()?,
        guest: dest.to_string_lossy().into_owned(),
        read_only: options.iter().any(|o| o == "ro"),
    })
}

fn pull_secret_files(mounts: &[Mount]) -> Vec<PathBuf> {
    let base = Path::new(PULL_SECRETS_DIR);
    mounts
        .iter()
        .filter(|m| m.destination().starts_with(base))
        .filter_map(|m| {
            let source = m.source().as_ref()?;
            // A directory mount of the whole secret, or the key mounted as a single file.
            Some(if m.destination().ends_with(DOCKER_CONFIG_KEY) {
                source.clone()
            } else {
                source.join(DOCKER_CONFIG_KEY)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A spec from the JSON fields given, as containerd writes `config.json`.
    fn oci(fields: serde_json::Value) -> Spec {
        let mut spec = json!({ "ociVersion": "1.0.2" });
        if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        serde_json::from_value(spec).unwrap()
    }

    fn parse(fields: serde_json::Value) -> ContainerSpec {
        ContainerSpec::from_oci("c1", &oci(fields)).unwrap()
    }

    fn bind(dest: &str, source: &str, extra: &[&str]) -> serde_json::Value {
        let mut options = vec!["rbind"];
        options.extend(extra);
        json!({ "destination": dest, "source": source, "type": "bind", "options": options })
    }

    #[test]
    fn an_empty_spec_is_an_app_with_nothing_to_run() {
        let spec = parse(json!({}));
        let want = ContainerSpec {
            kind: ContainerKind::App,
            sandbox_id: None,
            root: None,
            component: None,
            args: vec![],
            env: ContainerEnv::default(),
            guest_env: vec![],
            network_namespace: None,
            memory_limit: None,
            volumes: vec![],
            pull_secrets: vec![],
            labels: ContainerLabels { container: "c1".into(), ..Default::default() },
            termination_log: None,
            name_files: NameFiles::default(),
        };
        assert_eq!(spec, want);
    }

    #[test]
    fn kind_comes_from_the_cri_annotation() {
        let table = [
            (json!({ CONTAINER_TYPE_ANNOTATION: "sandbox" }), ContainerKind::Sandbox(SandboxHolder::Daemon)),
            (json!({ CONTAINER_TYPE_ANNOTATION: "container" }), ContainerKind::App),
            (json!({}), ContainerKind::App),
        ];
        for (annotations, kind) in table {
            assert_eq!(parse(json!({ "annotations": annotations })).kind, kind, "{annotations}");
        }
    }

    #[test]
    fn a_sandbox_is_held_by_the_daemon_unless_the_pod_asks_or_needs_a_new_network_namespace() {
        let netns = |path: Option<&str>| match path {
            Some(p) => json!({ "namespaces": [{ "type": "network", "path": p }, { "type": "ipc" }] }),
            None => json!({ "namespaces": [{ "type": "network" }, { "type": "ipc" }] }),
        };
        let sandbox = json!({ CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_ID_ANNOTATION: "s1" });
        let asking = json!({ CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_PROCESS_ANNOTATION: " True " });
        let declining = json!({ CONTAINER_TYPE_ANNOTATION: "sandbox", SANDBOX_PROCESS_ANNOTATION: "false" });
        let table = [
            (sandbox.clone(), netns(Some("/var/run/netns/cni-1")), SandboxHolder::Daemon),
            // Host network: no network namespace in the spec.
            (sandbox.clone(), json!({ "namespaces": [{ "type": "ipc" }] }), SandboxHolder::Daemon),
            (sandbox, netns(None), SandboxHolder::Process(ProcessReason::NewNetworkNamespace)),
            (asking, netns(Some("/var/run/netns/cni-1")), SandboxHolder::Process(ProcessReason::Requested)),
            (declining, netns(Some("/var/run/netns/cni-1")), SandboxHolder::Daemon),
        ];
        for (annotations, linux, holder) in table {
            let spec = parse(json!({ "annotations": annotations, "linux": linux }));
            assert_eq!(spec.kind, ContainerKind::Sandbox(holder), "{annotations} {linux}");
            assert_eq!(spec.sandbox_id, None, "a sandbox belongs to no other sandbox");
            assert_eq!(spec.uses_rootfs(), holder != SandboxHolder::Daemon);
        }
        let app =
            parse(json!({ "annotations": { CONTAINER_TYPE_ANNOTATION: "container", SANDBOX_ID_ANNOTATION: "s1" } }));
        assert_eq!((app.kind, app.sandbox_id.as_deref(), app.uses_rootfs()), (ContainerKind::App, Some("s1"), true));
    }

    #[test]
    fn process_args_name_the_component_and_env_is_split() {
        let spec = parse(json!({
            "root": { "path": "rootfs" },
            "process": {
                "cwd": "/", "user": { "uid": 0, "gid": 0 },
                "args": ["oci://r.example/app@sha256:abc", "--flag"],
                "env": ["PATH=/bin", "WASMKUBE_HTTP_PORT=9000", "WASMKUBE_APP=hello", "GREETING=hi",
                        "WASMKUBE_ALLOWED_OUTBOUND_HOSTS=a.example,*.b.example:443", "NOEQUALS"],
            },
        }));
        assert_eq!(spec.root, Some(PathBuf::from("rootfs")));
        assert_eq!(spec.component.as_deref(), Some("oci://r.example/app@sha256:abc"));
        assert_eq!(spec.args, ["oci://r.example/app@sha256:abc", "--flag"]);
        assert_eq!(spec.env.http_port, Some(9000));
        assert_eq!(spec.env.allowed_outbound_hosts, ["a.example", "*.b.example:443"]);
        let guest: Vec<(&str, &str)> = spec.guest_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(guest, [("PATH", "/bin"), ("GREETING", "hi")], "the guest never sees WASMKUBE_*");
        assert_eq!(spec.labels.wasmapp, "hello");
    }

    #[test]
    fn a_bad_port_is_exit_126_with_its_message_and_keeps_the_termination_log() {
        let spec = oci(json!({
            "process": {
                "cwd": "/", "user": { "uid": 0, "gid": 0 },
                "args": ["/app.wasm"], "env": ["WASMKUBE_HTTP_PORT=70000"],
            },
            "mounts": [bind("/dev/termination-log", "/host/term", &[])],
        }));
        let err = ContainerSpec::from_oci("c1", &spec).unwrap_err();
        assert_eq!(err.error.exit_code, 126);
        assert_eq!(err.error.message, "WASMKUBE_HTTP_PORT=\"70000\" is not a TCP port (1 to 65535)");
        assert_eq!(err.termination_log, Some(PathBuf::from("/host/term")));
    }

    #[test]
    fn namespaces_and_memory_limit_come_from_linux() {
        let table = [
            (
                json!({ "namespaces": [{ "type": "ipc", "path": "/proc/42/ns/ipc" },
                                    { "type": "network", "path": "/proc/42/ns/net" }],
                     "resources": { "memory": { "limit": 1048576 } } }),
                Some("/proc/42/ns/net"),
                Some(1_048_576),
            ),
            (json!({ "namespaces": [{ "type": "network" }], "resources": { "memory": { "limit": -1 } } }), None, None),
            (json!({ "resources": { "memory": { "limit": 0 } } }), None, None),
        ];
        for (linux, netns, limit) in table {
            let spec = parse(json!({ "linux": linux }));
            assert_eq!(spec.network_namespace.as_deref(), netns.map(Path::new), "{linux}");
            assert_eq!(spec.memory_limit, limit, "{linux}");
        }
    }

    #[test]
    fn only_binds_outside_system_paths_are_guest_volumes() {
        let spec = parse(json!({ "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            bind("/dev/shm", "/host/shm", &[]),
            bind("/var/run/wasmkube/pull-secrets/reg", "/host/reg", &["ro"]),
            bind("/data", "/host/data", &[]),
            bind("/cfg", "/host/cfg", &["ro"]),
            { "destination": "/etc/hosts", "source": "/host/hosts", "options": ["bind", "ro"] },
            bind("/etc/resolv.conf", "/host/resolv.conf", &["ro"]),
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" },
        ]}));
        let want = [("/host/data", "/data", false), ("/host/cfg", "/cfg", true)];
        let want: Vec<GuestVolume> = want
            .iter()
            .map(|(h, g, ro)| GuestVolume { host: h.into(), guest: g.to_string(), read_only: *ro })
            .collect();
        assert_eq!(spec.volumes, want);
        let name_files = NameFiles { resolv_conf: Some("/host/resolv.conf".into()), hosts: Some("/host/hosts".into()) };
        assert_eq!(spec.name_files, name_files, "the pod's name files are for resolving, not for the guest");
    }

    #[test]
    fn pull_secrets_are_the_docker_config_files_under_their_directory() {
        let spec = parse(json!({ "mounts": [
            bind("/data", "/host/data", &[]),
            bind("/var/run/wasmkube/pull-secrets/regcred", "/host/regcred", &["ro"]),
            bind("/var/run/wasmkube/pull-secrets/one/.dockerconfigjson", "/host/one-file", &["ro"]),
        ]}));
        assert_eq!(
            spec.pull_secrets,
            [PathBuf::from("/host/regcred/.dockerconfigjson"), PathBuf::from("/host/one-file")]
        );
    }

    #[test]
    fn termination_log_is_the_host_side_of_the_pods_path() {
        let mounts = json!([bind("/dev/termination-log", "/host/default", &[]), bind("/msg", "/host/own", &[])]);
        let table = [
            (json!({}), Some("/host/default")),
            (json!({ TERMINATION_MESSAGE_PATH_ANNOTATION: "/msg" }), Some("/host/own")),
            (json!({ TERMINATION_MESSAGE_PATH_ANNOTATION: "/elsewhere" }), None),
        ];
        for (annotations, want) in table {
            let spec = parse(json!({ "annotations": annotations, "mounts": mounts }));
            assert_eq!(spec.termination_log.as_deref(), want.map(Path::new), "{annotations}");
        }
        assert_eq!(parse(json!({})).termination_log, None);
    }

    #[test]
    fn labels_prefer_the_operator_env_over_cri_annotations() {
        let spec = parse(json!({
            "process": { "cwd": "/", "user": { "uid": 0, "gid": 0 }, "env": ["WASMKUBE_NAMESPACE=apps"] },
            "annotations": {
                "io.kubernetes.cri.sandbox-namespace": "pod-ns",
                "io.kubernetes.cri.sandbox-name": "hello-7d9f-abcde",
                "io.kubernetes.cri.container-name": "app",
            },
        }));
        let want = ContainerLabels {
            namespace: "apps".into(),
            wasmapp: "".into(),
            pod: "hello-7d9f-abcde".into(),
            container: "app".into(),
        };
        assert_eq!(spec.labels, want);
    }
}
