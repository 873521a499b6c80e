//! The container environment the operator renders for the shim: typed on both sides.
//!
//! Every variable named `WASMKUBE_*` is the shim's: it reads them once when the container is created and
//! removes them from the guest's environment (the WasmApp CRD forbids the prefix in `spec.env`).

/// Prefix of every variable meant for the shim.
pub const SHIM_ENV_PREFIX: &str = "WASMKUBE_";
/// The WasmApp's name (the `wasmapp` label of the container's metric series).
pub const APP: &str = "WASMKUBE_APP";
/// The WasmApp's namespace.
pub const NAMESPACE: &str = "WASMKUBE_NAMESPACE";
/// The port a wasi:http component serves on.
pub const HTTP_PORT: &str = "WASMKUBE_HTTP_PORT";
/// Hosts a component may call over HTTP, comma-separated (`host`, `host:port`, `*.domain[:port]`, `*`).
pub const ALLOWED_OUTBOUND_HOSTS: &str = "WASMKUBE_ALLOWED_OUTBOUND_HOSTS";
/// `true`: the shim writes one access-log line per HTTP request to the container's stdout (off when absent).
pub const HTTP_ACCESS_LOG: &str = "WASMKUBE_HTTP_ACCESS_LOG";

/// Whether a variable is the shim's, not the guest's.
pub fn is_shim_var(name: &str) -> bool {
    name.starts_with(SHIM_ENV_PREFIX)
}

/// What the operator tells the shim about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The WasmApp's name, when the operator rendered the pod.
    pub app: Option<String>,
    /// The WasmApp's namespace, when the operator rendered the pod.
    pub namespace: Option<String>,
    /// The wasi:http port; `None`: the node's default.
    pub http_port: Option<u16>,
    /// The outbound allowlist entries, as written in the WasmApp (empty: no outbound HTTP).
    pub allowed_outbound_hosts: Vec<String>,
    /// One access-log line per HTTP request in the container log; off unless asked for, because every
    /// line costs the whole log path (the shim's pipe, containerd's copy, the node's disk).
    pub http_access_log: bool,
}

/// A shim variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The port is not a number from 1 to 65535.
    #[error("{HTTP_PORT}={0:?} is not a TCP port (1 to 65535)")]
    InvalidPort(String),
    /// A switch that is neither `true` nor `false`.
    #[error("{name}={value:?} is neither true nor false")]
    InvalidSwitch {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

impl ContainerEnv {
    /// The variables the operator renders, in a stable order; absent values render no variable.
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::with_capacity(5);
        if let Some(app) = &self.app {
            vars.push((APP, app.clone()));
        }
        if let Some(namespace) = &self.namespace {
            vars.push((NAMESPACE, namespace.clone()));
        }
        if let Some(port) = self.http_port {
            vars.push((HTTP_PORT, port.to_string()));
        }
        if !self.allowed_outbound_hosts.is_empty() {
            vars.push((ALLOWED_OUTBOUND_HOSTS, self.allowed_outbound_hosts.join(",")));
        }
        if self.http_access_log {
            vars.push((HTTP_ACCESS_LOG, "true".to_string()));
        }
        vars
    }

    /// Reads the shim's variables from `(name, value)` pairs; other names are ignored, and the first of a
    /// repeated name counts (as `getenv` finds it).
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, EnvError> {
        let mut env = ContainerEnv::default();
        let mut seen = [false; 5];
        for (name, value) in vars {
            let slot = match name {
                APP => 0,
                NAMESPACE => 1,
                HTTP_PORT => 2,
                ALLOWED_OUTBOUND_HOSTS => 3,
                HTTP_ACCESS_LOG => 4,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            match slot {
                0 => env.app = Some(value.to_string()),
                1 => env.namespace = Some(value.to_string()),
                2 => env.http_port = Some(parse_port(value)?),
                4 => env.http_access_log = parse_switch(HTTP_ACCESS_LOG, value)?,
                _ => {
                    env.allowed_outbound_hosts =
                        value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect()
                }
            }
        }
        Ok(env)
    }

    /// Splits an OCI `process.env` (`NAME=value` entries) into the shim's settings and the guest's
    /// variables; entries without `=` are invalid in a spec and dropped, as a process would not see them.
    pub fn split_oci_env(entries: &[String]) -> Result<(Self, Vec<(String, String)>), EnvError> {
        let pairs = entries.iter().filter_map(|e| e.split_once('='));
        let env = Self::from_vars(pairs.clone())?;
        let guest = pairs.filter(|(k, _)| !is_shim_var(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok((env, guest))
    }
}

fn parse_port(value: &str) -> Result<u16, EnvError> {
    value.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| EnvError::InvalidPort(value.to_string()))
}

/// `true`/`false` in any case (what the operator renders is `true`); an empty value is `false`, as an unset
/// variable. Anything else is refused, so a typo does not silently leave the switch off.
fn parse_switch(name: &'static str, value: &str) -> Result<bool, EnvError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(EnvError::InvalidSwitch { name, value: value.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(vars: &[(&str, String)]) -> Vec<String> {
        vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn what_the_operator_renders_the_shim_reads_back() {
        let full = ContainerEnv {
            app: Some("hello".into()),
            namespace: Some("apps".into()),
            http_port: Some(9000),
            allowed_outbound_hosts: vec!["api.example.com:443".into(), "*.example.org".into()],
            http_access_log: true,
        };
        for env in [full, ContainerEnv::default(), ContainerEnv { app: Some("a".into()), ..Default::default() }] {
            let mut entries = oci(&env.to_vars());
            entries.insert(0, "PATH=/bin".into());
            let (read, guest) = ContainerEnv::split_oci_env(&entries).unwrap();
            assert_eq!(read, env);
            assert_eq!(guest, [("PATH".to_string(), "/bin".to_string())], "the guest sees only its own vars");
        }
    }

    #[test]
    fn every_rendered_name_is_a_shim_var() {
        let env = ContainerEnv {
            app: Some("a".into()),
            namespace: Some("n".into()),
            http_port: Some(1),
            allowed_outbound_hosts: vec!["*".into()],
            http_access_log: true,
        };
        let names: Vec<_> = env.to_vars().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, [APP, NAMESPACE, HTTP_PORT, ALLOWED_OUTBOUND_HOSTS, HTTP_ACCESS_LOG]);
        assert!(names.iter().all(|n| is_shim_var(n)));
    }

    #[test]
    fn bad_ports_are_named() {
        for bad in ["0", "65536", "http", ""] {
            let err = ContainerEnv::from_vars([(HTTP_PORT, bad)]).unwrap_err();
            assert_eq!(err, EnvError::InvalidPort(bad.to_string()));
            assert!(err.to_string().starts_with("WASMKUBE_HTTP_PORT="), "{err}");
        }
        assert_eq!(ContainerEnv::from_vars([(HTTP_PORT, " 80 ")]).unwrap().http_port, Some(80));
    }

    #[test]
    fn the_access_log_is_off_unless_switched_on() {
        assert!(!ContainerEnv::from_vars([]).unwrap().http_access_log, "off by default");
        assert!(ContainerEnv::default().to_vars().is_empty(), "off renders no variable");
        for (value, on) in [("true", true), ("TRUE", true), (" true ", true), ("false", false), ("", false)] {
            assert_eq!(ContainerEnv::from_vars([(HTTP_ACCESS_LOG, value)]).unwrap().http_access_log, on, "{value:?}");
        }
        for bad in ["yes", "1", "on"] {
            let err = ContainerEnv::from_vars([(HTTP_ACCESS_LOG, bad)]).unwrap_err();
            assert!(err.to_string().starts_with("WASMKUBE_HTTP_ACCESS_LOG="), "{err}");
        }
    }

    #[test]
    fn the_first_of_a_repeated_name_counts_and_empty_entries_are_dropped() {
        let env = ContainerEnv::from_vars([(APP, "one"), (APP, "two"), (ALLOWED_OUTBOUND_HOSTS, " a , ,b")]).unwrap();
        assert_eq!(env.app.as_deref(), Some("one"));
        assert_eq!(env.allowed_outbound_hosts, ["a", "b"]);
    }
}
