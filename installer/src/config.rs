//! containerd's config.toml: the runtime entry comes from [`wasmkube_contract::containerd`] (the one renderer
//! of it, which the test harness uses too); what is only the installer's concern — following `imports`,
//! telling the layout from `containerd --version` — is here. Pure functions, no I/O.

use toml_edit::{DocumentMut, Item, Value};

pub use wasmkube_contract::containerd::*;
/// The `imports` entries of a config (paths or globs, as written).
pub fn imports_of(doc: &DocumentMut) -> Vec<String> {
    doc.get("imports")
        .and_then(Item::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The containerd major version from `containerd --version` output (`containerd github.com/… v1.7.2 …`).
pub fn version_for_containerd(version_output: &str) -> Option<ConfigVersion> {
    let word = version_output.split_whitespace().find(|w| {
        let w = w.trim_start_matches('v');
        w.split('.').count() >= 2
            && w.split('.').next().is_some_and(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())
    })?;
    match word.trim_start_matches('v').split('.').next()? {
        "1" => Some(ConfigVersion::V2),
        "2" => Some(ConfigVersion::V3),
        _ => None,
    }
}

/// Whether a file name matches one glob component (`*` and `?`), as Go's filepath.Match does for them.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions_map_to_layouts() {
        let v = |s| version_for_containerd(s);
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"),
            Some(ConfigVersion::V2)
        );
        assert_eq!(v("containerd containerd.io v1.7.27 05044ec0"), Some(ConfigVersion::V2));
        assert_eq!(v("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7"), Some(ConfigVersion::V3));
        assert_eq!(v("bash: containerd: not found"), None);
    }

    #[test]
    fn globs_match_like_go() {
        assert!(glob_match("*.toml", "wasmkube.toml"));
        assert!(glob_match("*", "wasmkube.toml"));
        assert!(glob_match("9?-*.toml", "99-x.toml"));
        assert!(!glob_match("*.conf", "wasmkube.toml"));
        assert!(!glob_match("a*b", "acbd"));
    }
}
