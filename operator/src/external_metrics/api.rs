//! The `external.metrics.k8s.io/v1beta1` resources: discovery, metric values, `Status` errors.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::demand::{AppDemand, AppKey, Demand};

/// API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Version of the group served.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The APIService that registers this API with the aggregator (`VERSION.GROUP`).
pub const API_SERVICE: &str = "v1beta1.external.metrics.k8s.io";
// Why from the contract: the HPA the operator renders and the API that answers it must name the same metrics.
pub use wasmkube_contract::labels::APP_METRIC_LABEL as APP_LABEL;
pub use wasmkube_contract::metrics::{
    EXTERNAL_IN_FLIGHT as METRIC_IN_FLIGHT, EXTERNAL_REQUESTS_PER_SECOND as METRIC_REQUESTS_PER_SECOND,
};

const METRICS: [&str; 2] = [METRIC_REQUESTS_PER_SECOND, METRIC_IN_FLIGHT];

/// The router of the external metrics API (without TLS; [`super::serve`] adds it).
pub fn router(demand: Arc<Demand>) -> Router {
    Router::new()
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route("/apis/external.metrics.k8s.io/v1beta1", get(resource_list))
        .route("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}", get(metric_values))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(|| async {
            status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".into())
        })
        .with_state(demand)
}

async fn api_group() -> Json<Value> {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    Json(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }))
}

async fn resource_list() -> Json<Value> {
    let resources: Vec<Value> = METRICS
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "singularName": "",
                "namespaced": true,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            })
        })
        .collect();
    Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources}))
}

#[derive(Deserialize)]
struct MetricQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

async fn metric_values(
    State(demand): State<Arc<Demand>>,
    Path((namespace, metric)): Path<(String, String)>,
    Query(query): Query<MetricQuery>,
) -> Response {
    if !METRICS.contains(&metric.as_str()) {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("external metric {metric:?} is not served here"));
    }
    let app = match query.label_selector.as_deref().map(app_from_selector) {
        None => return bad_request(format!("labelSelector is required and must select {APP_LABEL}=<WasmApp name>")),
        Some(Err(problem)) => return bad_request(problem),
        Some(Ok(app)) => app,
    };
    let key = AppKey::new(namespace, app.clone());
    let AppDemand { requests_per_second, in_flight } = demand.app(&key, Instant::now());
    let mut item = json!({
        "metricName": metric,
        "metricLabels": {APP_LABEL: app},
        "timestamp": now_rfc3339(),
        "value": quantity(if metric == METRIC_IN_FLIGHT { in_flight } else { requests_per_second }),
    });
    if metric == METRIC_REQUESTS_PER_SECOND {
        item["windowSeconds"] = json!(demand.window().as_secs());
    }
    Json(json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [item],
    }))
    .into_response()
}

/// The WasmApp name a label selector asks for: `wasmkube.dev/app=NAME`, `==NAME` or `in (NAME)`,
/// possibly among other requirements (ignored: one app's demand is what the HPA scales on).
pub fn app_from_selector(selector: &str) -> Result<String, String> {
    let mut found = None;
    for requirement in split_requirements(selector) {
        let requirement = requirement.trim();
        let Some(rest) = requirement.strip_prefix(APP_LABEL) else { continue };
        let rest = rest.trim_start();
        let value = if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            v.trim()
        } else if let Some(v) = rest.strip_prefix("in") {
            let inner = v.trim().strip_prefix('(').and_then(|v| v.strip_suffix(')'));
            match inner.map(str::trim) {
                Some(v) if !v.contains(',') => v,
                _ => return Err(format!("labelSelector must name exactly one app with {APP_LABEL} in (NAME)")),
            }
        } else if rest.starts_with("!=") || rest.starts_with("notin") || rest.is_empty() {
            return Err(format!("labelSelector must select {APP_LABEL} by equality, got {requirement:?}"));
        } else {
            // Another label sharing our prefix, e.g. `wasmkube.dev/application=x`.
            continue;
        };
        if !is_label_value(value) {
            return Err(format!("invalid {APP_LABEL} value {value:?} in labelSelector"));
        }
        if found.as_deref().is_some_and(|f: &str| f != value) {
            return Err(format!("labelSelector names two apps with {APP_LABEL}"));
        }
        found = Some(value.to_string());
    }
    found.ok_or_else(|| format!("labelSelector {selector:?} does not select {APP_LABEL}=<WasmApp name>"))
}

/// Splits at commas outside parentheses (`a=b,c in (d,e)` → `a=b`, `c in (d,e)`).
fn split_requirements(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

fn is_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A Kubernetes quantity in milli-units (`1500m`), `0` for zero; negative or non-finite values are `0`.
pub fn quantity(value: f64) -> String {
    let milli = (value * 1000.0).round();
    if !milli.is_finite() || milli <= 0.0 {
        return "0".to_string();
    }
    // Why the clamp: an absurd value must still be a valid quantity, not a wrapped integer.
    format!("{}m", milli.min(i64::MAX as f64) as i64)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A `metav1.Status` failure, the shape the API server's clients expect.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    failure(code, reason, message, None)
}

/// A `metav1.Status` failure with `details` when given.
pub(crate) fn failure(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_forms() {
        assert_eq!(app_from_selector("wasmkube.dev/app=hello"), Ok("hello".into()));
        assert_eq!(app_from_selector("wasmkube.dev/app==hello"), Ok("hello".into()));
        assert_eq!(app_from_selector("wasmkube.dev/app in (hello)"), Ok("hello".into()));
        assert_eq!(app_from_selector("tier=web, wasmkube.dev/app = hello ,x in (a,b)"), Ok("hello".into()));
        assert_eq!(app_from_selector("wasmkube.dev/application=x,wasmkube.dev/app=y"), Ok("y".into()));
    }

    #[test]
    fn selector_problems_are_named() {
        for bad in [
            "",
            "tier=web",
            "wasmkube.dev/app!=hello",
            "wasmkube.dev/app in (a,b)",
            "wasmkube.dev/app=a,wasmkube.dev/app=b",
            "wasmkube.dev/app=-x",
            "wasmkube.dev/app",
        ] {
            let err = app_from_selector(bad).expect_err(bad);
            assert!(err.contains(APP_LABEL), "{bad}: {err}");
        }
    }

    #[test]
    fn quantities_in_milli_units() {
        assert_eq!(quantity(0.0), "0");
        assert_eq!(quantity(1.5), "1500m");
        assert_eq!(quantity(0.0004), "0");
        assert_eq!(quantity(0.0006), "1m");
        assert_eq!(quantity(-3.0), "0");
        assert_eq!(quantity(f64::NAN), "0");
        assert_eq!(quantity(250.0), "250000m");
    }
}
