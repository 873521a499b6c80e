//! The operator's one error type; every variant has a category used as metric label and Event reason.

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WasmApp lacks a field the API server always sets (name, namespace, uid).
    #[error("WasmApp has no {0}")]
    MissingObjectKey(&'static str),

    /// `spec.component` is not a parseable OCI reference.
    #[error("component {reference:?} is not a valid OCI reference")]
    InvalidComponent {
        /// The offending reference.
        reference: String,
        /// Parser error.
        #[source]
        source: oci_client::ParseError,
    },

    /// A child name is taken by an object this WasmApp does not own.
    #[error("{kind} {name} already exists and is not owned by this WasmApp")]
    NameConflict {
        /// Kind of the child.
        kind: &'static str,
        /// Name of the child.
        name: String,
    },

    /// Reading a child failed.
    #[error("reading {kind} failed")]
    Read {
        /// Kind of the child.
        kind: &'static str,
        /// API error.
        #[source]
        source: kube::Error,
    },

    /// Server-side apply of a child failed.
    #[error("applying {kind} failed")]
    Apply {
        /// Kind of the child.
        kind: &'static str,
        /// API error.
        #[source]
        source: kube::Error,
    },

    /// Deleting a child that is no longer wanted failed.
    #[error("deleting {kind} failed")]
    Delete {
        /// Kind of the child.
        kind: &'static str,
        /// API error.
        #[source]
        source: kube::Error,
    },

    /// Writing the status subresource failed.
    #[error("updating the WasmApp status failed")]
    Status(#[source] kube::Error),

    /// Building a request body failed.
    #[error("serializing {0} failed")]
    Serialize(&'static str, #[source] serde_json::Error),

    /// Resolving the component's tag to a digest failed.
    #[error("resolving component {reference} to a digest failed")]
    Resolve {
        /// The reference that was being resolved.
        reference: String,
        /// Registry error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Short PascalCase category: the `error` label of metrics and the reason of Events and conditions.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::InvalidComponent { .. } => "InvalidComponent",
            Error::NameConflict { .. } => "NameConflict",
            Error::Read { .. } => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Serialize(..) => "SerializeFailed",
            Error::Resolve { .. } => "DigestUnresolved",
        }
    }
}

/// Maximum length of an Event note / condition message built from an error.
const MAX_MESSAGE: usize = 1000;

/// The error and its source chain as one line (`a: b: c`), truncated so it fits an Event note. An API
/// server's refusal is said in its own words (message and reason, once), never as a Rust `Debug` dump.
pub fn message_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            push_cause(&mut out, &api_status_message(status));
            break;
        }
        push_cause(&mut out, &e.to_string());
        next = e.source();
    }
    truncate(out, MAX_MESSAGE)
}

/// Appends `cause` unless the text so far already ends with it (many errors, kube's among them, repeat their
/// source in their own text).
fn push_cause(out: &mut String, cause: &str) {
    let cause = cause.trim();
    if cause.is_empty() || out.ends_with(cause) {
        return;
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out.push_str(cause);
}

/// An API server Status in words: `MESSAGE (REASON, CODE)`; the reason alone when the message is empty
/// (a 403 may carry little more than `deployments.apps "x" is forbidden: `).
pub fn api_status_message(status: &kube::core::Status) -> String {
    let message = status.message.trim().trim_end_matches(':').trim_end();
    let reason = if status.reason.is_empty() { "no reason given" } else { status.reason.as_str() };
    match (message.is_empty(), status.code) {
        (true, 0) => reason.to_string(),
        (true, code) => format!("{reason} ({code})"),
        (false, 0) => format!("{message} ({reason})"),
        (false, code) => format!("{message} ({reason}, {code})"),
    }
}

/// Cut `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_walks_sources_and_truncates() {
        let err = Error::Resolve { reference: "r/x:1".into(), source: "connection refused".into() };
        assert_eq!(message_chain(&err), "resolving component r/x:1 to a digest failed: connection refused");
        assert_eq!(err.category(), "DigestUnresolved");
        let long = truncate("é".repeat(600), 1000);
        assert!(long.len() <= 1000 && long.ends_with("..."));
    }

    fn forbidden(message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code: 403,
            message: message.into(),
            reason: "Forbidden".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn an_api_error_is_its_message_and_reason_once() {
        let msg = r#"deployments.apps "hello" is forbidden: User "u" cannot create resource "deployments""#;
        let err = Error::Apply { kind: "Deployment", source: forbidden(msg) };
        assert_eq!(message_chain(&err), format!("applying Deployment failed: {msg} (Forbidden, 403)"));
    }

    #[test]
    fn an_empty_api_message_falls_back_to_the_reason() {
        let err = Error::Apply { kind: "Deployment", source: forbidden("") };
        assert_eq!(message_chain(&err), "applying Deployment failed: Forbidden (403)");
        let err = Error::Apply { kind: "Deployment", source: forbidden(r#"deployments.apps "x" is forbidden: "#) };
        assert_eq!(
            message_chain(&err),
            r#"applying Deployment failed: deployments.apps "x" is forbidden (Forbidden, 403)"#
        );
    }

    #[test]
    fn other_kube_errors_walk_their_sources_without_repeating_them() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::Read { kind: "Deployment", source: kube::Error::Service(Box::new(io)) };
        assert_eq!(message_chain(&err), "reading Deployment failed: ServiceError: connection refused");
    }
}
