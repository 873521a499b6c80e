//! What the metrics API needs from the cluster, at start and every few minutes after: its certificates from
//! the operator's Secret (made or renewed when needed), our CA in the APIService's `caBundle`, and the front
//! proxy's settings from the API server's ConfigMap. Nothing is written when nothing changed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use time::OffsetDateTime;

use super::api::API_SERVICE;
use super::authn::{RequestHeader, AUTHENTICATION_CONFIG_MAP};
use super::certs::{service_dns_names, CertError, Certs, Renewal};
use super::review::Reviewer;
use super::{serve, Access, TlsSettings};
use crate::demand::Demand;
use crate::secrets::{read_or_fill, Fill, SecretError};

/// How often the Secret, the APIService and the ConfigMap are read again.
const REFRESH_PERIOD: Duration = Duration::from_secs(300);

/// Where the metrics API runs and how it is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsApiSettings {
    /// Address the API listens on.
    pub addr: SocketAddr,
    /// The Service in front of it (in the operator's namespace): its DNS names are the certificate's, and its
    /// Secret is `SERVICE-tls`.
    pub service: String,
}

impl MetricsApiSettings {
    /// The Secret that holds the certificates.
    pub fn secret(&self) -> String {
        format!("{}-tls", self.service)
    }
}

/// Why the metrics API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("keeping the metrics API's certificates")]
    Secret(#[from] SecretError<CertError>),
    #[error("making the metrics API's certificates")]
    Certs(#[from] CertError),
    #[error("reading APIService {API_SERVICE}")]
    ReadApiService(#[source] kube::Error),
    #[error("setting the caBundle of APIService {API_SERVICE}")]
    PatchApiService(#[source] kube::Error),
    #[error("reading ConfigMap {}/{}", AUTHENTICATION_CONFIG_MAP.0, AUTHENTICATION_CONFIG_MAP.1)]
    ReadConfigMap(#[source] kube::Error),
    #[error(transparent)]
    RequestHeader(#[from] super::authn::RequestHeaderError),
    #[error("binding {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// The certificates in Secret `name`, made or renewed (and written back) when they are missing, near their
/// end or for other names. When another replica wrote first, its certificates are used.
pub async fn ensure_certs(secrets: &Api<Secret>, name: &str, dns_names: &[String]) -> Result<Certs, SetupError> {
    let now = OffsetDateTime::now_utc();
    let certs = read_or_fill(secrets, name, |data| {
        let certs = match Certs::from_data(data) {
            Some(certs) => match certs.renewal(dns_names, now) {
                Renewal::None => return Ok(Fill::Keep(certs)),
                Renewal::Serving => certs.renew_serving(dns_names, now)?,
                Renewal::All => Certs::generate(dns_names, now)?,
            },
            None => Certs::generate(dns_names, now)?,
        };
        let data = certs.to_data();
        Ok::<_, CertError>(Fill::Write(certs, data))
    })
    .await?;
    Ok(certs)
}

/// Put `ca_pem` into the APIService's `caBundle` (and turn off `insecureSkipTLSVerify`) unless it is there
/// already; `true` when it was patched.
pub async fn publish_ca(api_services: &Api<APIService>, ca_pem: &str) -> Result<bool, SetupError> {
    let current = api_services.get(API_SERVICE).await.map_err(SetupError::ReadApiService)?;
    let spec = current.spec.unwrap_or_default();
    if spec.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca_pem.as_bytes())
        && spec.insecure_skip_tls_verify != Some(true)
    {
        return Ok(false);
    }
    let patch = serde_json::json!({"spec": {"caBundle": ByteString(ca_pem.as_bytes().to_vec()), "insecureSkipTLSVerify": false}});
    api_services
        .patch(API_SERVICE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(SetupError::PatchApiService)?;
    tracing::info!(apiservice = API_SERVICE, "caBundle set to the metrics API's CA");
    Ok(true)
}

/// The front proxy's settings from the API server's ConfigMap; `None` when it has none.
pub async fn request_header(client: &Client) -> Result<Option<RequestHeader>, SetupError> {
    let (namespace, name) = AUTHENTICATION_CONFIG_MAP;
    let config_map =
        Api::<ConfigMap>::namespaced(client.clone(), namespace).get(name).await.map_err(SetupError::ReadConfigMap)?;
    Ok(RequestHeader::from_config_map(&config_map.data.unwrap_or_default())?)
}

/// What the TLS settings are built from.
#[derive(Clone, PartialEq, Eq)]
struct TlsInputs {
    certs: Certs,
    client_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl TlsInputs {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CertError> {
        self.certs.serving_cert()?.server_config(&self.client_ca)
    }
}

/// The cluster side of the metrics API.
struct Cluster {
    client: Client,
    secrets: Api<Secret>,
    api_services: Api<APIService>,
    secret: String,
    dns_names: Vec<String>,
}

impl Cluster {
    /// Certificates, caBundle and front-proxy settings as they should be now. A failure to read the ConfigMap
    /// or patch the APIService is logged, not fatal: tokens still work, and the next refresh tries again.
    async fn sync(&self, access: &Access) -> Result<TlsInputs, SetupError> {
        let certs = ensure_certs(&self.secrets, &self.secret, &self.dns_names).await?;
        if let Err(e) = publish_ca(&self.api_services, &certs.ca_cert).await {
            tracing::warn!(error = %crate::error::message_chain(&e), "the API server cannot verify the metrics API yet");
        }
        match request_header(&self.client).await {
            Ok(header) => access.set_request_header(header),
            Err(e) => tracing::warn!(
                error = %crate::error::message_chain(&e),
                "front-proxy settings unknown: only bearer tokens are accepted until they can be read"
            ),
        }
        let client_ca = access.request_header().map(|h| h.client_ca.clone()).unwrap_or_default();
        Ok(TlsInputs { certs, client_ca })
    }
}

/// Set up the metrics API and serve it until `shutdown` resolves; fails when the certificates cannot be had
/// or the address bound.
pub async fn start(
    client: Client,
    settings: &MetricsApiSettings,
    namespace: &str,
    cluster_domain: &str,
    demand: Arc<Demand>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SetupError> {
    let cluster = Cluster {
        secrets: Api::namespaced(client.clone(), namespace),
        api_services: Api::all(client.clone()),
        secret: settings.secret(),
        dns_names: service_dns_names(&settings.service, namespace, cluster_domain),
        client: client.clone(),
    };
    let access = Arc::new(Access::new(None, Reviewer::new(client)));
    let inputs = cluster.sync(&access).await?;
    let tls = Arc::new(TlsSettings::new(inputs.server_config()?));
    let listener =
        tokio::net::TcpListener::bind(settings.addr).await.map_err(|e| SetupError::Bind(settings.addr, e))?;
    tracing::info!(addr = %settings.addr, "serving external.metrics.k8s.io");
    let refresher = tokio::spawn(refresh(cluster, access.clone(), tls.clone(), inputs));
    tokio::spawn(async move {
        serve(listener, tls, access, demand, shutdown).await;
        // Nothing is served any more: the certificates need no refreshing.
        refresher.abort();
    });
    Ok(())
}

/// Every [`REFRESH_PERIOD`]: sync again and swap the TLS settings when their inputs changed.
async fn refresh(cluster: Cluster, access: Arc<Access>, tls: Arc<TlsSettings>, mut inputs: TlsInputs) {
    loop {
        tokio::time::sleep(REFRESH_PERIOD).await;
        let next = match cluster.sync(&access).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %crate::error::message_chain(&e), "metrics API: refresh failed; serving as before");
                continue;
            }
        };
        if next == inputs {
            continue;
        }
        match next.server_config() {
            Ok(config) => {
                tls.replace(config);
                inputs = next;
                tracing::info!("metrics API: new TLS settings for new connections");
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::message_chain(&e), "metrics API: new TLS settings rejected")
            }
        }
    }
}
