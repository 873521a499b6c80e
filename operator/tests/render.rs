//! Every spec feature through the pure render functions, checked as data.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use wasmkube_operator::activator::AppKey;
use wasmkube_operator::component::{unresolved_component, ResolvedComponent};
use wasmkube_operator::crd::WasmApp;
use wasmkube_operator::labels::selector_string;
use wasmkube_operator::render::{
    activator_endpoints, allocate_activator_port, container_env, desired_replicas, render_activator_slice,
    render_deployment, render_hpa, render_service, service_url, ActivatorEndpoints, ActivatorPorts, PortsExhausted,
    RenderConfig,
};

const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

fn app(spec: Value) -> WasmApp {
    serde_json::from_value(json!({
        "apiVersion": "wasmkube.dev/v1alpha1",
        "kind": "WasmApp",
        "metadata": {"name": "hello", "namespace": "apps", "uid": "uid-1", "generation": 3},
        "spec": spec,
    }))
    .unwrap()
}

fn pinned() -> ResolvedComponent {
    ResolvedComponent { reference: format!("ghcr.io/org/hello@{DIGEST}"), digest: Some(DIGEST.to_string()) }
}

fn deployment(spec: Value) -> Value {
    let d = render_deployment(&app(spec), &pinned(), &RenderConfig::default()).unwrap();
    serde_json::to_value(d).unwrap()
}

fn container(dep: &Value) -> &Value {
    &dep["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn minimal_cli_app() {
    let dep = deployment(json!({"component": "ghcr.io/org/hello:1.0"}));
    let labels = json!({
        "app.kubernetes.io/name": "hello",
        "app.kubernetes.io/managed-by": "wasmkube-operator",
        "app.kubernetes.io/component": "wasmapp",
        "app.kubernetes.io/part-of": "wasmkube",
    });
    assert_eq!(
        dep["metadata"],
        json!({
            "name": "hello",
            "namespace": "apps",
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "wasmkube.dev/v1alpha1", "kind": "WasmApp", "name": "hello",
                "uid": "uid-1", "controller": true
            }]
        })
    );
    assert_eq!(dep["apiVersion"], "apps/v1");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(
        dep["spec"]["selector"],
        json!({"matchLabels": {"app.kubernetes.io/name": "hello", "app.kubernetes.io/managed-by": "wasmkube-operator"}})
    );
    let pod = &dep["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"], labels);
    assert_eq!(
        container(&dep),
        &json!({
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "imagePullPolicy": "IfNotPresent",
            "command": [format!("oci://ghcr.io/org/hello@{DIGEST}")],
            // The shim labels the app's request metrics with these, and strips them from the guest's env.
            "env": [{"name": "WASMKUBE_APP", "value": "hello"}, {"name": "WASMKUBE_NAMESPACE", "value": "apps"}],
            "terminationMessagePolicy": "FallbackToLogsOnError"
        })
    );
    assert_eq!(
        pod["spec"],
        json!({
            "runtimeClassName": "wasmkube",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "containers": [container(&dep)]
        })
    );
    assert_eq!(selector_string("hello"), "app.kubernetes.io/managed-by=wasmkube-operator,app.kubernetes.io/name=hello");
    assert!(render_service(&app(json!({"component": "x"}))).unwrap().is_none());
    assert!(render_hpa(&app(json!({"component": "x"})), &RenderConfig::default()).unwrap().is_none());
}

#[test]
fn http_app_gets_port_env_probe_service_and_url() {
    let spec = json!({
        "component": "ghcr.io/org/hello:1.0",
        "http": {"port": 9000, "servicePort": 8081, "healthPath": "/ready"},
        "allowedOutboundHosts": ["api.example.com:443", "*.example.org"],
    });
    let dep = deployment(spec.clone());
    let c = container(&dep);
    assert_eq!(c["ports"], json!([{"name": "http", "containerPort": 9000, "protocol": "TCP"}]));
    assert_eq!(
        c["env"],
        json!([
            {"name": "WASMKUBE_APP", "value": "hello"},
            {"name": "WASMKUBE_NAMESPACE", "value": "apps"},
            {"name": "WASMKUBE_HTTP_PORT", "value": "9000"},
            {"name": "WASMKUBE_ALLOWED_OUTBOUND_HOSTS", "value": "api.example.com:443,*.example.org"}
        ])
    );
    assert_eq!(c["readinessProbe"], json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5}));
    let svc = serde_json::to_value(render_service(&app(spec.clone())).unwrap().unwrap()).unwrap();
    assert_eq!(svc["metadata"]["name"], "hello");
    assert_eq!(svc["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        svc["spec"],
        json!({
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "hello", "app.kubernetes.io/managed-by": "wasmkube-operator"},
            "ports": [{"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}]
        })
    );
    let cfg = RenderConfig::default();
    assert_eq!(service_url(&app(spec), &cfg).as_deref(), Some("http://hello.apps.svc.cluster.local:8081"));
    let default_http = app(json!({"component": "x", "http": {}}));
    assert_eq!(service_url(&default_http, &cfg).as_deref(), Some("http://hello.apps.svc.cluster.local"));
    assert_eq!(default_http.spec.http.as_ref().unwrap().port, 8080);
}

#[test]
fn the_access_log_is_rendered_only_when_asked_for() {
    let access_log = |spec: serde_json::Value| {
        let dep = deployment(spec);
        let env = container(&dep)["env"].as_array().cloned().unwrap_or_default();
        env.iter().find(|v| v["name"] == "WASMKUBE_HTTP_ACCESS_LOG").map(|v| v["value"].clone())
    };
    assert_eq!(access_log(json!({"component": "x", "http": {}})), None, "off by default");
    assert_eq!(access_log(json!({"component": "x", "http": {"accessLog": false}})), None);
    assert_eq!(access_log(json!({"component": "x", "http": {"accessLog": true}})), Some(json!("true")));
}

#[test]
fn explicit_probes_replace_the_default() {
    let probe = json!({"tcpSocket": {"port": 8080}, "initialDelaySeconds": 2});
    let dep = deployment(json!({
        "component": "x", "http": {},
        "readinessProbe": probe, "livenessProbe": probe, "startupProbe": probe,
    }));
    let c = container(&dep);
    assert_eq!(c["readinessProbe"], probe);
    assert_eq!(c["livenessProbe"], probe);
    assert_eq!(c["startupProbe"], probe);
}

#[test]
fn guest_args_env_and_volumes() {
    let dep = deployment(json!({
        "component": "x",
        "args": ["--loop", "-v"],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ],
        "volumes": [{"name": "config", "configMap": {"name": "cfg"}}],
        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": true, "subPath": "app"}],
    }));
    let c = container(&dep);
    assert_eq!(c["args"], json!(["--loop", "-v"]));
    assert_eq!(
        c["env"],
        json!([
            {"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "WASMKUBE_APP", "value": "hello"},
            {"name": "WASMKUBE_NAMESPACE", "value": "apps"}
        ])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "config", "mountPath": "/config", "readOnly": true, "subPath": "app"}])
    );
    assert_eq!(dep["spec"]["template"]["spec"]["volumes"], json!([{"name": "config", "configMap": {"name": "cfg"}}]));
}

#[test]
fn pull_secrets_are_mounted_for_the_shim_not_put_in_env() {
    let dep = deployment(json!({
        "component": "x",
        "imagePullSecrets": [{"name": "regcred"}, {"name": "other"}],
    }));
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "wasmkube-pull-secret-0", "secret": {"secretName": "regcred", "defaultMode": 256,
              "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}},
            {"name": "wasmkube-pull-secret-1", "secret": {"secretName": "other", "defaultMode": 256,
              "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}}
        ])
    );
    assert_eq!(
        container(&dep)["volumeMounts"],
        json!([
            {"name": "wasmkube-pull-secret-0", "mountPath": "/var/run/wasmkube/pull-secrets/regcred", "readOnly": true},
            {"name": "wasmkube-pull-secret-1", "mountPath": "/var/run/wasmkube/pull-secrets/other", "readOnly": true}
        ])
    );
    // Only the runtime's own env: the credentials stay in the mounted files.
    assert_eq!(
        container(&dep)["env"],
        json!([{"name": "WASMKUBE_APP", "value": "hello"}, {"name": "WASMKUBE_NAMESPACE", "value": "apps"}])
    );
    assert!(pod.get("imagePullSecrets").is_none());
    assert!(dep["spec"]["template"]["metadata"].get("annotations").is_none());
}

#[test]
fn scheduling_identity_resources_and_pod_metadata() {
    let dep = deployment(json!({
        "component": "x",
        "runtimeClassName": "wasmkube-debug",
        "serviceAccountName": "hello-sa",
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "wasm", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"memory": "32Mi"}},
        "podLabels": {"team": "platform"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
    }));
    let pod = &dep["spec"]["template"];
    assert_eq!(pod["spec"]["runtimeClassName"], "wasmkube-debug");
    assert_eq!(pod["spec"]["serviceAccountName"], "hello-sa");
    assert_eq!(pod["spec"]["nodeSelector"], json!({"disk": "ssd"}));
    assert_eq!(pod["spec"]["tolerations"], json!([{"key": "wasm", "operator": "Exists", "effect": "NoSchedule"}]));
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "zone"
    );
    assert_eq!(
        container(&dep)["resources"],
        json!({"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"memory": "32Mi"}})
    );
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "hello");
    assert_eq!(pod["metadata"]["annotations"], json!({"prometheus.io/scrape": "true"}));
    // Selector labels are the operator's even if a user sneaks them into podLabels.
    let dep = deployment(json!({"component": "x", "podLabels": {"app.kubernetes.io/name": "evil"}}));
    assert_eq!(dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], "hello");
}

#[test]
fn placeholder_image_is_configurable() {
    let cfg = RenderConfig { placeholder_image: "mirror.local/pause:3.10".into(), ..RenderConfig::default() };
    let d = render_deployment(&app(json!({"component": "x"})), &pinned(), &cfg).unwrap();
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("mirror.local/pause:3.10"));
}

#[test]
fn replicas_and_autoscaling() {
    let cfg = RenderConfig::default();
    assert_eq!(desired_replicas(&app(json!({"component": "x", "replicas": 4})), &cfg), 4);
    assert_eq!(desired_replicas(&app(json!({"component": "x"})), &cfg), 1);
    let scaled = app(json!({
        "component": "x",
        "autoscaling": {"minReplicas": 0, "maxReplicas": 5, "metrics": [{"type": "External", "external": {
            "metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]}
    }));
    // The API server defaults spec.replicas to 1: a scale-to-zero app starts with one replica and its HPA
    // takes it to zero when idle.
    assert_eq!(scaled.spec.replicas, 1);
    assert_eq!(desired_replicas(&scaled, &cfg), 1);
    let hpa = serde_json::to_value(render_hpa(&scaled, &cfg).unwrap().unwrap()).unwrap();
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["metadata"]["name"], "hello");
    assert_eq!(hpa["metadata"]["ownerReferences"][0]["kind"], "WasmApp");
    assert_eq!(
        hpa["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "wasmkube.dev/v1alpha1", "kind": "WasmApp", "name": "hello"},
            "minReplicas": 0,
            "maxReplicas": 5,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]
        })
    );
    // The HPA writes spec.replicas through the scale subresource; the Deployment follows it.
    let mut written = scaled.clone();
    written.spec.replicas = 3;
    assert_eq!(desired_replicas(&written, &cfg), 3);
    written.spec.replicas = 0;
    assert_eq!(desired_replicas(&written, &cfg), 0);
}

#[test]
fn component_references_are_normalised() {
    let c = unresolved_component("ghcr.io/org/app:1.0").unwrap();
    assert_eq!(c.uri(), "oci://ghcr.io/org/app:1.0");
    assert_eq!(c.digest, None);
    let c = unresolved_component("app").unwrap();
    assert_eq!(c.uri(), "oci://docker.io/library/app:latest");
    let c = unresolved_component(&format!("ghcr.io/org/app:1.0@{DIGEST}")).unwrap();
    assert_eq!(c.uri(), format!("oci://ghcr.io/org/app@{DIGEST}"));
    assert_eq!(c.digest.as_deref(), Some(DIGEST));
    let err = unresolved_component("oci://x").unwrap_err();
    assert_eq!(err.category(), "InvalidComponent");
}

#[test]
fn a_port_out_of_range_is_left_to_the_shims_default() {
    // Found by the fuzz target wasmapp_render (fuzz/regressions/wasmapp_render/): port 0 was rendered, and the
    // shim refuses WASMKUBE_HTTP_PORT=0, so the container could not start.
    for port in [0, -1, 65536] {
        let env = container_env(&app(json!({"component": "x", "http": {"port": port}})));
        assert_eq!(env.http_port, None, "port {port}");
    }
}

#[test]
fn components_the_shim_cannot_pull_are_invalid() {
    // Found by the fuzz target wasmapp_render (fuzz/regressions/wasmapp_render/): oci-client reads `MyOrg/app` as
    // the Docker Hub repository `MyOrg/app`, and the pods would run `oci://docker.io/MyOrg/app:1`.
    let upper = DIGEST.replace('c', "C");
    let sha512 = format!("sha512:{}", "a".repeat(128));
    for component in ["MyOrg/app:1", &format!("ghcr.io/org/app@{upper}"), &format!("ghcr.io/org/app@{sha512}")] {
        let err = unresolved_component(component).unwrap_err();
        assert_eq!(err.category(), "InvalidComponent", "{component}");
    }
    assert!(unresolved_component("MyRegistry.example/org/app:1").is_ok(), "a registry host may have capitals");
}

#[test]
fn render_needs_the_object_keys() {
    let mut a = app(json!({"component": "x"}));
    a.metadata.uid = None;
    let err = render_deployment(&a, &pinned(), &RenderConfig::default()).unwrap_err();
    assert_eq!(err.category(), "MissingObjectKey");
}

/// An HTTP app that scales to zero, with the given extra `autoscaling` fields.
fn idle_http_app(autoscaling: Value) -> WasmApp {
    let mut scaling = json!({"minReplicas": 0, "maxReplicas": 4});
    if let (Some(base), Some(extra)) = (scaling.as_object_mut(), autoscaling.as_object()) {
        base.extend(extra.clone());
    }
    app(json!({"component": "x", "http": {}, "autoscaling": scaling}))
}

#[test]
fn scale_to_zero_defaults_to_the_request_rate_metric() {
    let cfg = RenderConfig::default();
    let hpa = serde_json::to_value(render_hpa(&idle_http_app(json!({})), &cfg).unwrap().unwrap()).unwrap();
    assert_eq!(
        hpa["spec"],
        json!({
            "scaleTargetRef": {"apiVersion": "wasmkube.dev/v1alpha1", "kind": "WasmApp", "name": "hello"},
            "minReplicas": 0,
            "maxReplicas": 4,
            "metrics": [{"type": "External", "external": {
                "metric": {"name": "wasmkube_http_requests_per_second",
                           "selector": {"matchLabels": {"wasmkube.dev/app": "hello"}}},
                "target": {"type": "AverageValue", "averageValue": "100"}}}]
        })
    );
    let tuned = render_hpa(&idle_http_app(json!({"targetRequestsPerSecond": 25})), &cfg).unwrap().unwrap();
    let tuned = serde_json::to_value(tuned).unwrap();
    assert_eq!(tuned["spec"]["metrics"][0]["external"]["target"]["averageValue"], "25");
    // The user's metrics are kept as written.
    let own = json!({"metrics": [{"type": "Object", "object": {
        "describedObject": {"kind": "Service", "name": "q", "apiVersion": "v1"},
        "metric": {"name": "depth"}, "target": {"type": "Value", "value": "5"}}}]});
    let own_hpa = serde_json::to_value(render_hpa(&idle_http_app(own.clone()), &cfg).unwrap().unwrap()).unwrap();
    assert_eq!(own_hpa["spec"]["metrics"], own["metrics"]);
    // An app with a floor of one keeps the HPA's own default (CPU).
    let floor = app(json!({"component": "x", "http": {}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}));
    let floor_hpa = serde_json::to_value(render_hpa(&floor, &cfg).unwrap().unwrap()).unwrap();
    assert!(floor_hpa["spec"].get("metrics").is_none());
}

#[test]
fn without_cluster_support_scale_to_zero_keeps_one_replica() {
    let cfg = RenderConfig { scale_to_zero: false, ..RenderConfig::default() };
    let app = idle_http_app(json!({}));
    let hpa = serde_json::to_value(render_hpa(&app, &cfg).unwrap().unwrap()).unwrap();
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(desired_replicas(&app, &cfg), 1);
    let mut scaled_down = app.clone();
    scaled_down.spec.replicas = 0;
    assert_eq!(desired_replicas(&scaled_down, &cfg), 1);
    assert_eq!(desired_replicas(&scaled_down, &RenderConfig::default()), 0);
    let activator =
        ActivatorEndpoints { address_type: "IPv4".into(), addresses: vec!["10.0.0.7".into()], port: Some(8090) };
    assert!(render_activator_slice(&app, &activator, 0, &cfg, 20480).unwrap().is_none());
}

fn slice(address_type: &str, port: i32, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "wasmkube-activator-abcde", "namespace": "wasmkube-system"},
        "addressType": address_type,
        "ports": [{"name": "metrics", "port": 8080}, {"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn activator_endpoints_are_the_ready_addresses_ipv4_first() {
    let slices = [
        slice("IPv6", 8090, json!([{"addresses": ["fd00::7"], "conditions": {"ready": true}}])),
        slice(
            "IPv4",
            8090,
            json!([
                {"addresses": ["10.0.0.9"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.7"]}
            ]),
        ),
    ];
    assert_eq!(
        activator_endpoints(&slices),
        ActivatorEndpoints {
            address_type: "IPv4".into(),
            addresses: vec!["10.0.0.7".into(), "10.0.0.9".into()],
            port: Some(8090)
        }
    );
    let none_ready = [slice("IPv4", 8090, json!([{"addresses": ["10.0.0.8"], "conditions": {"ready": false}}]))];
    assert!(activator_endpoints(&none_ready).addresses.is_empty());
    assert_eq!(activator_endpoints(&[]), ActivatorEndpoints::default());
}

#[test]
fn activator_slice_only_while_the_app_has_no_ready_pod() {
    let cfg = RenderConfig::default();
    let app = idle_http_app(json!({}));
    let activator = ActivatorEndpoints {
        address_type: "IPv4".into(),
        addresses: vec!["10.0.0.7".into(), "10.0.0.9".into()],
        port: Some(8090),
    };
    let slice =
        serde_json::to_value(render_activator_slice(&app, &activator, 0, &cfg, 20480).unwrap().unwrap()).unwrap();
    assert_eq!(slice["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(slice["metadata"]["name"], "hello-activator");
    assert_eq!(slice["metadata"]["namespace"], "apps");
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "hello");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "wasmkube.dev-activator");
    assert_eq!(slice["metadata"]["labels"]["app.kubernetes.io/managed-by"], "wasmkube-operator");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "WasmApp");
    assert_eq!(slice["addressType"], "IPv4");
    // The app's own activator port, named like the Service's port (kube-proxy and ingress controllers pair them
    // by name and dial the slice's port).
    assert_eq!(slice["ports"], json!([{"name": "http", "port": 20480, "protocol": "TCP"}]));
    let service = serde_json::to_value(render_service(&app).unwrap().unwrap()).unwrap();
    assert_eq!(slice["ports"][0]["name"], service["spec"]["ports"][0]["name"]);
    assert_eq!(
        slice["endpoints"],
        json!([
            {"addresses": ["10.0.0.7"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.9"], "conditions": {"ready": true}}
        ])
    );
    // Scaled up with a ready pod: the pods take the traffic.
    let mut up = app.clone();
    up.spec.replicas = 2;
    assert!(render_activator_slice(&up, &activator, 1, &cfg, 20480).unwrap().is_none());
    // Starting (no pod ready yet): the activator holds requests.
    assert!(render_activator_slice(&up, &activator, 0, &cfg, 20480).unwrap().is_some());
    // Being scaled to zero: switch before the pods go, though they are still ready.
    let mut down = app.clone();
    down.spec.replicas = 0;
    assert!(render_activator_slice(&down, &activator, 2, &cfg, 20480).unwrap().is_some());
    // No ready activator, no slice; apps that do not scale to zero or serve HTTP never get one.
    assert!(render_activator_slice(&app, &ActivatorEndpoints::default(), 0, &cfg, 20480).unwrap().is_none());
    let fixed = self::app(json!({"component": "x", "http": {}, "replicas": 0}));
    assert!(render_activator_slice(&fixed, &activator, 0, &cfg, 20480).unwrap().is_none());
    let cli = self::app(json!({"component": "x", "autoscaling": {"minReplicas": 0, "maxReplicas": 2,
        "metrics": [{"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "1"}}}]}}));
    assert!(render_activator_slice(&cli, &activator, 0, &cfg, 20480).unwrap().is_none());
}

fn key(ns: &str, name: &str) -> AppKey {
    AppKey::new(ns, name)
}

#[test]
fn activator_ports_are_stable_and_never_shared() {
    let range = ActivatorPorts { first: 20000, last: 20009 };
    let shop = key("apps", "shop");
    // Deterministic: the same app gets the same port from nothing, on any replica.
    let first = allocate_activator_port(&shop, None, &[], range).unwrap();
    assert!(range.contains(first));
    assert_eq!(allocate_activator_port(&shop, None, &[], range).unwrap(), first);
    // A port the app's slice already has is kept, even if the hash would say otherwise.
    let other = if first == 20000 { 20001 } else { 20000 };
    assert_eq!(allocate_activator_port(&shop, Some(other), &[(shop.clone(), other)], range).unwrap(), other);
    // Taken by another app: the next free port, wrapping around the end of the range.
    let taken: Vec<(AppKey, u16)> = (0..9).map(|i| (key("apps", &format!("a{i}")), 20000 + i)).collect();
    assert_eq!(allocate_activator_port(&shop, None, &taken, range).unwrap(), 20009);
    let all_but_first: Vec<(AppKey, u16)> = (1..10).map(|i| (key("apps", &format!("a{i}")), 20000 + i)).collect();
    assert_eq!(allocate_activator_port(&shop, None, &all_but_first, range).unwrap(), 20000);
    // A port outside the range (the range was changed) is not kept.
    let moved = allocate_activator_port(&shop, Some(8090), &[], range).unwrap();
    assert!(range.contains(moved));
    // Two slices on one port (a leader handover): the app that sorts first keeps it, the other moves.
    let (a, b) = (key("apps", "a"), key("apps", "b"));
    let both = [(a.clone(), 20005), (b.clone(), 20005)];
    assert_eq!(allocate_activator_port(&a, Some(20005), &both, range).unwrap(), 20005);
    assert_ne!(allocate_activator_port(&b, Some(20005), &both, range).unwrap(), 20005);
    // Many apps: every one gets its own port.
    let wide = ActivatorPorts { first: 20000, last: 20099 };
    let mut given: Vec<(AppKey, u16)> = Vec::new();
    for i in 0..100 {
        let app = key(&format!("ns{}", i % 7), &format!("app{i}"));
        let port = allocate_activator_port(&app, None, &given, wide).unwrap();
        assert!(given.iter().all(|(_, p)| *p != port), "{app} got {port} twice");
        given.push((app, port));
    }
}

#[test]
fn a_full_port_range_is_a_clear_error() {
    let range = ActivatorPorts { first: 20000, last: 20001 };
    let taken = [(key("apps", "a"), 20000), (key("apps", "b"), 20001)];
    let err = allocate_activator_port(&key("apps", "c"), None, &taken, range).unwrap_err();
    assert_eq!(err, PortsExhausted { range });
    let message = err.to_string();
    assert!(message.contains("all 2 activator ports (20000-20001) are in use"), "{message}");
    assert!(message.contains("--activator-ports") && message.contains("scaleToZero.activatorPorts"), "{message}");
    // An app that already holds one of them keeps it.
    assert_eq!(allocate_activator_port(&key("apps", "b"), Some(20001), &taken, range).unwrap(), 20001);
}

#[test]
fn port_ranges_parse_from_the_flag() {
    assert_eq!("20000-29999".parse::<ActivatorPorts>().unwrap(), ActivatorPorts::default());
    assert_eq!(ActivatorPorts::default().to_string(), "20000-29999");
    assert_eq!(ActivatorPorts::default().size(), 10000);
    assert_eq!("5-5".parse::<ActivatorPorts>().unwrap().size(), 1);
    for bad in ["20000", "2-1", "0-10", "1-70000", "a-b"] {
        assert!(bad.parse::<ActivatorPorts>().is_err(), "{bad}");
    }
}
