//! The one name of a WasmApp shared by the activator and the request metrics.

use std::fmt;

/// A WasmApp, by namespace and name: the key of routes, held requests and request metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    /// Namespace of the WasmApp.
    pub namespace: String,
    /// Name of the WasmApp.
    pub name: String,
}

impl AppKey {
    /// The app `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
