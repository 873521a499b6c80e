//! What containerd's debug log says about a pod start: how long CRI's CNI setup took inside each
//! RunPodSandbox. CNI is the cluster's network plugin, the same for every runtime handler, and most of a
//! wasm pod's sandbox time (docs/shim.md, "Where a pod start goes"); `pod-start` reports it apart.

use std::collections::HashMap;

/// For each pod sandbox by name, the milliseconds from CRI's "begin cni setup" to its "cni result".
/// Needs containerd at log level `debug`; sandboxes must have been run one at a time.
pub fn cni_setup_ms(log: &str) -> HashMap<String, f64> {
    let mut setups = HashMap::new();
    let mut pod: Option<&str> = None;
    let mut began: Option<f64> = None;
    for line in log.lines() {
        if line.contains("msg=\"RunPodSandbox for ") && !line.contains(" returns sandbox id") {
            pod = pod_name(line);
            began = None;
        } else if line.contains("msg=\"begin cni setup\"") {
            began = seconds_of_day(line);
        } else if line.contains("msg=\"cni result: ") {
            if let (Some(name), Some(t0), Some(t1)) = (pod.take(), began.take(), seconds_of_day(line)) {
                // A setup across midnight wraps the seconds of the day.
                let secs = if t1 >= t0 { t1 - t0 } else { t1 + 86_400.0 - t0 };
                setups.insert(name.to_string(), secs * 1000.0);
            }
        }
    }
    setups
}

/// `NAME` of `…PodSandboxMetadata{Name:NAME,…`.
fn pod_name(line: &str) -> Option<&str> {
    let rest = line.split_once("PodSandboxMetadata{Name:")?.1;
    Some(&rest[..rest.find(',')?])
}

/// The seconds since midnight (UTC) of a line's `time="2026-12-03T04:14:04.610706040Z"`.
fn seconds_of_day(line: &str) -> Option<f64> {
    let stamp = line.strip_prefix("time=\"")?.split('"').next()?;
    let clock = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = clock.splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sandbox_gets_the_time_between_its_cni_setup_lines() {
        let log = r#"time="2026-12-03T04:14:04.607243976Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:start-wasmkube-9,Uid:uid-start-wasmkube-9,Namespace:default,Attempt:0,}"
time="2026-12-03T04:14:04.610706040Z" level=debug msg="begin cni setup" podsandboxid=b24f
time="2026-12-03T04:14:04.623509331Z" level=debug msg="cni result: {\"Interfaces\":{}}" podsandboxid=b24f
time="2026-12-03T04:14:04.627541057Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:start-wasmkube-9,Uid:uid-start-wasmkube-9,Namespace:default,Attempt:0,} returns sandbox id \"b24f\""
time="2026-12-03T04:14:04.679383518Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:host-net,Uid:u,Namespace:default,Attempt:0,}"
time="2026-12-03T04:14:04.690000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:host-net,Uid:u,Namespace:default,Attempt:0,} returns sandbox id \"80b3\""
time="2026-12-03T23:59:59.990000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:late,Uid:u,Namespace:default,Attempt:0,}"
time="2026-12-03T23:59:59.995000000Z" level=debug msg="begin cni setup" podsandboxid=c0
time="2026-12-04T00:00:00.007000000Z" level=debug msg="cni result: {}" podsandboxid=c0
"#;
        let setups = cni_setup_ms(log);
        assert_eq!(setups.len(), 2, "a pod without CNI (host network) has no entry: {setups:?}");
        assert!((setups["start-wasmkube-9"] - 12.803).abs() < 0.001, "{setups:?}");
        assert!((setups["late"] - 12.0).abs() < 0.001, "{setups:?}");
    }

    #[test]
    fn lines_at_info_level_give_nothing() {
        let log = r#"time="2026-12-03T04:14:04.607243976Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:a,Uid:u,Namespace:default,Attempt:0,}""#;
        assert!(cni_setup_ms(log).is_empty());
    }
}
