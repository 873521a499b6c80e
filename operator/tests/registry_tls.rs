//! The digest resolver's registry client on a host without a CA store (the operator's image has none): it
//! must build from the bundled roots, never panic, and take a private CA from a PEM file.
//! Its own test binary, because it points the process's `SSL_CERT_FILE`/`SSL_CERT_DIR` at an empty directory.

use std::path::PathBuf;
use std::time::Duration;

use wasmkube_operator::resolve::{registry_roots, OciResolver, ResolverSetupError};

/// An empty directory, unique to this test process.
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmkube-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_resolver_builds_without_a_system_ca_store_and_trusts_a_given_bundle() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // rustls-native-certs reads only these when they are set: this process now has no CA store at all.
    let none = empty_dir("no-ca-store");
    std::env::set_var("SSL_CERT_FILE", none.join("missing.pem"));
    std::env::set_var("SSL_CERT_DIR", &none);
    let host_store = oci_client::Client::try_from(oci_client::client::ClientConfig::default());
    assert!(host_store.is_err(), "the host store should be empty here, so a client relying on it must fail");

    OciResolver::new(vec!["registry.local:5000".into()], None, Duration::from_secs(1)).unwrap();
    let bundled = registry_roots(None).unwrap().len();
    assert!(bundled > 100, "the bundled Mozilla roots: {bundled}");

    let ca = rcgen::generate_simple_self_signed(vec!["registry.local".into()]).unwrap();
    let pem = none.join("private-ca.pem");
    std::fs::write(&pem, ca.cert.pem()).unwrap();
    OciResolver::new(Vec::new(), Some(&pem), Duration::from_secs(1)).unwrap();
    assert_eq!(registry_roots(Some(&pem)).unwrap().len(), bundled + 1);

    let empty = none.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = OciResolver::new(Vec::new(), Some(&empty), Duration::from_secs(1)).err().unwrap();
    assert!(matches!(err, ResolverSetupError::EmptyCaBundle(_)), "{err}");
    let err = OciResolver::new(Vec::new(), Some(&none.join("absent.pem")), Duration::from_secs(1)).err().unwrap();
    assert!(err.to_string().contains("absent.pem"), "{err}");
    std::fs::remove_dir_all(none).unwrap();
}
