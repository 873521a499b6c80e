//! The routing state the Kubernetes feed writes and requests read: routes, backends, change signal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::routes::{AppKey, Backends};

/// Routes (activator port → app, ClusterIP:port → app) and ready backends per app; waiters learn of every
/// backend change, the port listeners of every port change.
pub struct RoutingState {
    routes: Mutex<Routes>,
    ports: watch::Sender<AppPorts>,
    retired: Mutex<BTreeMap<u16, (AppKey, Instant)>>,
    backends: Mutex<Backends>,
    next: AtomicUsize,
    changed: watch::Sender<u64>,
}

/// Each app's activator port (from its activator slice): the listener on that port serves that app only.
pub type AppPorts = BTreeMap<u16, AppKey>;

/// How long a port keeps serving its app after its slice is gone. Why: kube-proxy and ingress controllers learn
/// of the deleted slice after we do (seen on a real cluster: a connection refused 3 ms after the switch), and
/// until they do, connections for the app still arrive on the port.
pub const PORT_LINGER: Duration = Duration::from_secs(30);

impl Default for RoutingState {
    fn default() -> Self {
        Self {
            routes: Mutex::default(),
            ports: watch::Sender::new(AppPorts::new()),
            retired: Mutex::default(),
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

    /// Whether `app` is one the activator serves: it has a Service, an activator port, or known backends.
    pub fn is_known(&self, app: &AppKey) -> bool {
        lock(&self.routes).apps.contains(app)
            || self.ports.borrow().values().any(|a| a == app)
            || lock(&self.backends).contains_key(app)
    }

    /// Replace the activator port → app table; the port listeners follow it. A port that leaves the table
    /// keeps its app for [`PORT_LINGER`].
    pub fn set_ports(&self, ports: AppPorts) {
        let now = Instant::now();
        self.ports.send_if_modified(|current| {
            let mut retired = lock(&self.retired);
            for (port, app) in current.iter() {
                if ports.get(port) != Some(app) && !ports.contains_key(port) {
                    retired.insert(*port, (app.clone(), now));
                }
            }
            retired.retain(|port, (_, since)| !ports.contains_key(port) && now.duration_since(*since) < PORT_LINGER);
            let changed = *current != ports;
            *current = ports;
            changed
        });
    }

    /// The app whose activator port is `port`, or was until less than [`PORT_LINGER`] ago.
    pub fn app_for_port(&self, port: u16) -> Option<AppKey> {
        if let Some(app) = self.ports.borrow().get(&port) {
            return Some(app.clone());
        }
        let retired = lock(&self.retired);
        retired.get(&port).filter(|(_, since)| since.elapsed() < PORT_LINGER).map(|(app, _)| app.clone())
    }

    /// Ports that left the table but still serve their app, with the moment each stops.
    pub fn lingering_ports(&self) -> Vec<(u16, Instant)> {
        lock(&self.retired).iter().map(|(port, (_, since))| (*port, *since + PORT_LINGER)).collect()
    }

    /// A receiver of the activator port table, marked changed on every change.
    pub fn subscribe_ports(&self) -> watch::Receiver<AppPorts> {
        self.ports.subscribe()
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
