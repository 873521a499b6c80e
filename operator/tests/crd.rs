//! The generated CRD: its file is current, its shape follows the design, and its schema (OpenAPI + CEL)
//! accepts the examples and rejects broken manifests with the expected messages.

mod api_json;
mod cel_cost;

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
        with("/spec/component", json!("org/app:1")),
        with("/spec/component", json!("localhost/app")),
        with("/spec/component", json!("registry:5000/org/app")),
        with("/spec/component", json!("Registry.Example.COM/org/app")),
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
            // Without a dot or port "Org" is not a registry but a Docker Hub user: part of the repository.
            "upper-case Docker Hub repository",
            with("/spec/component", json!("Org/app:1")),
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

/// Every rule's cost as the API server estimates it (tests/cel_cost follows its formulas and limits).
fn api_server_estimate(schema: &Value) -> Vec<cel_cost::RuleCost> {
    cel_cost::estimate_schema(schema).unwrap_or_else(|e| panic!("cannot estimate the CRD's rules: {e}"))
}

#[test]
fn cel_rules_reach_only_bounded_values() {
    let rules = api_server_estimate(&schema());
    assert!(rules.len() >= 10, "expected every rule of the schema, found {}", rules.len());
    let unbounded: Vec<String> = rules
        .iter()
        .flat_map(|r| {
            r.reaches.iter().filter(|reach| !reach.bounded).map(move |reach| {
                format!("{}: `{}` reaches {} without maxLength/maxItems/maxProperties", r.node, r.rule, reach.path)
            })
        })
        .collect();
    assert!(unbounded.is_empty(), "{unbounded:#?}");
    // The reach follows the rules into k8s-openapi types, where the bounds come from crd.rs's transforms.
    let reached: Vec<String> =
        rules.iter().flat_map(|r| r.reaches.iter().map(move |reach| format!("{}{}", r.node, reach.path))).collect();
    for path in [".spec.env[].name", ".spec.volumes[].name", ".spec.autoscaling.metrics[].type", ".spec.podLabels"] {
        assert!(reached.iter().any(|r| r == path), "no rule reaches {path}: {reached:#?}");
    }
}

#[test]
fn cel_cost_fits_the_api_servers_budgets() {
    let rules = api_server_estimate(&schema());
    let problems = cel_cost::budget_problems(&rules);
    let table: Vec<String> = rules
        .iter()
        .map(|r| format!("{} × {} = {}  {}: {}", r.cost, r.cardinality, r.total(), r.node, r.rule))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{table:#?}");
    let total: u64 = rules.iter().map(cel_cost::RuleCost::total).sum();
    // Headroom: a rule added later should not push the CRD over by surprise.
    assert!(total < cel_cost::STATIC_ESTIMATED_CRD_COST_LIMIT / 10, "total {total}: {table:#?}");
}

/// `spec.allowedOutboundHosts` as main had it when a 1.28 API server rejected the CRD: the list bounded,
/// its items not.
fn unbounded_outbound_hosts_fragment() -> Value {
    let rule = spec_schema()["properties"]["allowedOutboundHosts"]["x-kubernetes-validations"][0]["rule"].clone();
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "allowedOutboundHosts": {
                        "type": "array",
                        "maxItems": 64,
                        "items": {"type": "string"},
                        "x-kubernetes-validations": [{"rule": rule}]
                    }
                }
            }
        }
    })
}

#[test]
fn the_estimate_rejects_what_the_api_server_rejected() {
    let rules = api_server_estimate(&unbounded_outbound_hosts_fragment());
    let [rule] = rules.as_slice() else { panic!("expected one rule, got {rules:#?}") };
    assert_eq!(rule.node, ".spec.allowedOutboundHosts");
    assert_eq!(rule.cardinality, 1);
    assert_eq!(
        rule.reaches,
        vec![
            cel_cost::Reach { path: "[]".into(), bounded: false },
            cel_cost::Reach { path: "self".into(), bounded: true },
        ]
    );
    // The API server's words on Kubernetes 1.28: "estimated rule cost exceeds budget by factor of 62.4x".
    assert_eq!(cel_cost::factor(rule.total(), cel_cost::STATIC_ESTIMATED_COST_LIMIT), "62.4x");
    let problems = cel_cost::budget_problems(&rules);
    assert!(
        problems.iter().any(|p| p.contains("estimated rule cost exceeds budget by factor of 62.4x")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("entire OpenAPIv3 schema exceeds budget by factor of 6.2x")),
        "{problems:#?}"
    );
}

#[test]
fn the_estimate_charges_strings_by_their_declared_length() {
    use cel_cost::{estimate_rule, Decl};
    let string = |max_length: u64| Decl::of(&json!({"type": "string", "maxLength": max_length}));
    // matches: ⌈0.1 × (4 × maxLength + 1)⌉ × ⌈0.25 × regex length⌉, plus 1 for `self`.
    let (cost, _) = estimate_rule("self.matches('^[a-z]+$')", &string(100)).unwrap();
    assert_eq!(cost, 41 * 2 + 1);
    let (longer, _) = estimate_rule("self.matches('^[a-z]+$')", &string(1000)).unwrap();
    assert_eq!(longer, 401 * 2 + 1);
    // startsWith is charged by the prefix, not the string.
    let (prefix, _) = estimate_rule("self.startsWith('/var/run/wasmkube')", &string(1000)).unwrap();
    assert_eq!(prefix, 2 + 1);
    // all() multiplies the per-item cost by maxItems.
    let list = Decl::of(&json!({"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 100}}));
    let (all, _) = estimate_rule("self.all(x, x.startsWith('a'))", &list).unwrap();
    // range 1 + result 1 + 10 × (condition 2 + step: accumulator 1 + target 1 + startsWith 1).
    assert_eq!(all, 1 + 1 + 10 * (2 + 3));
    // A function the estimator does not know is an error, not a free pass.
    assert!(estimate_rule("self.lowerAscii() == 'a'", &string(10)).is_err());
}

/// Every example WasmApp as the API server stores it: defaults from the CRD schema applied.
fn examples_read_back(schema: &Value) -> Vec<Value> {
    let dir = repo_root().join("examples/wasmapps");
    let mut apps = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            apps.extend(wasmapps_in(&path).iter().map(|app| api_json::read_back(schema, app)));
        }
    }
    assert!(apps.len() >= 4, "expected the example WasmApps, found {}", apps.len());
    apps
}

fn scale_subresource() -> Value {
    let crd = serde_json::to_value(WasmApp::crd()).unwrap();
    crd["spec"]["versions"][0]["subresources"]["scale"].clone()
}

#[test]
fn every_example_has_a_scale_subresource_once_stored() {
    let schema = schema();
    assert_eq!(spec_schema()["properties"]["replicas"]["default"], 1);
    let autoscaled = examples_read_back(&schema).into_iter().filter(|app| app["spec"].get("autoscaling").is_some());
    let mut seen = 0;
    for app in autoscaled {
        // What the HPA reads first: GET …/wasmapps/NAME/scale.
        let scale = api_json::scale_of(&app, &scale_subresource())
            .unwrap_or_else(|status| panic!("{}: {}", app["metadata"]["name"], status["message"]));
        assert_eq!(scale["spec"]["replicas"], 1, "{scale}");
        let typed: WasmApp = serde_json::from_value(app).unwrap();
        assert_eq!(typed.spec.replicas, 1);
        seen += 1;
    }
    assert!(seen >= 1, "expected an autoscaled example");
}

#[test]
fn without_the_replicas_default_the_scale_subresource_fails_as_on_a_real_server() {
    // main's schema: spec.replicas optional, no default. The HPA then reports FailedGetScale forever.
    let mut old = schema();
    old["properties"]["spec"]["properties"]["replicas"].as_object_mut().unwrap().remove("default");
    let app = examples_read_back(&old)
        .into_iter()
        .find(|app| app["spec"]["autoscaling"]["minReplicas"] == 0)
        .expect("a scale-to-zero example");
    let status = api_json::scale_of(&app, &scale_subresource()).unwrap_err();
    assert_eq!(status["code"], 500);
    assert_eq!(status["message"], "Internal error occurred: the spec replicas field \".spec.replicas\" does not exist");
}

#[test]
fn a_scale_at_zero_has_no_spec_replicas() {
    use k8s_openapi::api::autoscaling::v1::Scale;
    // The HPA has taken the app to zero: the stored WasmApp says 0, its Scale says nothing.
    let mut app = api_json::read_back(&schema(), &base());
    app["spec"]["replicas"] = json!(0);
    app["status"] = json!({"replicas": 0, "readyReplicas": 0, "selector": "app.kubernetes.io/name=t"});
    let scale = api_json::scale_of(&app, &scale_subresource()).unwrap();
    assert_eq!(scale["spec"], json!({}));
    assert_eq!(scale["status"], json!({"replicas": 0, "selector": "app.kubernetes.io/name=t"}));
    // Whoever parses it must read an absent spec.replicas as 0.
    let typed: Scale = serde_json::from_value(scale).unwrap();
    assert_eq!(typed.spec.and_then(|s| s.replicas), None);
    assert_eq!(typed.status.map(|s| s.replicas), Some(0));
    // The WasmApp itself keeps the 0: its field is not omitempty.
    let typed: WasmApp = serde_json::from_value(app).unwrap();
    assert_eq!(typed.spec.replicas, 0);
    assert_eq!(serde_json::to_value(&typed).unwrap()["spec"]["replicas"], 0);
}
