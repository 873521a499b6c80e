//! Renders the request series in Prometheus' text exposition format 0.0.4.
//!
//! Hand-written rather than `prometheus-client`: that crate encodes OpenMetrics (a counter's `# TYPE`
//! line drops the `_total` suffix, `# EOF` ends the text), while the operator and any Prometheus expect
//! the 0.0.4 names below; and two metrics with per-container removal are a few lines here.

use std::fmt::Write as _;

use wasmkube_contract::metrics::{
    LABEL_CONTAINER, LABEL_NAMESPACE, LABEL_POD, LABEL_WASMAPP, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL,
};

use super::labels::ContainerLabels;
use super::registry::Sample;

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its name, type, help and where its value comes from.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Sample) -> u64,
}

const FAMILIES: [Family; 2] = [
    Family {
        name: REQUESTS_TOTAL,
        kind: "counter",
        help: "Requests answered by a wasi:http container, kubelet probes excluded.",
        value: |s| s.requests_total,
    },
    Family {
        name: REQUESTS_IN_FLIGHT,
        kind: "gauge",
        help: "Requests a wasi:http container is handling now, kubelet probes excluded.",
        value: |s| s.in_flight,
    },
];

/// The exposition text of `samples`.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for Family { name, kind, help, value } in FAMILIES {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for sample in samples {
            let _ = writeln!(out, "{name}{} {}", label_set(&sample.labels), value(sample));
        }
    }
    out
}

fn label_set(l: &ContainerLabels) -> String {
    let pairs = [
        (LABEL_NAMESPACE, &l.namespace),
        (LABEL_WASMAPP, &l.wasmapp),
        (LABEL_POD, &l.pod),
        (LABEL_CONTAINER, &l.container),
    ];
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Escapes a label value: backslash, double quote and line feed, as the format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(namespace: &str, wasmapp: &str, pod: &str, container: &str, total: u64, in_flight: u64) -> Sample {
        Sample {
            labels: ContainerLabels {
                namespace: namespace.into(),
                wasmapp: wasmapp.into(),
                pod: pod.into(),
                container: container.into(),
            },
            requests_total: total,
            in_flight,
        }
    }

    #[test]
    fn renders_both_families_for_every_container() {
        let text = render(&[sample("apps", "hello", "hello-7d9f-abcde", "app", 12, 0)]);
        let want = "\
# HELP wasmkube_http_requests_total Requests answered by a wasi:http container, kubelet probes excluded.
# TYPE wasmkube_http_requests_total counter
wasmkube_http_requests_total{namespace=\"apps\",wasmapp=\"hello\",pod=\"hello-7d9f-abcde\",container=\"app\"} 12
# HELP wasmkube_http_requests_in_flight Requests a wasi:http container is handling now, kubelet probes excluded.
# TYPE wasmkube_http_requests_in_flight gauge
wasmkube_http_requests_in_flight{namespace=\"apps\",wasmapp=\"hello\",pod=\"hello-7d9f-abcde\",container=\"app\"} 0
";
        assert_eq!(text, want);
    }

    #[test]
    fn no_containers_render_only_the_headers() {
        let text = render(&[]);
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 0, "{text}");
        assert!(text.contains("# TYPE wasmkube_http_requests_in_flight gauge"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&[sample("", "", "", "a\\b\"c\nd", 1, 1)]);
        assert!(text.contains(r#"container="a\\b\"c\nd"} 1"#), "{text}");
        assert_eq!(text.lines().count(), 6, "a line feed in a value does not break the line: {text}");
    }
}
