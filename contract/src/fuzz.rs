//! What the parsers of outside input promise, as checks the `cargo fuzz` targets (`fuzz/`) run on every input
//! and the crates' tests replay on the seed corpus and the regression inputs (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`), so a fixed finding stays fixed without a nightly toolchain. A check returns
//! quietly when the parser rejects an input and panics when a promise is broken.

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, naming the file
/// whose check panics; fails when there is no input at all (a renamed target would otherwise test nothing).
pub fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let dir = fuzz.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("fuzz target {target}: the check fails on {}", file.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs for fuzz target {target} under {}", fuzz.display());
}

/// `shim.toml`: a file that parses has its limits in range and prints back as a file that parses the same.
pub fn node_config(data: &[u8]) {
    use crate::node::config::{NodeConfig, MAX_HTTP_IN_FLIGHT_REQUESTS};

    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = NodeConfig::parse(text) else { return };
    assert!((1..=MAX_HTTP_IN_FLIGHT_REQUESTS).contains(&config.http_max_in_flight()));
    assert!(config.http_request_timeout().as_secs() >= 1);
    let _ = (config.idle_exit(), config.metrics_address());
    let printed = toml::to_string(&config).expect("a parsed config prints as TOML");
    let again = NodeConfig::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse: {e}"));
    assert_eq!(again, config, "printed as {printed:?}");
}

/// containerd's `config.toml`: what `add_runtime` writes is TOML with our runtime, a second add changes
/// nothing, and `remove_runtime` gives back an equivalent config; the k3s template block comes off as it went on.
pub fn containerd_config(data: &[u8]) {
    use crate::containerd::{self, ConfigVersion};

    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(removed) = containerd::remove_runtime(text) {
        let doc = containerd::parse(&removed).unwrap_or_else(|e| panic!("remove_runtime wrote invalid TOML: {e}"));
        if let Ok(Some(version)) = containerd::version_of(&doc) {
            assert!(!containerd::has_runtime(&doc, version), "the runtime is still there: {removed:?}");
        }
    }
    for empty_doc_version in [ConfigVersion::V2, ConfigVersion::V3] {
        if let Ok(added) = containerd::add_runtime(text, empty_doc_version) {
            check_added(text, &added, empty_doc_version);
        }
        check_template(text, empty_doc_version);
    }
}

fn check_added(text: &str, added: &str, empty_doc_version: crate::containerd::ConfigVersion) {
    use crate::containerd;

    let doc = containerd::parse(added).unwrap_or_else(|e| panic!("add_runtime wrote invalid TOML {added:?}: {e}"));
    let version = containerd::version_of(&doc).ok().flatten().expect("the written config has a layout");
    assert!(containerd::has_runtime(&doc, version), "no runtime in {added:?}");
    let again = containerd::add_runtime(added, empty_doc_version).expect("a written config takes a second add");
    assert_eq!(again, added, "a second add changed the config");
    let removed = containerd::remove_runtime(added).expect("a written config takes a remove");
    let Some(before) = semantic(text) else { return };
    if has_key_at(&before, &runtime_path(version)) {
        return; // An entry that was there before is removed as a whole: nothing to compare with.
    }
    let mut after = semantic(&removed).unwrap_or_else(|| panic!("remove_runtime wrote invalid TOML {removed:?}"));
    if before.is_empty() {
        after.remove("version"); // Given to an empty file, kept on remove.
    }
    // Debug text, so that a `nan` equals itself.
    assert_eq!(format!("{after:?}"), format!("{before:?}"), "add then remove changed the config to {removed:?}");
}

/// The k3s template block: added once, and removed, gives the text back (up to trailing blank lines).
fn check_template(text: &str, version: crate::containerd::ConfigVersion) {
    use crate::containerd::{add_template_block, remove_template_block, TEMPLATE_BASE, TEMPLATE_BEGIN};

    if text.contains(TEMPLATE_BEGIN) {
        return;
    }
    let added = add_template_block(Some(text), version);
    assert_eq!(add_template_block(Some(&added), version), added, "a second add changed the template");
    match remove_template_block(&added) {
        None => assert_eq!(text.trim(), TEMPLATE_BASE, "only the base template is deleted"),
        Some(removed) => assert_eq!(removed.trim_end(), text.trim_end(), "add then remove changed the template"),
    }
}

/// The TOML's values, without layout or comments (`None` when it is not TOML).
fn semantic(text: &str) -> Option<toml::Table> {
    text.parse::<toml::Table>().ok()
}

fn runtime_path(version: crate::containerd::ConfigVersion) -> [&'static str; 5] {
    ["plugins", version.cri_plugin(), "containerd", "runtimes", crate::runtime::HANDLER]
}

fn has_key_at(table: &toml::Table, path: &[&str]) -> bool {
    match path {
        [] => true,
        [last] => table.contains_key(*last),
        [first, rest @ ..] => table.get(*first).and_then(toml::Value::as_table).is_some_and(|t| has_key_at(t, rest)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_config_inputs_keep_their_promises() {
        super::replay("node_config", super::node_config);
    }

    #[test]
    fn containerd_config_inputs_keep_their_promises() {
        super::replay("containerd_config", super::containerd_config);
    }
}
