//! JSON as a real Kubernetes API server sends it, for tests of code that reads objects back: omitted zero
//! values, defaults filled from the CRD schema, and the scale subresource of a custom resource.
//!
//! Include it with `mod api_json;` from a test file.
#![allow(dead_code)] // Each test file uses the part it needs.

use serde_json::{json, Map, Value};

/// An autoscaling/v1 `Scale` as the API server serialises it. Go's `omitempty` on `ScaleSpec.replicas`
/// drops the field at 0 (`"spec": {}`); `ScaleStatus.replicas` has no `omitempty` and is always present
/// (k8s.io/api/autoscaling/v1/types.go).
pub fn scale(namespace: &str, name: &str, spec_replicas: i32, status_replicas: i32, selector: &str) -> Value {
    let mut spec = Map::new();
    if spec_replicas != 0 {
        spec.insert("replicas".into(), json!(spec_replicas));
    }
    let mut status = Map::new();
    status.insert("replicas".into(), json!(status_replicas));
    if !selector.is_empty() {
        status.insert("selector".into(), json!(selector));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "3f1c7d2a-5b8e-4c1f-9a0d-2e6b7c8d9e01",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-30T10:00:00Z"
        },
        "spec": spec,
        "status": status
    })
}

/// The body of the 500 the API server answers for `GET …/scale` of a custom resource without the field
/// its CRD names as `specReplicasPath` (apiextensions-apiserver pkg/registry/customresource/etcd.go,
/// `ScaleREST.Get`).
pub fn missing_spec_replicas_status(spec_replicas_path: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: the spec replicas field \"{spec_replicas_path}\" does not exist"),
        "reason": "InternalError",
        "details": {"causes": [{"message": format!("the spec replicas field \"{spec_replicas_path}\" does not exist")}]},
        "code": 500
    })
}

/// Fill `obj` with the `default`s of its structural schema, as the API server does on create and on every
/// read from storage (apiextensions-apiserver pkg/apiserver/schema/defaulting/algorithm.go): a missing
/// property with a default gets it; present objects and list items are defaulted in turn.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    match obj {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    if !map.contains_key(name) {
                        if let Some(default) = prop.get("default") {
                            map.insert(name.clone(), default.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(name) {
                        apply_defaults(prop, child);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for value in map.values_mut() {
                    apply_defaults(&schema["additionalProperties"], value);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                apply_defaults(&schema["items"], item);
            }
        }
        _ => {}
    }
}

/// `manifest` as the API server returns it after a create: defaults applied, server-set metadata added.
pub fn read_back(openapi_schema: &Value, manifest: &Value) -> Value {
    let mut obj = manifest.clone();
    apply_defaults(openapi_schema, &mut obj);
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.entry("namespace").or_insert(json!("default"));
        meta.insert("uid".into(), json!("0b6f6e0e-8a51-4c59-9d6c-1f2a3b4c5d6e"));
        meta.insert("resourceVersion".into(), json!("1234"));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!("2026-11-30T10:00:00Z"));
    }
    obj
}

/// The scale subresource of a stored custom resource: its `Scale`, or the API server's error when the field
/// named by `specReplicasPath` is absent (`scaleFromCustomResource` and `ScaleREST.Get` in
/// apiextensions-apiserver pkg/registry/customresource/etcd.go).
pub fn scale_of(obj: &Value, scale_subresource: &Value) -> Result<Value, Value> {
    let spec_path = scale_subresource["specReplicasPath"].as_str().unwrap_or_default();
    let Some(spec_replicas) = field(obj, &scale_subresource["specReplicasPath"]).and_then(Value::as_i64) else {
        return Err(missing_spec_replicas_status(spec_path));
    };
    let status_replicas = field(obj, &scale_subresource["statusReplicasPath"]).and_then(Value::as_i64).unwrap_or(0);
    let selector = field(obj, &scale_subresource["labelSelectorPath"]).and_then(Value::as_str).unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    Ok(scale(namespace, name, spec_replicas as i32, status_replicas as i32, selector))
}

/// The value at a `.a.b` path of the scale subresource.
fn field<'a>(obj: &'a Value, path: &Value) -> Option<&'a Value> {
    obj.pointer(&path.as_str()?.replace('.', "/"))
}
