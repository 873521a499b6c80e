//! The HorizontalPodAutoscaler of a WasmApp: it scales the WasmApp's own scale subresource.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};

use super::{child_meta, RenderConfig};
use crate::crd::{WasmApp, API_VERSION};
use crate::error::Error;
use wasmkube_contract::labels::APP_METRIC_LABEL;
use wasmkube_contract::metrics::EXTERNAL_REQUESTS_PER_SECOND;

/// Requests per second one replica should serve when the spec does not say.
pub const DEFAULT_TARGET_REQUESTS_PER_SECOND: i32 = 100;

/// True when the spec asks for scale to zero (`autoscaling.minReplicas: 0`).
pub fn scales_to_zero(app: &WasmApp) -> bool {
    app.spec.autoscaling.as_ref().is_some_and(|a| a.min_replicas == 0)
}

/// The request-rate metric an HTTP app that scales to zero gets when it names no metric: any request in the
/// rate window (or held by the activator) gives a non-zero value, so at least one replica.
fn default_request_metric(app: &WasmApp, target: i32) -> MetricSpec {
    MetricSpec {
        type_: "External".to_string(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name: EXTERNAL_REQUESTS_PER_SECOND.to_string(),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(APP_METRIC_LABEL.to_string(), app.name_any())])),
                    ..LabelSelector::default()
                }),
            },
            target: MetricTarget {
                type_: "AverageValue".to_string(),
                average_value: Some(Quantity(target.to_string())),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }
}

/// The HPA that scales the WasmApp itself (its scale subresource); `None` without `autoscaling`.
/// `minReplicas: 0` renders as 1 where the cluster cannot scale to zero (`cfg.scale_to_zero` false).
pub fn render_hpa(app: &WasmApp, cfg: &RenderConfig) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let Some(scaling) = &app.spec.autoscaling else {
        return Ok(None);
    };
    let metrics = if !scaling.metrics.is_empty() {
        Some(scaling.metrics.clone())
    } else if scaling.min_replicas == 0 && app.spec.http.is_some() {
        let target = scaling.target_requests_per_second.unwrap_or(DEFAULT_TARGET_REQUESTS_PER_SECOND);
        Some(vec![default_request_metric(app, target)])
    } else {
        None
    };
    let min_replicas = if cfg.scale_to_zero { scaling.min_replicas } else { scaling.min_replicas.max(1) };
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(app)?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(API_VERSION.to_string()),
                kind: WasmApp::kind(&()).to_string(),
                name: app.name_any(),
            },
            min_replicas: Some(min_replicas),
            max_replicas: scaling.max_replicas,
            metrics,
            behavior: scaling.behavior.clone(),
        }),
        status: None,
    }))
}
