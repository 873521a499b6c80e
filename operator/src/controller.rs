//! The WasmApp controller: reconcile, error policy and the `Controller` wiring.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::app_key::AppKey;
use crate::children::{Cached, ChildCache, Shelf};
use crate::crd::{WasmApp, WasmAppStatus, API_VERSION};
use crate::error::{message_chain, Error};
use crate::events::EventQueue;
pub use crate::events::EventSpec;
use crate::labels::{
    selector_string, ACTIVATOR_SLICE_MANAGER, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    LABEL_SLICE_MANAGED_BY,
};
use crate::metrics::Metrics;
use crate::render::{
    activator_endpoints, activator_slice_name, allocate_activator_port, render_activator_slice, render_deployment,
    render_hpa, render_service, scales_to_zero, slice_activator_port, wants_activator_slice, ActivatorEndpoints,
    ActivatorPorts, PortsExhausted, RenderConfig,
};
use crate::resolve::{resolve_component, Resolver};
use crate::status::{
    degraded_status, desired_status, pod_failure, scale_to_zero_verdict, Observed, Problem, ScaleToZeroSupport,
    SCALE_TO_ZERO,
};

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Config {
    /// Shapes rendered objects.
    pub render: RenderConfig,
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Requeue interval of a healthy app (periodic drift check).
    pub resync: Duration,
    /// Requeue interval of an app that is not ready or degraded (pods and registry are not watched).
    pub recheck: Duration,
    /// The Service in front of the activator pods; `None` leaves idle HTTP apps without an activator.
    pub activator: Option<ActivatorService>,
    /// Ports handed out to scale-to-zero apps, one per app, for their activator slices.
    pub activator_ports: ActivatorPorts,
    /// Reconciles running at once, at most (kube-rs takes 0 as unbounded).
    pub concurrency: u16,
}

/// Where the activator pods are: a Service whose EndpointSlices list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivatorService {
    /// Namespace of the Service (the operator's).
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
}

/// Reconciles at once by default. Why 2: each reconcile's requests wait in the API server behind the others' (Service
/// creates most, which share one ClusterIP allocator); at 1,000 apps 8 gave p99 148 ms and 11 s to apply them all, 2
/// gave 49 ms and 13 s, 1 gave 37 ms and 18 s (docs/operator.md, "At scale").
pub const DEFAULT_CONCURRENCY: u16 = 2;

impl Default for Config {
    fn default() -> Self {
        Self {
            render: RenderConfig::default(),
            namespace: None,
            resync: Duration::from_secs(300),
            recheck: Duration::from_secs(30),
            activator: None,
            activator_ports: ActivatorPorts::default(),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Source of the current time (a seam so tests get stable timestamps).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events on WasmApps, off the reconcile's path.
    pub events: EventQueue,
    /// The children as the controller's watches see them.
    pub children: ChildCache,
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Config,
    /// Tag → digest resolution; `None` disables it (tags are passed to the shim as written).
    pub resolver: Option<Arc<dyn Resolver>>,
    /// Current time.
    pub clock: Clock,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The status last written per app, until the watch shows it on the app (see [`Context::already_written`]).
    written: Mutex<HashMap<String, u64>>,
    /// Whether the API server takes HPAs with `minReplicas: 0`, learnt from its answers.
    scale_to_zero: Mutex<ScaleToZeroSupport>,
    /// Held while an activator port is chosen and its slice applied, so two apps never pick the same one.
    port_allocation: tokio::sync::Mutex<()>,
}

impl Context {
    /// A context whose Events are reported as `wasmkube-operator` from `instance` (starts the Event publishing task,
    /// so within a Tokio runtime). Its child cache is filled by [`run`]'s watches.
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        resolver: Option<Arc<dyn Resolver>>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.to_string(), instance };
        Self {
            events: EventQueue::start(client.clone(), reporter),
            children: ChildCache::default(),
            client,
            metrics,
            config,
            resolver,
            clock: Arc::new(Timestamp::now),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            scale_to_zero: Mutex::new(ScaleToZeroSupport::Unknown),
            port_allocation: tokio::sync::Mutex::new(()),
        }
    }

    /// What is known of the cluster's scale-to-zero support.
    pub fn scale_to_zero_support(&self) -> ScaleToZeroSupport {
        self.scale_to_zero.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_scale_to_zero_support(&self, support: ScaleToZeroSupport) {
        *self.scale_to_zero.lock().unwrap_or_else(|e| e.into_inner()) = support;
    }

    /// The render settings, with scale to zero off once the API server refused it.
    fn render_config(&self) -> RenderConfig {
        let mut cfg = self.config.render.clone();
        cfg.scale_to_zero = !matches!(self.scale_to_zero_support(), ScaleToZeroSupport::Refused(_));
        cfg
    }

    /// Read children from `children` instead (tests).
    pub fn with_children(mut self, children: ChildCache) -> Self {
        self.children = children;
        self
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Whether `status` is what this process last wrote for the object, while the app's cached copy does not show it
    /// yet. Why: a child's watch event often comes back before the status write's, and its reconcile saw the old status,
    /// wrote the same one again and repeated its Events (about 400 of each at 1,000 apps, docs/operator.md "At scale").
    fn already_written(&self, app: &WasmApp, status: &WasmAppStatus) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(&written_key(app)).is_some_and(|h| Some(*h) == status_hash(status))
    }

    /// Remember the status written for the app (`None`: the cached app shows it, nothing left to bridge).
    fn set_written(&self, app: &WasmApp, status: Option<&WasmAppStatus>) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match status.and_then(status_hash) {
            Some(hash) => written.insert(written_key(app), hash),
            None => written.remove(&written_key(app)),
        };
    }

    fn clear_failures(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

fn status_hash(status: &WasmAppStatus) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status).ok()?.hash(&mut hasher);
    Some(hasher.finish())
}

/// Why the uid: an app deleted and created again under its name starts without a status.
fn written_key(app: &WasmApp) -> String {
    format!("{}/{}", object_key(app), app.metadata.uid.as_deref().unwrap_or_default())
}

fn object_key(app: &WasmApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

/// Backoff after `failures` consecutive failures: 5s doubling up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exp).min(Duration::from_secs(300))
}

/// Reconcile one WasmApp: metrics and failure reporting around [`apply`].
pub async fn reconcile(app: Arc<WasmApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started();
    let span = tracing::info_span!("reconcile", app = %object_key(&app));
    match apply(&app, &ctx).instrument(span).await {
        Ok(action) => {
            ctx.clear_failures(&object_key(&app));
            Ok(action)
        }
        Err(err) => {
            ctx.metrics.reconcile_failed(err.category());
            report_failure(&app, &ctx, &err).await;
            Err(err)
        }
    }
}

/// Requeue with per-object exponential backoff; the only place backoff is decided.
pub fn error_policy(app: Arc<WasmApp>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&object_key(&app));
    let delay = backoff(n);
    tracing::warn!(app = %object_key(&app), error = %message_chain(err), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Show a failed reconcile on the WasmApp: `Degraded` condition and a Warning Event, on transitions only.
async fn report_failure(app: &WasmApp, ctx: &Context, err: &Error) {
    let problem = Problem::new(err.category(), message_chain(err));
    let status = degraded_status(app, &problem, (ctx.clock)());
    if app.status.as_ref() == Some(&status) || ctx.already_written(app, &status) {
        return;
    }
    let events = transition_events(app.status.as_ref(), &status);
    if let Err(e) = patch_status(app, ctx, &status).await {
        tracing::warn!(error = %message_chain(&e), "could not record the failure in the status");
    }
    ctx.events.send(&app.object_ref(&()), events);
}

/// Events for the changes between two statuses: Degraded set or changed, recovered, new digest.
pub fn transition_events(old: Option<&WasmAppStatus>, new: &WasmAppStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let old_degraded = crate::status::degraded(old);
    let new_degraded = crate::status::degraded(Some(new));
    match (old_degraded, new_degraded) {
        (_, Some(n)) if old_degraded.map(|o| (&o.reason, &o.message)) != Some((&n.reason, &n.message)) => {
            events.push(EventSpec::new(true, &n.reason, n.message.clone()));
        }
        (Some(o), None) => {
            events.push(EventSpec::new(false, "Recovered", format!("no longer degraded (was {})", o.reason)));
        }
        _ => {}
    }
    let old_digest = old.and_then(|s| s.component_digest.as_ref());
    if let Some(digest) = &new.component_digest {
        if old_digest != Some(digest) {
            events.push(EventSpec::new(
                false,
                "ComponentResolved",
                format!("pods run {}", new.resolved_component.as_deref().unwrap_or(digest)),
            ));
        }
    }
    events
}

async fn patch_status(app: &WasmApp, ctx: &Context, status: &WasmAppStatus) -> Result<(), Error> {
    let api: Api<WasmApp> =
        Api::namespaced(ctx.client.clone(), &app.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?);
    let body = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "WasmApp",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch_status(&app.name_any(), &params, &Patch::Apply(&body)).await;
    ctx.set_written(app, written.is_ok().then_some(status));
    written.map_err(Error::Status)?;
    Ok(())
}

/// What [`ensure`] did with a child.
enum Child<K> {
    /// The child exists as returned by the API server.
    Present(K),
    /// The child is not wanted and there is none of ours.
    Absent,
    /// The child was not wanted any more and was deleted.
    Deleted,
}

/// True when every field of `desired` has the same value in `actual` (arrays element-wise):
/// the server's defaults add fields, so equality would never hold.
pub fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => {
            d.iter().all(|(k, v)| a.get(k).is_some_and(|av| is_subset(v, av)) || v.is_null())
        }
        (Value::Array(d), Value::Array(a)) => d.len() == a.len() && d.iter().zip(a).all(|(dv, av)| is_subset(dv, av)),
        _ => desired == actual,
    }
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
}

/// The kind of a child as a static name for errors.
fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "HorizontalPodAutoscaler" => "HorizontalPodAutoscaler",
        "EndpointSlice" => "EndpointSlice",
        _ => "object",
    }
}

/// Make the child named like the app match `desired`: apply when it differs, delete ours when unwanted. The child is
/// read from the watch's cache; the API server is asked only when the cache has none of that name and one is wanted
/// (a foreign object of that name must be found, not overwritten) or the watch has not listed everything yet.
async fn ensure<K>(
    api: &Api<K>,
    cache: &ChildCache,
    name: &str,
    owner_uid: &str,
    desired: Option<K>,
) -> Result<Child<K>, Error>
where
    K: Cached + Debug,
{
    let kind = kind_name::<K>();
    let cached = api.namespace().and_then(|ns| cache.get::<K>(ns, name));
    let existing = match cached {
        Some(child) => Some(child),
        None if desired.is_none() && cache.is_complete::<K>() => None,
        None => api.get_opt(name).await.map_err(|source| Error::Read { kind, source })?,
    };
    converge(api, name, owner_uid, desired, existing).await
}

/// [`ensure`] once the child's current state (`existing`) is known.
async fn converge<K>(
    api: &Api<K>,
    name: &str,
    owner_uid: &str,
    desired: Option<K>,
    existing: Option<K>,
) -> Result<Child<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = kind_name::<K>();
    match (desired, existing) {
        (Some(desired), existing) => {
            if let Some(existing) = existing {
                if !owned_by(existing.meta(), owner_uid) {
                    return Err(Error::NameConflict { kind, name: name.to_string() });
                }
                let want = serde_json::to_value(&desired).map_err(|e| Error::Serialize(kind, e))?;
                let have = serde_json::to_value(&existing).map_err(|e| Error::Serialize(kind, e))?;
                if is_subset(&want, &have) {
                    return Ok(Child::Present(existing));
                }
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let applied = api
                .patch(name, &params, &Patch::Apply(&desired))
                .await
                .map_err(|source| Error::Apply { kind, source })?;
            tracing::info!(kind, name, "applied");
            Ok(Child::Present(applied))
        }
        (None, Some(existing)) if owned_by(existing.meta(), owner_uid) => {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {
                    tracing::info!(kind, name, "deleted: no longer wanted");
                    Ok(Child::Deleted)
                }
                // Why not an error: the cache that showed it may lag behind its deletion.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Child::Absent),
                Err(source) => Err(Error::Delete { kind, source }),
            }
        }
        (None, _) => Ok(Child::Absent),
    }
}

/// Apply the HPA; when the API server refuses `minReplicas: 0` (feature gate off), remember it and apply
/// it again with 1. Returns the HPA and the render settings that follow from the answer.
async fn ensure_hpa(
    app: &WasmApp,
    ctx: &Context,
    hpas: &Api<HorizontalPodAutoscaler>,
    uid: &str,
) -> Result<(Child<HorizontalPodAutoscaler>, RenderConfig), Error> {
    let mut cfg = ctx.render_config();
    let name = app.name_any();
    match ensure(hpas, &ctx.children, &name, uid, render_hpa(app, &cfg)?).await {
        Ok(child) => {
            if scales_to_zero(app) && cfg.scale_to_zero && matches!(child, Child::Present(_)) {
                ctx.set_scale_to_zero_support(ScaleToZeroSupport::Supported);
            }
            Ok((child, cfg))
        }
        Err(Error::Apply { source: kube::Error::Api(status), .. })
            if cfg.scale_to_zero && scales_to_zero(app) && refuses_min_replicas_zero(&status) =>
        {
            tracing::warn!(message = %status.message, "the API server refuses HPAs with minReplicas 0; apps keep 1 replica");
            ctx.set_scale_to_zero_support(ScaleToZeroSupport::Refused(status.message.clone()));
            cfg.scale_to_zero = false;
            let child = ensure(hpas, &ctx.children, &name, uid, render_hpa(app, &cfg)?).await?;
            Ok((child, cfg))
        }
        Err(e) => Err(e),
    }
}

/// The API server's answer to `minReplicas: 0` without the HPAScaleToZero feature gate: a 422 on that field.
pub fn refuses_min_replicas_zero(status: &kube::core::Status) -> bool {
    status.code == 422 && status.message.contains("minReplicas")
}

/// What the reconcile learnt about an app's activator path, for its `ScaleToZero` condition.
#[derive(Debug, Default)]
struct ActivatorPath {
    /// The activator pods found.
    endpoints: ActivatorEndpoints,
    /// Why the app could not get an activator port, if it could not.
    no_port: Option<PortsExhausted>,
}

/// Keep the activator slice of an idle HTTP app that scales to zero (on the app's own activator port), and
/// delete it when the app has ready pods. Returns what was found (`None` when the app has no use for it).
async fn ensure_activator_slice(
    app: &WasmApp,
    ctx: &Context,
    cfg: &RenderConfig,
    deployment: Option<&Deployment>,
    uid: &str,
) -> Result<Option<ActivatorPath>, Error> {
    let wanted = app.spec.http.is_some() && scales_to_zero(app);
    // Why the condition: an app that once scaled to zero may still have a slice to delete.
    let had = app.status.iter().flat_map(|s| &s.conditions).any(|c| c.type_ == SCALE_TO_ZERO);
    if !wanted && !had {
        return Ok(None);
    }
    let ns = app.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let activator = match (&ctx.config.activator, wanted) {
        (Some(svc), true) => {
            let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &svc.namespace);
            let lp = ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={}", svc.name));
            let slices = api.list(&lp).await.map_err(|source| Error::Read { kind: "EndpointSlice", source })?;
            Some(activator_endpoints(&slices.items))
        }
        _ => None,
    };
    let ready = deployment.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas).unwrap_or(0);
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let name = activator_slice_name(app);
    let existing = slices.get_opt(&name).await.map_err(|source| Error::Read { kind: "EndpointSlice", source })?;
    let mut path = ActivatorPath { endpoints: activator.clone().unwrap_or_default(), no_port: None };
    let needed = activator.as_ref().filter(|a| wants_activator_slice(app, a, ready, cfg));
    let child = match needed {
        Some(endpoints) => {
            let current = existing.as_ref().and_then(slice_activator_port);
            let range = ctx.config.activator_ports;
            if let Some(port) = current.filter(|p| range.contains(*p)) {
                let desired = render_activator_slice(app, endpoints, ready, cfg, port)?;
                converge(&slices, &name, uid, desired, existing).await?
            } else {
                // Why one at a time: the list must include the slice the previous allocation applied.
                let _allocating = ctx.port_allocation.lock().await;
                let taken = activator_ports_in_use(ctx).await?;
                match allocate_activator_port(&AppKey::new(ns.as_str(), app.name_any()), current, &taken, range) {
                    Ok(port) => {
                        tracing::info!(port, "activator port assigned");
                        let desired = render_activator_slice(app, endpoints, ready, cfg, port)?;
                        converge(&slices, &name, uid, desired, existing).await?
                    }
                    Err(exhausted) => {
                        tracing::warn!(error = %exhausted, "no activator port for the app");
                        path.no_port = Some(exhausted);
                        // Why delete: a slice on a port outside the range would send requests nowhere.
                        converge(&slices, &name, uid, None, existing).await?
                    }
                }
            }
        }
        None => converge(&slices, &name, uid, None, existing).await?,
    };
    match child {
        Child::Present(_) => tracing::debug!("requests go to the activator"),
        Child::Deleted => tracing::info!("requests go to the pods again"),
        Child::Absent => {}
    }
    Ok((activator.is_some() || wanted).then_some(path))
}

/// The ports of every activator slice the operator can see (the watched namespace, else all), with their apps.
async fn activator_ports_in_use(ctx: &Context) -> Result<Vec<(AppKey, u16)>, Error> {
    let api: Api<EndpointSlice> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let lp = ListParams::default().labels(&format!("{LABEL_SLICE_MANAGED_BY}={ACTIVATOR_SLICE_MANAGER}"));
    let list = api.list(&lp).await.map_err(|source| Error::Read { kind: "EndpointSlice", source })?;
    Ok(list
        .items
        .iter()
        .filter_map(|slice| {
            let app = AppKey::new(slice.namespace()?, slice.labels().get(LABEL_SERVICE_NAME)?.as_str());
            Some((app, slice_activator_port(slice)?))
        })
        .collect())
}

/// Pods of the app are read only when some replica is missing, to say why, and once the Deployment controller has
/// seen the current spec: before that no pod can say anything (at start, every app's first reconcile listed its pods
/// for nothing; docs/operator.md "At scale"). The Deployment's status change triggers the next reconcile.
fn missing_replicas(dep: &Deployment) -> bool {
    let observed = dep.status.as_ref().and_then(|s| s.observed_generation);
    if observed.is_none() || observed < dep.metadata.generation {
        return false;
    }
    let desired = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = dep.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    available < desired
}

/// The reconcile proper: resolve, render, apply children, delete unwanted ones, write status.
pub async fn apply(app: &WasmApp, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = app.name_any();
    let uid = app.metadata.uid.clone().ok_or(Error::MissingObjectKey("metadata.uid"))?;

    let (component, resolve_problem) = resolve_component(app, ctx.resolver.as_deref()).await?;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let mut events = Vec::new();

    // Why the HPA first: its answer tells whether the cluster can scale to zero, which the Deployment's
    // replicas depend on.
    let (hpa, cfg) = ensure_hpa(app, ctx, &hpas, &uid).await?;
    if matches!(hpa, Child::Deleted) {
        events.push(EventSpec::new(
            false,
            "AutoscalerDeleted",
            format!("deleted HorizontalPodAutoscaler {name}: spec.autoscaling was removed"),
        ));
    }

    let desired_dep = render_deployment(app, &component, &cfg)?;
    let deployment = match ensure(&deployments, &ctx.children, &name, &uid, Some(desired_dep)).await? {
        Child::Present(d) => Some(d),
        Child::Absent | Child::Deleted => None,
    };
    let service = ensure(&services, &ctx.children, &name, &uid, render_service(app)?).await?;
    if matches!(service, Child::Deleted) {
        events.push(EventSpec::new(false, "ServiceDeleted", format!("deleted Service {name}: spec.http was removed")));
    }
    let activator = ensure_activator_slice(app, ctx, &cfg, deployment.as_ref(), &uid).await?;

    let pod_failure = match &deployment {
        Some(d) if missing_replicas(d) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let lp = ListParams::default().labels(&selector_string(&name));
            match pods.list(&lp).await {
                Ok(list) => pod_failure(&list.items),
                Err(e) => {
                    // Why not fail: pods only explain the status; the children are already applied.
                    tracing::debug!(error = %e, "could not list pods");
                    None
                }
            }
        }
        _ => None,
    };

    let activator_service = ctx.config.activator.as_ref().map(|a| format!("{}/{}", a.namespace, a.name));
    let scale_to_zero = scale_to_zero_verdict(
        app,
        &ctx.scale_to_zero_support(),
        activator.as_ref().map(|a| &a.endpoints),
        activator.as_ref().and_then(|a| a.no_port.as_ref()),
        activator_service.as_deref(),
    );
    let observed = Observed { deployment: deployment.as_ref(), pod_failure, resolve_problem, scale_to_zero };
    let status = desired_status(app, &observed, &component, &cfg, (ctx.clock)());
    if app.status.as_ref() == Some(&status) {
        ctx.set_written(app, None);
    } else if !ctx.already_written(app, &status) {
        events.extend(transition_events(app.status.as_ref(), &status));
        patch_status(app, ctx, &status).await?;
    }
    ctx.events.send(&app.object_ref(&()), events);

    let healthy = crate::status::degraded(Some(&status)).is_none()
        && status.conditions.iter().any(|c| c.type_ == crate::status::READY && c.status == "True");
    Ok(Action::requeue(if healthy { ctx.config.resync } else { ctx.config.recheck }))
}

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what the reconcile never reads from a cached object (WasmApp or child): its managedFields (one entry per
/// writer, often larger than the spec) and `kubectl apply`'s copy of the object. The caches hold every app and child
/// for the life of the process (docs/operator.md, "At scale").
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Which version of an app's spec an object is: its uid (an app deleted and created again under its name is new) and
/// its generation (the API server counts spec changes, `kubectl scale` included, and not status or metadata ones).
pub fn spec_version(app: &WasmApp) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (app.metadata.uid.as_deref(), app.metadata.generation?).hash(&mut hasher);
    Some(hasher.finish())
}

/// The watch events of WasmApps that call for a reconcile: an app seen for the first time or with a new spec. Why not
/// every change: each reconcile's own status write came back as one more reconcile of every app (the children's
/// watches and the periodic requeue still trigger the rest).
pub fn reconcile_triggers(
    events: impl Stream<Item = Result<watcher::Event<WasmApp>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<WasmApp, watcher::Error>> + Send + 'static {
    events.applied_objects().predicate_filter(spec_version, Default::default())
}

/// The watch of one kind of child: it fills the kind's shelf and then yields the children that changed, so that their
/// owners are reconciled (and read them there).
fn child_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    shelf: Shelf<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Cached + Debug + Send + Sync,
{
    watcher(api, config)
        .default_backoff()
        .modify(slim)
        .inspect(move |event| {
            if let Ok(event) = event {
                shelf.apply(event);
            }
        })
        .touched_objects()
}

/// Run the controller until `shutdown` resolves; its watches fill `ctx`'s child cache.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (apps, deployments, services, hpas, slices) = match &ctx.config.namespace {
        Some(ns) => (
            Api::<WasmApp>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
            Api::<EndpointSlice>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // Why the label filter: the controller only needs to see its own children, not every Deployment. Why any
    // semantic: the API server lists from its watch cache instead of a quorum read of etcd.
    let ours = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}")).any_semantic();
    let (cache, writer) = reflector::store();
    let apps = reconcile_triggers(
        watcher(apps, watcher::Config::default().any_semantic()).default_backoff().modify(slim).reflect(writer),
    );
    let mut controller = Controller::for_stream(apps, cache)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
        .owns_stream(child_watch(deployments, ours.clone(), ctx.children.deployments.clone()))
        .owns_stream(child_watch(services, ours.clone(), ctx.children.services.clone()))
        .owns_stream(child_watch(hpas, ours.clone(), ctx.children.hpas.clone()))
        .owns(slices, ours);
    if let Some(activator) = &ctx.config.activator {
        // Why every app: when activator pods come or go, every idle app's slice must follow.
        let api: Api<EndpointSlice> = Api::namespaced(client, &activator.namespace);
        let cfg = watcher::Config::default().labels(&format!("{LABEL_SERVICE_NAME}={}", activator.name));
        let changes = watcher(api, cfg).filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => Some(()),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "watching the activator's EndpointSlices");
                    None
                }
            }
        });
        controller = controller.reconcile_all_on(changes);
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(app = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile round ended with an error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(uid: &str, generation: i64, ready: Option<i32>) -> Result<WasmApp, serde_json::Error> {
        let status = ready.map(|r| serde_json::json!({ "observedGeneration": generation, "readyReplicas": r }));
        serde_json::from_value(serde_json::json!({
            "apiVersion": API_VERSION, "kind": "WasmApp",
            "metadata": { "name": "hello", "namespace": "apps", "uid": uid, "generation": generation },
            "spec": { "component": "ghcr.io/org/app:1" },
            "status": status,
        }))
    }

    #[tokio::test]
    async fn only_new_apps_and_new_specs_trigger_a_reconcile() -> Result<(), Box<dyn std::error::Error>> {
        let events = vec![
            app("u-1", 1, None)?,
            app("u-1", 1, Some(0))?, // our own status write
            app("u-1", 1, Some(1))?,
            app("u-1", 2, Some(1))?, // spec changed
            app("u-2", 1, None)?,    // deleted and created again
        ];
        let stream = futures::stream::iter(events.into_iter().map(|a| Ok(watcher::Event::Apply(a))));
        let triggered: Vec<(Option<String>, Option<i64>)> = reconcile_triggers(stream)
            .map(|r| r.map(|a| (a.metadata.uid, a.metadata.generation)))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let expected = [(Some("u-1".into()), Some(1)), (Some("u-1".into()), Some(2)), (Some("u-2".into()), Some(1))];
        assert_eq!(triggered, expected);
        Ok(())
    }

    #[test]
    fn slim_drops_only_what_the_reconcile_never_reads() -> Result<(), serde_json::Error> {
        let mut app: WasmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "WasmApp",
            "metadata": {
                "name": "hello", "namespace": "apps", "uid": "u-1", "generation": 3,
                "annotations": { LAST_APPLIED: "{\"spec\":{}}", "team": "a" },
                "managedFields": [{ "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                    "fieldsV1": { "f:spec": {} } }],
            },
            "spec": { "component": "ghcr.io/org/app:1", "http": {} },
            "status": { "observedGeneration": 3 },
        }))?;
        let before = app.clone();
        slim(&mut app);
        assert_eq!(app.metadata.managed_fields, None);
        let annotations = app.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.into_iter().collect::<Vec<_>>(), [("team".to_string(), "a".to_string())]);
        assert_eq!((app.spec, app.status), (before.spec, before.status));
        assert_eq!((app.metadata.uid, app.metadata.generation), (before.metadata.uid, before.metadata.generation));
        Ok(())
    }
}
