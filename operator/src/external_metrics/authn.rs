//! Who is asking, as an aggregated API server decides it: the API server's front proxy (a client certificate
//! from the request-header CA, the user in `X-Remote-*` headers), else a bearer token the API server vouches
//! for through a TokenReview ([`super::review`]).
//!
//! The request-header settings come from the ConfigMap `kube-system/extension-apiserver-authentication` that
//! the API server publishes (k8s.io/apiserver `pkg/authentication/request/headerrequest`).

use std::collections::BTreeMap;

use http::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Namespace and name of the ConfigMap the API server publishes its authentication settings in.
pub const AUTHENTICATION_CONFIG_MAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// The group every authenticated user is in (what the API server adds, and what `system:discovery` is bound to).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The user with `system:authenticated` among its groups, as the API server's own authenticator chain
    /// leaves it (its aggregator sends only the groups it was given, none for its own discovery calls).
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }
}

/// Why the ConfigMap's request-header settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RequestHeaderError {
    #[error("{key} of {}/{} is not a JSON list of strings", AUTHENTICATION_CONFIG_MAP.0, AUTHENTICATION_CONFIG_MAP.1)]
    List { key: &'static str },
    #[error("requestheader-client-ca-file of {}/{} holds no PEM certificate", AUTHENTICATION_CONFIG_MAP.0, AUTHENTICATION_CONFIG_MAP.1)]
    Ca,
}

/// How the API server's front proxy says who the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// CA certificates the front proxy's client certificate must chain to.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Common names the client certificate may have; empty: any.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

impl RequestHeader {
    /// From the ConfigMap's data; `None` when the API server has no front proxy configured.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Option<Self>, RequestHeaderError> {
        let Some(ca) = data.get("requestheader-client-ca-file").filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let client_ca: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(ca.as_bytes()).filter_map(Result::ok).collect();
        if client_ca.is_empty() {
            return Err(RequestHeaderError::Ca);
        }
        let list = |key: &'static str| -> Result<Vec<String>, RequestHeaderError> {
            match data.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text).map_err(|_| RequestHeaderError::List { key }),
            }
        };
        Ok(Some(Self {
            client_ca,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            uid_headers: list("requestheader-uid-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?,
        }))
    }

    /// The user a request names, when its connection presented a certificate of the front proxy's CA with
    /// common name `client_name` (rustls has checked the chain). `None`: not the front proxy, or no user header.
    pub fn user(&self, client_name: &str, headers: &HeaderMap) -> Option<User> {
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == client_name) {
            return None;
        }
        let first = |names: &[String]| {
            names.iter().find_map(|h| {
                headers.get_all(h.as_str()).iter().filter_map(|v| v.to_str().ok()).find(|v| !v.is_empty())
            })
        };
        let name = first(&self.username_headers)?.to_string();
        let uid = first(&self.uid_headers).unwrap_or_default().to_string();
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let Some(key) = self.extra_prefixes.iter().find_map(|p| strip_prefix_ignore_case(header.as_str(), p))
            else {
                continue;
            };
            if let Ok(value) = value.to_str() {
                extra.entry(unescape_extra_key(key)).or_default().push(value.to_string());
            }
        }
        Some(User { name, uid, groups, extra })
    }
}

/// `header` without `prefix`, compared without case (header names arrive lowercased).
fn strip_prefix_ignore_case<'a>(header: &'a str, prefix: &str) -> Option<&'a str> {
    let head = header.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &header[prefix.len()..]).filter(|rest| !rest.is_empty())
}

/// Extra keys travel percent-encoded in header names and lowercased (k8s.io/apiserver `unescapeExtraKey`).
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The common name of a certificate's subject (DER), the front proxy's identity.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut data: BTreeMap<String, String> = [
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).map(|c| c.cert.pem()).unwrap_or_default();
        data.insert("requestheader-client-ca-file".into(), ca);
        for (k, v) in extra {
            data.insert(k.to_string(), v.to_string());
        }
        data
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v))
            {
                map.append(name, value);
            }
        }
        map
    }

    #[test]
    fn the_front_proxy_names_the_user() -> Result<(), RequestHeaderError> {
        let config = RequestHeader::from_config_map(&config_map(&[]))?.ok_or(RequestHeaderError::Ca)?;
        let request = headers(&[
            ("x-remote-user", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
            ("x-remote-group", "system:serviceaccounts"),
            ("x-remote-group", "system:serviceaccounts:kube-system"),
            ("x-remote-extra-authentication.kubernetes.io%2fpod-name", "hpa-1"),
            ("x-remote-extra-Scopes", "a"),
            ("x-remote-extra-scopes", "b"),
        ]);
        let user = config.user("front-proxy-client", &request);
        let extra: BTreeMap<String, Vec<String>> = [
            ("authentication.kubernetes.io/pod-name".to_string(), vec!["hpa-1".to_string()]),
            ("scopes".to_string(), vec!["a".to_string(), "b".to_string()]),
        ]
        .into();
        assert_eq!(
            user,
            Some(User {
                name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(),
                uid: String::new(),
                groups: vec!["system:serviceaccounts".into(), "system:serviceaccounts:kube-system".into()],
                extra,
            })
        );
        Ok(())
    }

    #[test]
    fn another_certificate_name_or_no_user_header_is_not_the_front_proxy() -> Result<(), RequestHeaderError> {
        let config = RequestHeader::from_config_map(&config_map(&[]))?.ok_or(RequestHeaderError::Ca)?;
        assert_eq!(config.user("someone-else", &headers(&[("x-remote-user", "system:admin")])), None);
        assert_eq!(config.user("front-proxy-client", &headers(&[("x-remote-group", "system:masters")])), None);
        let any_name = RequestHeader::from_config_map(&config_map(&[("requestheader-allowed-names", "[]")]))?
            .ok_or(RequestHeaderError::Ca)?;
        assert!(any_name.user("someone-else", &headers(&[("x-remote-user", "u")])).is_some(), "no allowed names: any");
        Ok(())
    }

    #[test]
    fn config_map_problems_are_named() {
        let without_ca = config_map(&[("requestheader-client-ca-file", "")]);
        assert!(matches!(RequestHeader::from_config_map(&without_ca), Ok(None)));
        let bad_list = config_map(&[("requestheader-username-headers", "X-Remote-User")]);
        let err = RequestHeader::from_config_map(&bad_list).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("requestheader-username-headers"), "{err}");
        let bad_ca = config_map(&[("requestheader-client-ca-file", "not a certificate")]);
        assert!(matches!(RequestHeader::from_config_map(&bad_ca), Err(RequestHeaderError::Ca)));
    }

    #[test]
    fn bearer_tokens_and_groups() {
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer abc.def")])), Some("abc.def"));
        assert_eq!(bearer_token(&headers(&[("authorization", "bearer  x ")])), Some("x"));
        assert_eq!(bearer_token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer ")])), None);
        let user = User { name: "system:aggregator".into(), ..User::default() }.authenticated();
        assert_eq!(user.groups, vec![AUTHENTICATED_GROUP.to_string()]);
        assert_eq!(user.clone().authenticated(), user, "added once");
    }

    #[test]
    fn common_name_of_a_certificate() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "front-proxy-client");
        let cert = rcgen::KeyPair::generate().and_then(|key| params.self_signed(&key));
        assert_eq!(cert.ok().and_then(|c| common_name(c.der())).as_deref(), Some("front-proxy-client"));
    }
}
