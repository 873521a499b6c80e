//! Pure functions from a `WasmApp` to the objects it owns. No I/O: tested as data.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, KeyToPath, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use wasmkube_contract::component::{pull_secret_mount_path, DOCKER_CONFIG_KEY};
use wasmkube_contract::env::ContainerEnv;

use crate::component::ResolvedComponent;
use crate::crd::{WasmApp, DEFAULT_RUNTIME_CLASS};
use crate::error::Error;
use crate::labels::{common_labels, selector_labels};

mod activator;
mod hpa;

pub use activator::{
    activator_endpoints, activator_slice_name, allocate_activator_port, render_activator_slice, slice_activator_port,
    wants_activator_slice, ActivatorEndpoints, ActivatorPorts, PortsExhausted, DEFAULT_ACTIVATOR_PORTS,
};
pub use hpa::{render_hpa, scales_to_zero, DEFAULT_TARGET_REQUESTS_PER_SECOND};

/// Name of the one container of a WasmApp pod.
pub const CONTAINER_NAME: &str = "app";
/// Name of the container port (and Service target port) of HTTP apps.
pub const HTTP_PORT_NAME: &str = "http";
/// Name of the Service port of HTTP apps; the activator slice's port must carry the same name.
pub const SERVICE_PORT_NAME: &str = HTTP_PORT_NAME;
/// Default placeholder image of `oci://` pods: already on every node.
pub const DEFAULT_PLACEHOLDER_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Operator-wide settings that shape rendered objects.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderConfig {
    /// Container image of `oci://` pods; never run by the shim, only pulled by the kubelet.
    pub placeholder_image: String,
    /// DNS suffix of in-cluster Service URLs.
    pub cluster_domain: String,
    /// Whether the cluster lets an HPA scale to zero; when it does not, `minReplicas: 0` renders as 1.
    pub scale_to_zero: bool,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self {
            placeholder_image: DEFAULT_PLACEHOLDER_IMAGE.to_string(),
            cluster_domain: "cluster.local".to_string(),
            scale_to_zero: true,
        }
    }
}

/// Replicas the Deployment should have: `spec.replicas`, which the HPA of an autoscaled app writes through the
/// scale subresource. A floor of 0 counts as 1 where the cluster cannot scale to zero, so the app keeps one replica.
pub fn desired_replicas(app: &WasmApp, cfg: &RenderConfig) -> i32 {
    match &app.spec.autoscaling {
        Some(a) if a.min_replicas == 0 && !cfg.scale_to_zero => app.spec.replicas.max(1),
        _ => app.spec.replicas,
    }
}

/// In-cluster URL of an HTTP app's Service.
pub fn service_url(app: &WasmApp, cfg: &RenderConfig) -> Option<String> {
    let http = app.spec.http.as_ref()?;
    let ns = app.namespace()?;
    let host = format!("{}.{}.svc.{}", app.name_any(), ns, cfg.cluster_domain);
    Some(if http.service_port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{}", http.service_port)
    })
}

/// Metadata of a child: same name and namespace as the app, our labels, the app as controlling owner.
pub(crate) fn child_meta(app: &WasmApp) -> Result<ObjectMeta, Error> {
    let name = app.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = app.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    Ok(ObjectMeta {
        labels: Some(common_labels(&name)),
        name: Some(name),
        namespace: Some(namespace),
        owner_references: Some(vec![owner_reference(app)?]),
        ..ObjectMeta::default()
    })
}

/// Controller owner reference pointing at the WasmApp (garbage collection and watch mapping).
pub fn owner_reference(app: &WasmApp) -> Result<OwnerReference, Error> {
    app.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("metadata.uid"))
}

/// Volume name of the n-th pull secret (secret names may be longer than a volume name allows).
fn pull_secret_volume_name(index: usize) -> String {
    format!("wasmkube-pull-secret-{index}")
}

/// What the shim needs to know about the container (it reads and strips these before the guest starts).
pub fn container_env(app: &WasmApp) -> ContainerEnv {
    ContainerEnv {
        app: Some(app.name_any()),
        namespace: Some(app.namespace().unwrap_or_default()),
        // The CRD bounds the port to 1..=65535; anything else is left to the shim's default (0 included, which the
        // shim would refuse: found by the fuzz target wasmapp_render).
        http_port: app.spec.http.as_ref().and_then(|http| u16::try_from(http.port).ok()).filter(|port| *port > 0),
        allowed_outbound_hosts: app.spec.allowed_outbound_hosts.clone(),
        http_access_log: app.spec.http.as_ref().is_some_and(|http| http.access_log),
    }
}

fn runtime_env(app: &WasmApp) -> Vec<EnvVar> {
    let vars = container_env(app).to_vars();
    vars.into_iter()
        .map(|(name, value)| EnvVar { name: name.to_string(), value: Some(value), ..EnvVar::default() })
        .collect()
}

/// HTTP apps are ready when their health path answers; other apps get no default probe.
fn readiness_probe(app: &WasmApp) -> Option<Probe> {
    if let Some(probe) = &app.spec.readiness_probe {
        return Some(probe.clone());
    }
    let http = app.spec.http.as_ref()?;
    Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some(http.health_path.clone()),
            port: IntOrString::String(HTTP_PORT_NAME.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    })
}

/// The Deployment that runs the app's pods.
pub fn render_deployment(
    app: &WasmApp,
    component: &ResolvedComponent,
    cfg: &RenderConfig,
) -> Result<Deployment, Error> {
    let meta = child_meta(app)?;
    let name = app.name_any();
    let spec = &app.spec;

    let mut volumes: Vec<Volume> = spec.volumes.clone();
    let mut mounts: Vec<VolumeMount> = spec
        .volume_mounts
        .iter()
        .map(|m| VolumeMount {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only: m.read_only.then_some(true),
            sub_path: m.sub_path.clone(),
            ..VolumeMount::default()
        })
        .collect();
    for (index, secret) in spec.image_pull_secrets.iter().enumerate() {
        let volume = pull_secret_volume_name(index);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: DOCKER_CONFIG_KEY.to_string(),
                    path: DOCKER_CONFIG_KEY.to_string(),
                    mode: None,
                }]),
                // Why 0o400: only the shim (root on the node) needs to read the credentials.
                default_mode: Some(0o400),
                optional: None,
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: pull_secret_mount_path(&secret.name),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let mut env = spec.env.clone();
    env.extend(runtime_env(app));

    let ports = spec.http.as_ref().map(|http| {
        vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.to_string()),
            container_port: http.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]
    });

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(cfg.placeholder_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        // Why `command`: it replaces the image entrypoint, so the OCI process.args[0] the shim reads
        // is the component URI; `args` become the guest's argv[1..].
        command: Some(vec![component.uri()]),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!env.is_empty()).then_some(env),
        ports,
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        resources: spec.resources.clone(),
        readiness_probe: readiness_probe(app),
        liveness_probe: spec.liveness_probe.clone(),
        startup_probe: spec.startup_probe.clone(),
        // Why: the shim writes failures to the termination-message file; fall back to the log tail.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    };

    let mut pod_labels = spec.pod_labels.clone();
    pod_labels.extend(common_labels(&name));

    let runtime_class = if spec.runtime_class_name.is_empty() {
        DEFAULT_RUNTIME_CLASS.to_string()
    } else {
        spec.runtime_class_name.clone()
    };

    let pod_spec = PodSpec {
        runtime_class_name: Some(runtime_class),
        service_account_name: spec.service_account_name.clone(),
        // Why: the guest sees only its mounts; a token nobody can read is just a secret on the node.
        automount_service_account_token: Some(false),
        // Why: Service env vars (FOO_SERVICE_HOST, …) would leak into the guest's environment.
        enable_service_links: Some(false),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        volumes: (!volumes.is_empty()).then_some(volumes),
        containers: vec![container],
        ..PodSpec::default()
    };

    Ok(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(desired_replicas(app, cfg)),
            selector: LabelSelector { match_labels: Some(selector_labels(&name)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!spec.pod_annotations.is_empty()).then(|| spec.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The ClusterIP Service of an HTTP app; `None` when the app does not serve HTTP.
pub fn render_service(app: &WasmApp) -> Result<Option<Service>, Error> {
    let Some(http) = &app.spec.http else {
        return Ok(None);
    };
    Ok(Some(Service {
        metadata: child_meta(app)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(&app.name_any())),
            ports: Some(vec![ServicePort {
                name: Some(SERVICE_PORT_NAME.to_string()),
                port: http.service_port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }))
}
