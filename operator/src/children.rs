//! The operator's children as its watches last saw them. The reconcile reads a child here instead of asking the API
//! server for it (three GETs in every reconcile before, docs/operator.md "At scale"); it still asks when the cache has
//! no child of that name and one is wanted, which keeps a foreign object of the same name (one without our labels, so
//! not watched) from being taken over.
//!
//! Children are kept as the JSON the watch delivered (slimmed), not as typed objects: with kube-rs' reflector stores of
//! typed Deployments, Services and HPAs the operator's RSS grew by 20 MiB at 1,000 apps, with JSON by about 3 MiB
//! (2.1 KB a Deployment, 0.9 KB a Service or HPA); a reconcile decodes only the few children it reads.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Namespace and name of a child.
type Key = (String, String);

#[derive(Default)]
struct State {
    objects: HashMap<Key, Arc<[u8]>>,
    /// The objects of a list in progress (a watch's start or restart), swapped in when it is done.
    listing: Option<HashMap<Key, Arc<[u8]>>>,
    /// A list has completed once: a child missing from `objects` is not there (as far as the watch knows).
    complete: bool,
}

/// The children of one kind, filled by a watch's events through [`Shelf::apply`] and read by reconciles.
pub struct Shelf<K> {
    state: Arc<Mutex<State>>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Shelf<K> {
    fn clone(&self) -> Self {
        Self { state: self.state.clone(), kind: PhantomData }
    }
}

impl<K> Default for Shelf<K> {
    fn default() -> Self {
        Self { state: Arc::default(), kind: PhantomData }
    }
}

impl<K: Resource + Serialize + DeserializeOwned> Shelf<K> {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply one watch event, as kube-rs' reflector does: a list replaces the objects only once it is complete.
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut state = self.state();
        match event {
            watcher::Event::Apply(obj) => match key_and_json(obj) {
                Some((key, json)) => {
                    state.objects.insert(key, json);
                }
                None => {
                    state.objects.remove(&key_of(obj));
                }
            },
            watcher::Event::Delete(obj) => {
                state.objects.remove(&key_of(obj));
            }
            watcher::Event::Init => state.listing = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some((key, json)), Some(listing)) = (key_and_json(obj), state.listing.as_mut()) {
                    listing.insert(key, json);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.objects = listing;
                }
                state.complete = true;
            }
        }
    }

    /// The child `namespace/name`, if the watch has seen one.
    pub fn get(&self, namespace: &str, name: &str) -> Option<K> {
        let json = self.state().objects.get(&(namespace.to_string(), name.to_string()))?.clone();
        match serde_json::from_slice(&json) {
            Ok(obj) => Some(obj),
            Err(e) => {
                // Why only a log: the caller then asks the API server.
                tracing::warn!(error = %e, namespace, name, "a cached child could not be decoded");
                None
            }
        }
    }

    /// Whether the watch has listed every object once, so that a child missing here is not ours.
    pub fn is_complete(&self) -> bool {
        self.state().complete
    }

    /// Children held.
    pub fn len(&self) -> usize {
        self.state().objects.len()
    }

    /// Whether no child is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key_of<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The object's key and its JSON.
fn key_and_json<K: Resource + Serialize>(obj: &K) -> Option<(Key, Arc<[u8]>)> {
    match serde_json::to_vec(obj) {
        Ok(json) => Some((key_of(obj), json.into())),
        Err(e) => {
            // Why drop it: a child missing from the cache is read from the API server when it matters.
            tracing::warn!(error = %e, "a watched child could not be encoded");
            None
        }
    }
}

/// The watched children, by kind.
#[derive(Clone, Default)]
pub struct ChildCache {
    /// Deployments of ours.
    pub deployments: Shelf<Deployment>,
    /// Services of ours.
    pub services: Shelf<Service>,
    /// HorizontalPodAutoscalers of ours.
    pub hpas: Shelf<HorizontalPodAutoscaler>,
}

impl ChildCache {
    /// The cached child `namespace/name` of kind `K`, if the watch has seen one.
    pub fn get<K: Cached>(&self, namespace: &str, name: &str) -> Option<K> {
        K::shelf(self).get(namespace, name)
    }

    /// Whether the watch of kind `K` has listed every object once.
    pub fn is_complete<K: Cached>(&self) -> bool {
        K::shelf(self).is_complete()
    }
}

/// A kind of child that the cache holds.
pub trait Cached: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + 'static {
    /// This kind's shelf.
    fn shelf(cache: &ChildCache) -> &Shelf<Self>;
}

impl Cached for Deployment {
    fn shelf(cache: &ChildCache) -> &Shelf<Self> {
        &cache.deployments
    }
}

impl Cached for Service {
    fn shelf(cache: &ChildCache) -> &Shelf<Self> {
        &cache.services
    }
}

impl Cached for HorizontalPodAutoscaler {
    fn shelf(cache: &ChildCache) -> &Shelf<Self> {
        &cache.hpas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, port: i32) -> Result<Service, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "apps" },
            "spec": { "ports": [{ "port": port }] },
        }))
    }

    fn port(shelf: &Shelf<Service>, name: &str) -> Option<i32> {
        shelf.get("apps", name)?.spec?.ports?.first().map(|p| p.port)
    }

    #[test]
    fn a_list_replaces_the_objects_once_it_is_complete() -> Result<(), serde_json::Error> {
        let shelf = Shelf::<Service>::default();
        assert!(!shelf.is_complete());
        shelf.apply(&watcher::Event::Apply(service("gone", 80)?));
        shelf.apply(&watcher::Event::Init);
        shelf.apply(&watcher::Event::InitApply(service("a", 80)?));
        // Until the list is done, reads see the objects of before.
        assert_eq!((port(&shelf, "gone"), port(&shelf, "a")), (Some(80), None));
        shelf.apply(&watcher::Event::InitDone);
        assert!(shelf.is_complete());
        assert_eq!((port(&shelf, "gone"), port(&shelf, "a")), (None, Some(80)));
        shelf.apply(&watcher::Event::Apply(service("a", 81)?));
        assert_eq!(port(&shelf, "a"), Some(81));
        shelf.apply(&watcher::Event::Delete(service("a", 81)?));
        assert!(shelf.is_empty());
        Ok(())
    }
}
