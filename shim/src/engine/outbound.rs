//! Outbound HTTP policy: a guest may call only the hosts its WasmApp allows
//! (`WASMKUBE_ALLOWED_OUTBOUND_HOSTS`, comma-separated `host`, `host:port`, `*.domain[:port]` or `*`).
//! Without the variable a guest has no outbound HTTP at all.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use http_body_util::BodyExt;
use wasmkube_contract::env::ALLOWED_OUTBOUND_HOSTS;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::netns::{BindError, NamespaceRuntime};
use crate::spec::NameFiles;

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`: every host and port.
    Any,
    /// `host` or `host:port` (no port: every port).
    Host { host: String, port: Option<u16> },
    /// `*.domain` or `*.domain:port`: every subdomain of `domain` (not `domain` itself).
    Subdomains { suffix: String, port: Option<u16> },
}

/// Why a container's outbound policy cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OutboundSetupError {
    /// An allowlist entry is malformed.
    #[error(transparent)]
    InvalidRule(#[from] InvalidRule),
    /// The thread that sends from the pod's network namespace could not start.
    #[error("outbound HTTP cannot be set up: {0}")]
    Namespace(#[from] BindError),
}

/// An entry of the allowlist that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid {ALLOWED_OUTBOUND_HOSTS} entry {entry:?}: {why}")]
pub struct InvalidRule {
    entry: String,
    why: &'static str,
}

/// The hosts one container may call; cloned into every store of the container, so it is one `Arc`: each
/// request's clone and drop touch one shared counter, not one per field.
#[derive(Clone, Default)]
pub struct OutboundPolicy {
    inner: Arc<Policy>,
}

#[derive(Default)]
struct Policy {
    rules: Vec<Rule>,
    /// Hosts already reported as denied, so a guest retrying in a loop cannot flood the daemon log.
    denied_logged: Mutex<HashSet<String>>,
    container: String,
    /// The pod's network namespace, where allowed requests are sent from (absent: the daemon's own).
    netns: Option<NamespaceRuntime>,
}

impl OutboundPolicy {
    /// The policy of `container` from its allowlist entries (none: no outbound HTTP). Allowed requests are sent
    /// from the network namespace at `netns`, resolving their hosts with the pod's `name_files` (a thread there
    /// is started only when something is allowed at all).
    pub fn new(
        container: &str,
        entries: &[String],
        netns: Option<&std::path::Path>,
        name_files: &NameFiles,
    ) -> Result<Self, OutboundSetupError> {
        let rules = entries.iter().map(|e| parse_rule(e)).collect::<Result<Vec<_>, _>>()?;
        let netns = match netns {
            Some(path) if !rules.is_empty() => Some(NamespaceRuntime::start(path, name_files)?),
            _ => None,
        };
        let policy = Policy { rules, container: container.into(), netns, ..Policy::default() };
        Ok(Self { inner: Arc::new(policy) })
    }

    /// Whether a request to `host:port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.inner.rules.iter().any(|rule| match rule {
            Rule::Any => true,
            Rule::Host { host: h, port: p } => *h == host && p.is_none_or(|p| p == port),
            Rule::Subdomains { suffix, port: p } => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && p.is_none_or(|p| p == port)
            }
        })
    }

    fn log_denied_once(&self, host: &str, port: u16) {
        let first = self.inner.denied_logged.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("{host}:{port}"));
        if first {
            tracing::warn!(
                container = %self.inner.container,
                host, port,
                "outbound HTTP request denied: the host is not in the WasmApp's allowedOutboundHosts"
            );
        }
    }
}

fn parse_rule(entry: &str) -> Result<Rule, InvalidRule> {
    let invalid = |why| InvalidRule { entry: entry.to_string(), why };
    if entry == "*" {
        return Ok(Rule::Any);
    }
    if entry.contains("://") || entry.contains('/') {
        return Err(invalid("no scheme or path, only host[:port]"));
    }
    let port_of = |p: &str| p.parse::<u16>().map(Some).map_err(|_| invalid("the port is not a number from 0 to 65535"));
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let (v6, rest) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed `[`"))?;
        let port = match rest.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if rest.is_empty() => None,
            None => return Err(invalid("only `:port` may follow `]`")),
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err(invalid("not an IPv6 address"));
        }
        (v6.to_ascii_lowercase(), port)
    } else {
        let (host, port) = match entry.split_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (entry, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*';
        if host.is_empty() || !host.chars().all(valid) {
            return Err(invalid("not a host name or address (IPv6 addresses go in brackets)"));
        }
        (host.to_ascii_lowercase(), port)
    };
    match host.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
            Ok(Rule::Subdomains { suffix: suffix.to_string(), port })
        }
        _ if host.is_empty() || host.contains('*') => Err(invalid("a wildcard is only allowed as `*` or `*.domain`")),
        _ => Ok(Rule::Host { host, port }),
    }
}

type SendFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, SendFuture), HttpError>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: SendFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let (host, port) = match uri.authority() {
            Some(a) => (a.host().to_string(), a.port_u16().unwrap_or(if https { 443 } else { 80 })),
            None => return Box::new(async { Err(HttpError::HttpRequestUriInvalid) }),
        };
        if !self.allows(&host, port) {
            self.log_denied_once(&host, port);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let Some(netns) = &self.inner.netns else {
            return wasmtime_wasi_http::default_hooks().send_request(request, options, fut);
        };
        // Connect (and resolve) inside the pod's namespace; the connection is driven there too.
        let (sender, response) = tokio::sync::oneshot::channel();
        let job = async move {
            match wasmtime_wasi_http::default_send_request(request, options).await {
                Ok((head, io)) => {
                    let _ = sender.send(Ok(head.map(BodyExt::boxed_unsync)));
                    if let Err(e) = io.await {
                        tracing::debug!(error = ?e, "outbound HTTP connection ended with an error");
                    }
                }
                Err(e) => {
                    let _ = sender.send(Err(e));
                }
            }
        };
        let gone = || HttpError::InternalError(Some("the pod's network namespace is gone".into()));
        if !netns.spawn(job.boxed()) {
            return Box::new(async move { Err(gone()) });
        }
        Box::new(async move {
            let head = response.await.map_err(|_| gone())??;
            Ok((head, Box::new(async { Ok(()) }) as SendFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy of an env value, split as `ContainerEnv` splits it.
    fn parsed(value: &str) -> Result<OutboundPolicy, OutboundSetupError> {
        let env = wasmkube_contract::env::ContainerEnv::from_vars([(ALLOWED_OUTBOUND_HOSTS, value)]).unwrap();
        OutboundPolicy::new("c", &env.allowed_outbound_hosts, None, &NameFiles::default())
    }

    fn policy(value: &str) -> OutboundPolicy {
        parsed(value).unwrap()
    }

    #[test]
    fn nothing_is_allowed_without_the_variable() {
        let none = OutboundPolicy::new("c", &[], None, &NameFiles::default()).unwrap();
        assert!(!none.allows("example.com", 80));
    }

    #[test]
    fn hosts_ports_and_wildcards() {
        let p = policy("api.example.com, 10.0.0.1:8080,*.svc.cluster.local:80");
        assert!(p.allows("api.example.com", 443));
        assert!(p.allows("API.example.com", 80), "host names are case-insensitive");
        assert!(!p.allows("example.com", 80));
        assert!(p.allows("10.0.0.1", 8080));
        assert!(!p.allows("10.0.0.1", 8081), "the port is part of the rule");
        assert!(p.allows("web.default.svc.cluster.local", 80));
        assert!(!p.allows("svc.cluster.local", 80), "*.domain does not include the domain itself");
        assert!(!p.allows("evilsvc.cluster.local", 80));
        assert!(policy("*").allows("anything", 1));
        assert!(policy("[::1]:8080").allows("[::1]", 8080));
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in ["http://a.b", "a.b/path", "a*.b", "host:http", "*.", ":80", "::1", "[::1", "a b"] {
            let err = parsed(bad).err().unwrap();
            assert!(err.to_string().starts_with("invalid WASMKUBE_ALLOWED_OUTBOUND_HOSTS entry"), "{err}");
        }
    }
}
