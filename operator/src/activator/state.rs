//! The routing state the Kubernetes feed writes and requests read: routes, backends, change signal.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::routes::{AppKey, Backends};

/// Routes (ClusterIP:port → app) and ready backends per app; waiters learn of every backend change.
pub struct RoutingState {
    routes: Mutex<Routes>,
    backends: Mutex<Backends>,
    next: AtomicUsize,
    changed: watch::Sender<u64>,
}

impl Default for RoutingState {
    fn default() -> Self {
        Self {
            routes: Mutex::default(),
            backends: Mutex::default(),
            next: AtomicUsize::new(0),
            changed: watch::Sender::new(0),
        }
    }
}

/// ClusterIP:port → app, and the set of apps that have a Service.
#[derive(Default)]
struct Routes {
    by_addr: HashMap<SocketAddr, AppKey>,
    apps: HashSet<AppKey>,
}

// Why: the locks guard plain maps that are replaced whole, so a panic elsewhere cannot leave them half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RoutingState {
    /// Replace the ClusterIP:port → app table; its apps are the ones the activator serves.
    pub fn set_routes(&self, routes: HashMap<SocketAddr, AppKey>) {
        let apps = routes.values().cloned().collect();
        *lock(&self.routes) = Routes { by_addr: routes, apps };
    }

    /// The app behind a pre-DNAT destination, if it is one of our Services.
    pub fn route(&self, dst: SocketAddr) -> Option<AppKey> {
        lock(&self.routes).by_addr.get(&dst).cloned()
    }

    /// Whether `app` is one the activator serves: it has a Service, or known backends.
    pub fn is_known(&self, app: &AppKey) -> bool {
        lock(&self.routes).apps.contains(app) || lock(&self.backends).contains_key(app)
    }

    /// Set the ready backends of one app (none removes it) and wake the waiting requests.
    pub fn set_backends(&self, app: &AppKey, addrs: Vec<SocketAddr>) {
        {
            let mut backends = lock(&self.backends);
            if addrs.is_empty() {
                backends.remove(app);
            } else {
                backends.insert(app.clone(), addrs);
            }
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Replace the ready backends of every app and wake the waiting requests.
    pub fn replace_backends(&self, all: Backends) {
        *lock(&self.backends) = all;
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The app's backends in the order to try them: round robin over requests, then the others as fallbacks.
    pub fn backends_in_order(&self, app: &AppKey) -> Vec<SocketAddr> {
        let backends = lock(&self.backends);
        let Some(addrs) = backends.get(app).filter(|a| !a.is_empty()) else {
            return Vec::new();
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        addrs[start..].iter().chain(&addrs[..start]).copied().collect()
    }

    /// A receiver that sees every backend change made after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
