//! The `WasmApp` custom resource: Rust types, schema validation rules and the generated CRD.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the WasmApp CRD.
pub const GROUP: &str = "wasmkube.dev";
/// API version of the WasmApp CRD.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string of WasmApp objects.
pub const API_VERSION: &str = "wasmkube.dev/v1alpha1";
/// Default RuntimeClass for WasmApp pods.
pub const DEFAULT_RUNTIME_CLASS: &str = "wasmkube";
/// Default port a wasi:http component listens on (the shim's `default_http_port`).
pub const DEFAULT_HTTP_PORT: i32 = 8080;
/// Default port of the Service in front of an HTTP app.
pub const DEFAULT_SERVICE_PORT: i32 = 80;

/// Desired state of a WebAssembly component application.
// Why the allow: clippy reads the repeated `type_ = "string"` of different printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "wasmkube.dev",
    version = "v1alpha1",
    kind = "WasmApp",
    plural = "wasmapps",
    singular = "wasmapp",
    shortname = "wa",
    category = "wasm",
    namespaced,
    status = "WasmAppStatus",
    derive = "PartialEq",
    doc = "A WebAssembly component run as a Kubernetes workload by wasmkube.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every desired replica is available"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Current number of replicas"
    ),
    printcolumn(
        name = "Component",
        type_ = "string",
        json_path = ".spec.component",
        description = "OCI reference of the component"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1,
        description = "In-cluster URL of an HTTP app"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))")
        .message("every volumeMounts[].name must name an entry of spec.volumes")
        .reason(Reason::FieldValueInvalid)
        .field_path(".volumeMounts"),
    validation = Rule::new("!has(self.env) || self.env.all(e, !e.name.startsWith('WASMKUBE_'))")
        .message("env names starting with WASMKUBE_ are reserved for the wasmkube runtime")
        .reason(Reason::FieldValueForbidden)
        .field_path(".env"),
    validation = Rule::new("!has(self.podLabels) || !('app.kubernetes.io/name' in self.podLabels || 'app.kubernetes.io/managed-by' in self.podLabels)")
        .message("podLabels must not set app.kubernetes.io/name or app.kubernetes.io/managed-by: the operator selects pods with them")
        .reason(Reason::FieldValueForbidden)
        .field_path(".podLabels"),
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.minReplicas > 0 || has(self.http) || has(self.autoscaling.metrics)")
        .message("autoscaling.minReplicas 0 needs spec.http (for the default request-rate metric) or at least one Object or External metric: the HPA scales to zero only on those")
        .reason(Reason::FieldValueInvalid)
        .field_path(".autoscaling.minReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct WasmAppSpec {
    /// OCI reference of the component, without scheme: `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:DIGEST`.
    #[x_kube(validation = Rule::new(COMPONENT_RULE)
        .message("component must be an OCI reference without scheme, such as ghcr.io/org/app:1.0 or ghcr.io/org/app@sha256:<64 hex digits>")
        .reason(Reason::FieldValueInvalid))]
    #[validate(length(min = 1, max = 512))]
    pub component: String,

    /// Desired replicas (the scale subresource). Default 1; an autoscaled app's HPA writes it.
    // Why always present: the API server's scale subresource fails (and the HPA with it) when the field is
    // absent, so the schema default fills it on create and on read of objects stored without it.
    #[serde(default = "default_replicas")]
    #[validate(range(min = 0))]
    pub replicas: i32,

    /// Present for a wasi:http component: the port it serves and its Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,

    /// Arguments passed to the guest (after the component reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 256))]
    #[schemars(inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Environment of the guest; `valueFrom` is resolved by the kubelet as for any container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 128))]
    #[schemars(transform = bounds::env)]
    pub env: Vec<EnvVar>,

    /// Pod volumes that `volumeMounts` may expose to the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 32))]
    #[schemars(transform = bounds::volumes)]
    pub volumes: Vec<Volume>,

    /// Directories the guest sees: each mount is a WASI preopen, nothing else of the filesystem is visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 32))]
    pub volume_mounts: Vec<WasmVolumeMount>,

    /// Hosts the guest may reach over outbound HTTP: `host`, `host:port`, `*.domain[:port]` or `*`. Empty denies all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 64))]
    #[schemars(inner(length(max = 261)))]
    #[x_kube(validation = Rule::new(OUTBOUND_HOSTS_RULE)
        .message("each allowedOutboundHosts entry must be host, host:port, *.domain[:port] or * (no scheme, no path)")
        .reason(Reason::FieldValueInvalid))]
    pub allowed_outbound_hosts: Vec<String>,

    /// CPU and memory of the component; the memory limit is enforced per instance by the shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Secrets (`kubernetes.io/dockerconfigjson`) the shim uses to pull the component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 8))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// ServiceAccount of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(max = 253))]
    pub service_account_name: Option<String>,

    /// Extra labels on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::labels)]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::annotations)]
    pub pod_annotations: BTreeMap<String, String>,

    /// Node selector of the pods (the RuntimeClass adds its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::labels)]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Readiness probe; HTTP apps default to an HTTP GET on `http.healthPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,

    /// Liveness probe (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,

    /// Startup probe (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,

    /// Horizontal autoscaling of the WasmApp through its scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// RuntimeClass of the pods.
    #[serde(default = "default_runtime_class")]
    #[validate(length(min = 1, max = 253))]
    pub runtime_class_name: String,
}

/// A wasi:http component's serving configuration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    /// Port the component listens on inside the pod.
    #[serde(default = "default_http_port")]
    #[validate(range(min = 1, max = 65535))]
    pub port: i32,

    /// Port of the Service in front of the pods.
    #[serde(default = "default_service_port")]
    #[validate(range(min = 1, max = 65535))]
    pub service_port: i32,

    /// Path of the default readiness probe.
    #[serde(default = "default_health_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("http.healthPath must start with /"))]
    #[validate(length(min = 1, max = 1024))]
    pub health_path: String,

    /// One access-log line per request (client, method, path, status, time to the response head) in the
    /// container log, written by the runtime. Off by default: request counts are in the node's metrics either
    /// way, and a line per request costs throughput.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access_log: bool,
}

impl Default for HttpSpec {
    fn default() -> Self {
        Self {
            port: DEFAULT_HTTP_PORT,
            service_port: DEFAULT_SERVICE_PORT,
            health_path: default_health_path(),
            access_log: false,
        }
    }
}

/// A directory exposed to the guest as a WASI preopen.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WasmVolumeMount {
    /// Name of an entry of `spec.volumes`.
    #[validate(length(min = 1, max = 63))]
    pub name: String,

    /// Absolute guest path of the preopen (also the container mount path).
    #[x_kube(
        validation = Rule::new("self.startsWith('/')").message("mountPath must be an absolute path"),
        validation = Rule::new("!self.startsWith('/var/run/wasmkube')").message("mountPath must not be under /var/run/wasmkube (reserved for the runtime)")
    )]
    #[validate(length(min = 1, max = 1024))]
    pub mount_path: String,

    /// Mount read-only (the guest may not write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,

    /// Sub-path of the volume to mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(max = 1024))]
    pub sub_path: Option<String>,
}

/// Autoscaling of a WasmApp by a HorizontalPodAutoscaler on its scale subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.maxReplicas >= self.minReplicas")
        .message("autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.minReplicas > 0 || !has(self.metrics) || self.metrics.exists(m, m.type == 'Object' || m.type == 'External')")
        .message("autoscaling.minReplicas 0 needs at least one Object or External metric: the HPA scales to zero only on those")
        .reason(Reason::FieldValueInvalid)
        .field_path(".minReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Lowest replica count; 0 allows scale to zero (needs the HPAScaleToZero feature gate; idle HTTP apps
    /// are woken by the activator).
    #[serde(default = "default_min_replicas")]
    #[validate(range(min = 0))]
    pub min_replicas: i32,

    /// Highest replica count.
    #[validate(range(min = 1))]
    pub max_replicas: i32,

    /// Requests per second one replica should serve: the target of the default metric of an HTTP app that
    /// scales to zero (used only when `metrics` is empty and `minReplicas` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 1000000))]
    pub target_requests_per_second: Option<i32>,

    /// HPA metrics (autoscaling/v2); empty means the HPA default (80% CPU), or, for an HTTP app with
    /// `minReplicas: 0`, wasmkube's request rate (External metric `wasmkube_http_requests_per_second`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 16))]
    #[schemars(transform = bounds::metrics)]
    pub metrics: Vec<MetricSpec>,

    /// HPA scaling behavior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// Observed state of a WasmApp.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WasmAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods of the app (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,

    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The `spec.component` that `resolvedComponent` was resolved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_from: Option<String>,

    /// The digest reference the pods run (`REGISTRY/REPO@sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_component: Option<String>,

    /// Digest of the component the pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_digest: Option<String>,

    /// In-cluster URL of an HTTP app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// CEL rule for `spec.component`: an OCI reference (domain optional, tag and/or sha256 digest optional). As in
/// Docker's and the runtime's parser, the first path component is a registry only when it has a dot or a port
/// or is `localhost`; otherwise it belongs to the repository (on Docker Hub), which must be lower case.
const COMPONENT_RULE: &str = concat!(
    "self.matches('^(",
    "(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)+|localhost)(:[0-9]+)?",
    "|[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?:[0-9]+)/)?",
    "[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*",
    "(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$')"
);

/// CEL rule for `spec.allowedOutboundHosts`.
const OUTBOUND_HOSTS_RULE: &str = concat!(
    "self.all(h, size(h) <= 261 && h.matches('^([*]|([*][.])?",
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)",
    "(:[0-9]{1,5})?$'))"
);

fn default_runtime_class() -> String {
    DEFAULT_RUNTIME_CLASS.to_string()
}

fn default_http_port() -> i32 {
    DEFAULT_HTTP_PORT
}

fn default_service_port() -> i32 {
    DEFAULT_SERVICE_PORT
}

fn default_health_path() -> String {
    "/".to_string()
}

fn default_min_replicas() -> i32 {
    1
}

fn default_replicas() -> i32 {
    1
}

/// Size bounds the API server's CEL cost estimator needs on values whose types come from k8s-openapi.
///
/// The estimator charges string functions by a string's declared `maxLength` and iterations by a list's
/// `maxItems`; without them it assumes a value as large as a whole request (3 MiB) and rejects the CRD.
/// Bounds follow Kubernetes' own validation where it has one (label values 63, DNS labels 63).
mod bounds {
    use schemars::Schema;
    use serde_json::{json, Value};

    /// Entries of `podLabels` and `nodeSelector` (Kubernetes allows more, no pod needs them).
    const MAX_LABELS: u64 = 64;
    /// A label value (Kubernetes' limit).
    const LABEL_VALUE_MAX_LENGTH: u64 = 63;
    /// Entries of `podAnnotations`.
    const MAX_ANNOTATIONS: u64 = 64;
    /// An annotation value: all of them together stay at half the API server's 256 KiB for a pod's annotations.
    const ANNOTATION_VALUE_MAX_LENGTH: u64 = 2048;
    /// An environment variable name (Kubernetes sets no limit; 256 leaves room for any real one).
    const ENV_NAME_MAX_LENGTH: u64 = 256;
    /// A volume name (a DNS label, as Kubernetes validates it).
    const VOLUME_NAME_MAX_LENGTH: u64 = 63;
    /// An HPA metric type (`Resource`, `Pods`, `Object`, `External`, `ContainerResource`).
    const METRIC_TYPE_MAX_LENGTH: u64 = 32;

    /// `podLabels` and `nodeSelector`: a map of label values.
    pub fn labels(schema: &mut Schema) {
        bound_map(schema, MAX_LABELS, LABEL_VALUE_MAX_LENGTH);
    }

    /// `podAnnotations`.
    pub fn annotations(schema: &mut Schema) {
        bound_map(schema, MAX_ANNOTATIONS, ANNOTATION_VALUE_MAX_LENGTH);
    }

    /// `env`: the rules read each entry's `name`.
    pub fn env(schema: &mut Schema) {
        bound_item_string(schema, "name", ENV_NAME_MAX_LENGTH);
    }

    /// `volumes`: the rules compare each entry's `name`.
    pub fn volumes(schema: &mut Schema) {
        bound_item_string(schema, "name", VOLUME_NAME_MAX_LENGTH);
    }

    /// `autoscaling.metrics`: the rules read each entry's `type`.
    pub fn metrics(schema: &mut Schema) {
        bound_item_string(schema, "type", METRIC_TYPE_MAX_LENGTH);
    }

    fn bound_map(schema: &mut Schema, max_properties: u64, value_max_length: u64) {
        schema.insert("maxProperties".into(), json!(max_properties));
        if let Some(Value::Object(values)) = schema.get_mut("additionalProperties") {
            values.insert("maxLength".into(), json!(value_max_length));
        }
    }

    fn bound_item_string(schema: &mut Schema, field: &str, max_length: u64) {
        let property = schema
            .get_mut("items")
            .and_then(|items| items.get_mut("properties"))
            .and_then(|properties| properties.get_mut(field))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            property.insert("maxLength".into(), json!(max_length));
        }
    }
}

/// The CRD rendered as YAML, exactly as `crds/wasmapps.wasmkube.dev.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&WasmApp::crd())?;
    Ok(format!("# Generated by `wasmkube-operator crd` from operator/src/crd.rs; do not edit.\n{yaml}"))
}
