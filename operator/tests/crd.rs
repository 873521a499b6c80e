//! The generated CRD: its file is current, its shape follows the design, and its schema (OpenAPI + CEL)
//! accepts the examples and rejects broken manifests with the expected messages.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use serde_json::{json, Value};
use wasmkube_operator::crd::{crd_yaml, WasmApp};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn crd_file_is_current() {
    let path = repo_root().join("crds/wasmapps.wasmkube.dev.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crd_yaml().unwrap();
    assert!(
        on_disk == generated,
        "{} is stale: regenerate it with\n    cargo run -p wasmkube-operator -- crd > crds/wasmapps.wasmkube.dev.yaml",
        path.display()
    );
}

#[test]
fn crd_names_subresources_and_columns() {
    let crd = serde_json::to_value(WasmApp::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "wasmapps.wasmkube.dev");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "wasmkube.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "WasmApp");
    assert_eq!(spec["names"]["plural"], "wasmapps");
    assert_eq!(spec["names"]["shortNames"], json!(["wa"]));
    assert_eq!(spec["names"]["categories"], json!(["wasm"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"
        })
    );
    let columns: Vec<&str> =
        version["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Ready", "Replicas", "Component", "Age", "URL"]);
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(spec_schema()["properties"]["runtimeClassName"]["default"], "wasmkube");
}

/// The openAPIV3Schema of the CRD.
fn schema() -> Value {
    let crd = serde_json::to_value(WasmApp::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn spec_schema() -> Value {
    schema()["properties"]["spec"].clone()
}

/// kubectl validates fields strictly: unknown fields are errors. Mimic it for the JSON-schema check
/// by closing every object schema that lists its properties.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let closes = map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("x-kubernetes-preserve-unknown-fields");
            for v in map.values_mut() {
                strict(v);
            }
            if closes {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Every message the API server would answer with (OpenAPI first, then CEL), empty when valid.
fn validate(obj: &Value) -> Vec<String> {
    let schema = schema();
    let mut strict_schema = schema.clone();
    strict(&mut strict_schema);
    // apiVersion, kind and metadata are validated by the API server itself, not by the CRD schema.
    if let Some(props) = strict_schema["properties"].as_object_mut() {
        props.insert("metadata".into(), json!({"type": "object"}));
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
    }
    let validator = jsonschema::validator_for(&strict_schema).unwrap();
    let mut errors: Vec<String> = validator.iter_errors(obj).map(|e| format!("{}: {}", e.instance_path, e)).collect();
    if errors.is_empty() {
        if let Err(cel) = kube::core::cel::Validator::new().validate(&schema, obj, None) {
            errors.extend(cel.iter().map(|e| e.to_string()));
        }
    }
    errors
}

fn wasmapps_in(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| v["kind"] == "WasmApp")
        .collect()
}

use serde::Deserialize;

#[test]
fn examples_are_valid_wasmapps() {
    let dir = repo_root().join("examples/wasmapps");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        for app in wasmapps_in(&path) {
            let errors = validate(&app);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            // The Rust types read every example too.
            let _: WasmApp = serde_json::from_value(app).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 4, "expected at least four example WasmApps, found {seen}");
}

fn base() -> Value {
    json!({
        "apiVersion": "wasmkube.dev/v1alpha1",
        "kind": "WasmApp",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": {
            "component": "ghcr.io/org/app:1.0",
            "http": {"port": 8080},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3}
        }
    })
}

/// Set `value` at the JSON pointer `pointer` (parents must exist); `Value::Null` removes the key.
fn without_http(mut manifest: Value) -> Value {
    if let Some(spec) = manifest["spec"].as_object_mut() {
        spec.remove("http");
    }
    manifest
}

fn with(pointer: &str, value: Value) -> Value {
    let mut obj = base();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = obj.pointer_mut(parent).unwrap();
    match target {
        Value::Object(map) if value.is_null() => {
            map.remove(key);
        }
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("cannot set {pointer}"),
    }
    obj
}

#[test]
fn good_variants_are_accepted() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases = [
        with("/spec/component", json!("localhost:5000/app:dev")),
        with("/spec/component", json!(format!("127.0.0.1:5000/org/app@{digest}"))),
        with("/spec/component", json!(format!("ghcr.io/org/app:1.0@{digest}"))),
        with("/spec/component", json!("app")),
        with(
            "/spec/allowedOutboundHosts",
            json!(["example.com", "api.example.com:443", "*.example.com", "*", "10.0.0.1:8080"]),
        ),
        with("/spec/replicas", json!(0)),
        with(
            "/spec/autoscaling",
            json!({"minReplicas": 0, "maxReplicas": 2, "metrics": [{"type": "Object", "object": {
                "metric": {"name": "requests"},
                "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "t"},
                "target": {"type": "Value", "value": "1"}}}]}),
        ),
        with("/spec/http", json!({})),
        // An HTTP app scales to zero on wasmkube's default request-rate metric.
        with("/spec/autoscaling", json!({"minReplicas": 0, "maxReplicas": 2, "targetRequestsPerSecond": 50})),
    ];
    for (i, case) in cases.iter().enumerate() {
        let errors = validate(case);
        assert!(errors.is_empty(), "case {i} {case}: {errors:#?}");
    }
}

#[test]
fn broken_manifests_are_rejected_with_clear_messages() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "scheme in component",
            with("/spec/component", json!("oci://ghcr.io/org/app:1")),
            "component must be an OCI reference",
        ),
        (
            "upper-case repository",
            with("/spec/component", json!("ghcr.io/Org/App:1")),
            "component must be an OCI reference",
        ),
        (
            "short digest",
            with("/spec/component", json!("ghcr.io/org/app@sha256:abc")),
            "component must be an OCI reference",
        ),
        ("missing component", with("/spec/component", Value::Null), "\"component\" is a required property"),
        ("port too high", with("/spec/http/port", json!(70000)), "70000 is greater than the maximum of 65535"),
        ("port zero", with("/spec/http/port", json!(0)), "0 is less than the minimum of 1"),
        ("negative replicas", with("/spec/replicas", json!(-1)), "-1 is less than the minimum of 0"),
        (
            "unknown field",
            with("/spec/replica", json!(2)),
            "Additional properties are not allowed ('replica' was unexpected)",
        ),
        (
            "max below min",
            with("/spec/autoscaling", json!({"minReplicas": 5, "maxReplicas": 2})),
            "autoscaling.maxReplicas must be greater than or equal to autoscaling.minReplicas",
        ),
        (
            "zero without http or metric",
            without_http(with("/spec/autoscaling", json!({"minReplicas": 0, "maxReplicas": 2}))),
            "autoscaling.minReplicas 0 needs spec.http (for the default request-rate metric)",
        ),
        (
            "zero on a pods metric",
            with(
                "/spec/autoscaling",
                json!({"minReplicas": 0, "maxReplicas": 2, "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}),
            ),
            "minReplicas 0 needs at least one Object or External metric",
        ),
        ("zero max", with("/spec/autoscaling", json!({"maxReplicas": 0})), "0 is less than the minimum of 1"),
        (
            "mount of unknown volume",
            with("/spec/volumeMounts/0/name", json!("nope")),
            "every volumeMounts[].name must name an entry of spec.volumes",
        ),
        (
            "relative mount path",
            with("/spec/volumeMounts/0/mountPath", json!("data")),
            "mountPath must be an absolute path",
        ),
        (
            "reserved mount path",
            with("/spec/volumeMounts/0/mountPath", json!("/var/run/wasmkube/x")),
            "reserved for the runtime",
        ),
        (
            "reserved env",
            with("/spec/env", json!([{"name": "WASMKUBE_HTTP_PORT", "value": "1"}])),
            "env names starting with WASMKUBE_ are reserved",
        ),
        (
            "scheme in outbound host",
            with("/spec/allowedOutboundHosts", json!(["https://example.com"])),
            "each allowedOutboundHosts entry must be host, host:port",
        ),
        (
            "path in outbound host",
            with("/spec/allowedOutboundHosts", json!(["example.com/api"])),
            "each allowedOutboundHosts entry must be host, host:port",
        ),
        (
            "selector label in podLabels",
            with("/spec/podLabels", json!({"app.kubernetes.io/name": "x"})),
            "podLabels must not set app.kubernetes.io/name",
        ),
        ("relative health path", with("/spec/http/healthPath", json!("healthz")), "http.healthPath must start with /"),
        ("empty runtime class", with("/spec/runtimeClassName", json!("")), "\"\" is shorter than 1 character"),
    ];
    let mut failures = Vec::new();
    for (name, obj, expected) in &cases {
        let errors = validate(obj);
        if !errors.iter().any(|e| e.contains(expected)) {
            failures.push(format!("{name}: expected {expected:?}, got {errors:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every node of the schema that carries `x-kubernetes-validations`, with its JSON path.
fn rule_nodes<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    if let Value::Object(map) = node {
        if map.contains_key("x-kubernetes-validations") {
            out.push((path.clone(), node));
        }
        for (key, child) in map {
            match key.as_str() {
                "properties" => {
                    for (name, prop) in child.as_object().into_iter().flatten() {
                        rule_nodes(prop, format!("{path}.{name}"), out);
                    }
                }
                "items" => rule_nodes(child, format!("{path}[]"), out),
                "additionalProperties" => rule_nodes(child, format!("{path}{{}}"), out),
                _ => {}
            }
        }
    }
}

#[test]
fn cel_rules_compile_and_stay_within_the_cost_budget() {
    use kube::core::cel::{compile_schema, estimate_rule_cost, WarningKind};
    let schema = schema();
    let mut nodes = Vec::new();
    rule_nodes(&schema, String::new(), &mut nodes);
    assert!(nodes.len() >= 6, "expected the CEL rules in the schema, found {}", nodes.len());
    let mut problems = Vec::new();
    for (path, node) in nodes {
        let compiled = compile_schema(node);
        for err in compiled.compilation_errors() {
            problems.push(format!("{path}: does not compile: {err}"));
        }
        for rule in node["x-kubernetes-validations"].as_array().unwrap() {
            let rule = rule["rule"].as_str().unwrap();
            for w in estimate_rule_cost(rule, &compiled) {
                if w.kind == WarningKind::CostExceeded {
                    problems.push(format!("{path}: {rule}: {}", w.message));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
