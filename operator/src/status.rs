//! Pure derivation of a WasmApp's status from what the cluster reports.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::component::ResolvedComponent;
use crate::crd::{WasmApp, WasmAppStatus};
use crate::labels::selector_string;
use crate::render::{scales_to_zero, service_url, ActivatorEndpoints, PortsExhausted, RenderConfig, CONTAINER_NAME};

/// Condition: every desired replica is available.
pub const READY: &str = "Ready";
/// Condition: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition: something needs a human (unresolved component, failing pods, failed writes).
pub const DEGRADED: &str = "Degraded";
/// Condition of apps with `autoscaling.minReplicas: 0`: whether they can really scale to zero.
pub const SCALE_TO_ZERO: &str = "ScaleToZero";

/// A problem to show in the `Degraded` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Problem {
    /// A problem from a reason and a message.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason: reason.into(), message: message.into() }
    }
}

/// What the reconcile observed, as input to [`desired_status`].
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The Deployment as the API server returned it (after apply, or as read).
    pub deployment: Option<&'a Deployment>,
    /// Why pods fail to start, if they do.
    pub pod_failure: Option<Problem>,
    /// Why the component could not be resolved to a digest, if it could not.
    pub resolve_problem: Option<Problem>,
    /// The `ScaleToZero` condition, for apps that ask for it.
    pub scale_to_zero: Option<Verdict>,
}

/// Container waiting reasons that mean the app cannot start by itself.
const FAILING_WAIT_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ContainerCannotRun",
];

/// The first reason why the app's pods do not start, as users should see it.
pub fn pod_failure(pods: &[Pod]) -> Option<Problem> {
    for pod in pods {
        let pod_name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
        let Some(status) = &pod.status else { continue };
        for cond in status.conditions.iter().flatten() {
            if cond.type_ == "PodScheduled" && cond.status == "False" && cond.reason.as_deref() == Some("Unschedulable")
            {
                let msg = cond.message.clone().unwrap_or_default();
                return Some(Problem::new("Unschedulable", format!("pod {pod_name} cannot be scheduled: {msg}")));
            }
        }
        let containers = status.container_statuses.iter().flatten();
        for cs in containers.filter(|cs| cs.name == CONTAINER_NAME) {
            // Why last_state first: the shim's termination message explains a crash loop best.
            let last_message = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.clone())
                .filter(|m| !m.trim().is_empty());
            let state = cs.state.as_ref();
            if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = waiting.reason.as_deref().unwrap_or_default();
                if FAILING_WAIT_REASONS.contains(&reason) {
                    let detail = last_message.or_else(|| waiting.message.clone()).unwrap_or_default();
                    return Some(Problem::new(
                        "ComponentFailing",
                        format!("pod {pod_name}: {reason}: {}", detail.trim()),
                    ));
                }
            }
            if let Some(term) = state.and_then(|s| s.terminated.as_ref()) {
                if term.exit_code != 0 {
                    let detail = term.message.clone().or_else(|| term.reason.clone()).unwrap_or_default();
                    return Some(Problem::new(
                        "ComponentFailing",
                        format!("pod {pod_name}: exited with code {}: {}", term.exit_code, detail.trim()),
                    ));
                }
            }
        }
    }
    None
}

/// Facts about a Deployment's rollout.
struct Rollout {
    desired: i32,
    replicas: i32,
    ready: i32,
    available: i32,
    updated: i32,
    observed: bool,
    deadline_exceeded: Option<String>,
    replica_failure: Option<String>,
}

fn rollout(dep: &Deployment) -> Rollout {
    let desired = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = dep.status.clone().unwrap_or_default();
    let generation = dep.metadata.generation.unwrap_or(0);
    let conds = st.conditions.clone().unwrap_or_default();
    let deadline_exceeded = conds
        .iter()
        .find(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| c.message.clone().unwrap_or_default());
    let replica_failure = conds
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .map(|c| c.message.clone().unwrap_or_default());
    Rollout {
        desired,
        replicas: st.replicas.unwrap_or(0),
        ready: st.ready_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        observed: st.observed_generation.unwrap_or(-1) >= generation,
        deadline_exceeded,
        replica_failure,
    }
}

/// A condition without its transition time: what the reconcile decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Condition type.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Verdict {
    /// A verdict from its parts.
    pub fn new(type_: &'static str, status: bool, reason: &str, message: String) -> Self {
        Self { type_, status, reason: reason.to_string(), message }
    }
}

/// The conditions for what was observed: `Ready`, `Progressing`, `Degraded`, and `ScaleToZero` when asked for.
pub fn verdicts(observed: &Observed<'_>) -> Vec<Verdict> {
    let mut verdicts = base_verdicts(observed).to_vec();
    verdicts.extend(observed.scale_to_zero.clone());
    verdicts
}

fn base_verdicts(observed: &Observed<'_>) -> [Verdict; 3] {
    let Some(dep) = observed.deployment else {
        return [
            Verdict::new(READY, false, "DeploymentMissing", "no Deployment yet".into()),
            Verdict::new(PROGRESSING, true, "Creating", "creating the Deployment".into()),
            degraded_verdict(observed, None),
        ];
    };
    let r = rollout(dep);
    let ready = if r.desired == 0 {
        Verdict::new(READY, true, "ScaledToZero", "scaled to zero replicas".into())
    } else if r.available >= r.desired {
        Verdict::new(READY, true, "Available", format!("{}/{} replicas available", r.available, r.desired))
    } else {
        Verdict::new(READY, false, "ReplicasUnavailable", format!("{}/{} replicas available", r.available, r.desired))
    };
    let complete = r.observed && r.updated >= r.desired && r.replicas <= r.desired;
    let progressing = if let Some(msg) = &r.deadline_exceeded {
        Verdict::new(PROGRESSING, false, "ProgressDeadlineExceeded", msg.clone())
    } else if complete {
        Verdict::new(PROGRESSING, false, "RolloutComplete", "all replicas run the current spec".into())
    } else {
        Verdict::new(PROGRESSING, true, "RollingOut", format!("{}/{} replicas updated", r.updated, r.desired))
    };
    [ready, progressing, degraded_verdict(observed, Some(&r))]
}

fn degraded_verdict(observed: &Observed<'_>, r: Option<&Rollout>) -> Verdict {
    let problem = observed.resolve_problem.clone().or_else(|| observed.pod_failure.clone()).or_else(|| {
        let r = r?;
        r.replica_failure
            .clone()
            .map(|m| Problem::new("ReplicaFailure", m))
            .or_else(|| r.deadline_exceeded.clone().map(|m| Problem::new("ProgressDeadlineExceeded", m)))
    });
    match problem {
        Some(p) => Verdict::new(DEGRADED, true, &p.reason, p.message),
        None => Verdict::new(DEGRADED, false, "AsExpected", String::new()),
    }
}

/// Turn verdicts into conditions, keeping `lastTransitionTime` of conditions whose status did not change.
pub fn merge_conditions(
    old: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|v| {
            let status = if v.status { "True" } else { "False" }.to_string();
            let last_transition_time = old
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: v.type_.to_string(),
                status,
                reason: v.reason.clone(),
                message: v.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The status the WasmApp should have after a successful reconcile.
pub fn desired_status(
    app: &WasmApp,
    observed: &Observed<'_>,
    component: &ResolvedComponent,
    cfg: &RenderConfig,
    now: Timestamp,
) -> WasmAppStatus {
    let old = app.status.clone().unwrap_or_default();
    let generation = app.metadata.generation;
    let (replicas, ready_replicas) = observed
        .deployment
        .map(|d| {
            let r = rollout(d);
            (r.replicas, r.ready)
        })
        .unwrap_or((0, 0));
    let pinned = component.digest.is_some();
    WasmAppStatus {
        observed_generation: generation,
        replicas,
        ready_replicas,
        selector: Some(selector_string(&app.metadata.name.clone().unwrap_or_default())),
        conditions: merge_conditions(&old.conditions, &verdicts(observed), generation, now),
        // Why keep the old source when the new one failed: it records what the pods really run.
        resolved_from: if pinned && observed.resolve_problem.is_none() {
            Some(app.spec.component.clone())
        } else {
            old.resolved_from.filter(|_| pinned)
        },
        resolved_component: pinned.then(|| component.reference.clone()),
        component_digest: component.digest.clone(),
        url: service_url(app, cfg),
    }
}

/// The status after a failed reconcile: previous fields kept, `Degraded` set to the error.
pub fn degraded_status(app: &WasmApp, problem: &Problem, now: Timestamp) -> WasmAppStatus {
    let mut status = app.status.clone().unwrap_or_default();
    let generation = app.metadata.generation;
    let verdict = Verdict::new(DEGRADED, true, &problem.reason, problem.message.clone());
    let merged = merge_conditions(&status.conditions, &[verdict], generation, now);
    status.conditions.retain(|c| c.type_ != DEGRADED);
    status.conditions.extend(merged);
    status.observed_generation = generation;
    status
}

/// The `Degraded` condition of a status, if set.
pub fn degraded(status: Option<&WasmAppStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == DEGRADED && c.status == "True")
}

/// What the operator learnt of the cluster's HPA scale-to-zero support (the `HPAScaleToZero` feature gate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ScaleToZeroSupport {
    /// No HPA with `minReplicas: 0` was applied yet.
    #[default]
    Unknown,
    /// The API server accepted an HPA with `minReplicas: 0`.
    Supported,
    /// The API server refused `minReplicas: 0`, with this message.
    Refused(String),
}

/// The `ScaleToZero` condition of an app with `autoscaling.minReplicas: 0`; `None` for other apps.
/// `activator` is the activator found for an HTTP app (`None`: not configured or not an HTTP app).
pub fn scale_to_zero_verdict(
    app: &WasmApp,
    support: &ScaleToZeroSupport,
    activator: Option<&ActivatorEndpoints>,
    no_port: Option<&PortsExhausted>,
    activator_service: Option<&str>,
) -> Option<Verdict> {
    if !scales_to_zero(app) {
        return None;
    }
    Some(match (support, app.spec.http.is_some(), activator) {
        (ScaleToZeroSupport::Refused(msg), _, _) => Verdict::new(
            SCALE_TO_ZERO,
            false,
            "Unsupported",
            format!(
                "the API server refused an HPA with minReplicas 0 (is the HPAScaleToZero feature gate off?), so the app keeps 1 replica: {msg}"
            ),
        ),
        (_, false, _) => Verdict::new(
            SCALE_TO_ZERO,
            true,
            "Enabled",
            "the HPA may scale the app to zero on its Object/External metrics".into(),
        ),
        (_, true, Some(a)) if !a.addresses.is_empty() && no_port.is_some() => Verdict::new(
            SCALE_TO_ZERO,
            false,
            "NoActivatorPort",
            format!(
                "requests that arrive while the app has no ready replica fail: {}",
                no_port.map(ToString::to_string).unwrap_or_default()
            ),
        ),
        (_, true, Some(a)) if !a.addresses.is_empty() => Verdict::new(
            SCALE_TO_ZERO,
            true,
            "Enabled",
            format!("idle, the app scales to zero; requests that arrive then wait at the activator ({} ready)", a.addresses.len()),
        ),
        (_, true, _) => Verdict::new(
            SCALE_TO_ZERO,
            false,
            "ActivatorUnavailable",
            format!(
                "no ready activator pod in Service {}: requests that arrive while the app has no ready replica fail",
                activator_service.unwrap_or("<not configured>")
            ),
        ),
    })
}
