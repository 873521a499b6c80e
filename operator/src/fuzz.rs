//! What the operator's parsers of outside input promise, as checks for the fuzz targets `metrics_text` and
//! `wasmapp_render` (`fuzz/`); the tests replay them on `fuzz/corpus/` and `fuzz/regressions/` (see
//! `wasmkube_contract::fuzz`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use wasmkube_contract::component::strip_oci_scheme;
use wasmkube_contract::env::ContainerEnv;

use crate::component::unresolved_component;
use crate::crd::WasmApp;
use crate::demand::parse::{parse, Sample};
use crate::demand::Demand;
use crate::external_metrics::api::quantity;
use crate::render::{
    container_env, desired_replicas, render_activator_slice, render_deployment, render_hpa, render_service,
    service_url, ActivatorEndpoints, RenderConfig,
};

/// A node's or an activator's metrics text: the samples read print back as text that reads the same, and the
/// demand computed from them is a quantity the HPA can read.
pub fn metrics_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let samples = parse(text);
    let printed: String = samples.iter().map(exposition_line).collect();
    let again = parse(&printed);
    assert_eq!(again.len(), samples.len(), "{text:?} printed as {printed:?}");
    for (a, b) in again.iter().zip(&samples) {
        let same_value = a.value.to_bits() == b.value.to_bits() || (a.value.is_nan() && b.value.is_nan());
        assert!(a.name == b.name && a.labels == b.labels && same_value, "{b:?} read back as {a:?}");
    }
    let demand = Demand::default();
    let start = Instant::now();
    for seconds in [0, 5, 10] {
        demand.record("http://10.0.0.1:9464/metrics", &samples, start + Duration::from_secs(seconds));
    }
    for app in demand.apps(start + Duration::from_secs(10)).values() {
        for value in [app.requests_per_second, app.in_flight] {
            let q = quantity(value);
            assert!(q == "0" || q.strip_suffix('m').is_some_and(|n| n.parse::<u64>().is_ok()), "{value} as {q}");
        }
    }
}

/// One sample in the exposition format.
fn exposition_line(sample: &Sample) -> String {
    let mut line = sample.name.clone();
    if !sample.labels.is_empty() {
        let labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect();
        let _ = write!(line, "{{{}}}", labels.join(","));
    }
    let _ = writeln!(line, " {}", sample.value);
    line
}

/// A WasmApp as JSON (whatever the CRD schema would let through): rendering never panics, every object
/// serialises, and the shim reads the component and the environment the operator renders.
pub fn wasmapp_render(data: &[u8]) {
    let Ok(app) = serde_json::from_slice::<WasmApp>(data) else { return };
    let activator = ActivatorEndpoints {
        address_type: "IPv4".to_string(),
        addresses: vec!["10.0.0.9".to_string()],
        port: Some(8080),
    };
    for scale_to_zero in [true, false] {
        let cfg = RenderConfig { scale_to_zero, ..RenderConfig::default() };
        let _ = (desired_replicas(&app, &cfg), service_url(&app, &cfg));
        if let Ok(component) = unresolved_component(&app.spec.component) {
            if let Ok(deployment) = render_deployment(&app, &component, &cfg) {
                serde_json::to_vec(&deployment).expect("a Deployment serialises");
            }
            check_component(&component.uri());
        }
        if let Ok(Some(service)) = render_service(&app) {
            serde_json::to_vec(&service).expect("a Service serialises");
        }
        if let Ok(Some(hpa)) = render_hpa(&app, &cfg) {
            serde_json::to_vec(&hpa).expect("an HPA serialises");
        }
        for ready in [0, 1] {
            if let Ok(Some(slice)) = render_activator_slice(&app, &activator, ready, &cfg, 20000) {
                serde_json::to_vec(&slice).expect("an EndpointSlice serialises");
            }
        }
    }
    check_env(&container_env(&app));
}

/// The shim parses the component URI the operator renders into the same reference.
fn check_component(uri: &str) {
    let reference = strip_oci_scheme(uri).unwrap_or_else(|| panic!("{uri} has no oci:// scheme"));
    let ours: oci_client::Reference = reference.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
    let shims = wasmkube_oci::parse_oci_ref(uri).unwrap_or_else(|e| panic!("the shim cannot run {uri}: {e}"));
    assert_eq!(shims, ours, "the shim reads {uri} differently");
}

/// The shim reads back the environment the operator renders (contract/src/env.rs). Outbound hosts only as the
/// CRD admits them: the variable separates them with commas, so an entry with a comma (or blank) reads as others.
fn check_env(env: &ContainerEnv) {
    let entries: Vec<String> = env.to_vars().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let (read, _) = ContainerEnv::split_oci_env(&entries).unwrap_or_else(|e| panic!("{entries:?}: {e}"));
    let admitted = |host: &String| !host.is_empty() && !host.contains(',') && host.trim() == host;
    if env.allowed_outbound_hosts.iter().all(admitted) {
        assert_eq!(&read, env, "rendered as {entries:?}");
    } else {
        let ContainerEnv { app, namespace, http_port, .. } = &read;
        assert_eq!((app, namespace, http_port), (&env.app, &env.namespace, &env.http_port), "rendered as {entries:?}");
    }
}

#[cfg(test)]
mod tests {
    use wasmkube_contract::fuzz::replay;

    #[test]
    fn metrics_text_inputs_keep_their_promises() {
        replay("metrics_text", super::metrics_text);
    }

    #[test]
    fn wasmapp_render_inputs_keep_their_promises() {
        replay("wasmapp_render", super::wasmapp_render);
    }
}
