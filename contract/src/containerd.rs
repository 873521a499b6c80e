//! The wasmkube runtime entry of containerd's config.toml — the one renderer of it, used by the node
//! installer on real nodes and by the test harness for its private containerd. The file is edited as
//! text: our entry added or removed, everything else (comments, order, other runtimes) kept byte for
//! byte. Pure functions, no I/O.

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::runtime::{HANDLER as RUNTIME_NAME, PASSED_ANNOTATIONS, PASSED_POD_ANNOTATIONS, RUNTIME_TYPE};
/// First line of the comment above the runtime table we add.
const MARKER: &str = "# Added by wasmkube-node-installer; `wasmkube-node-installer uninstall` removes it.";

/// Errors of the config edits.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not TOML.
    #[error("not valid TOML")]
    Parse(#[from] toml_edit::TomlError),
    /// `version` names a layout we do not know.
    #[error("unsupported containerd config version {0} (known: 2 for containerd 1.x, 3 for containerd 2.x)")]
    UnsupportedVersion(String),
    /// A key on our path holds a value that is not a table.
    #[error("`{0}` is not a table; refusing to edit the file")]
    NotATable(String),
}

/// The config layout, from the file's `version` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersion {
    /// No `version`: containerd 1.x's original layout (`plugins.cri`).
    V1,
    /// `version = 2`: containerd 1.x (`plugins."io.containerd.grpc.v1.cri"`).
    V2,
    /// `version = 3`: containerd 2.x (`plugins."io.containerd.cri.v1.runtime"`).
    V3,
}

impl ConfigVersion {
    /// Parses `2` or `3` (as given on the command line).
    pub fn from_number(n: i64) -> Result<Self, ConfigError> {
        match n {
            2 => Ok(ConfigVersion::V2),
            3 => Ok(ConfigVersion::V3),
            other => Err(ConfigError::UnsupportedVersion(other.to_string())),
        }
    }

    /// The `version` number written into new files (`None` for the unversioned layout).
    pub fn number(self) -> Option<i64> {
        match self {
            ConfigVersion::V1 => None,
            ConfigVersion::V2 => Some(2),
            ConfigVersion::V3 => Some(3),
        }
    }

    /// ID of the CRI plugin section that holds the runtimes.
    pub fn cri_plugin(self) -> &'static str {
        match self {
            ConfigVersion::V1 => "cri",
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// Key path of our runtime's table.
    fn runtime_path(self) -> [&'static str; 5] {
        ["plugins", self.cri_plugin(), "containerd", "runtimes", RUNTIME_NAME]
    }

    /// The TOML header of our runtime's table, e.g. `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmkube`.
    pub fn runtime_header(self) -> String {
        let cri = self.cri_plugin();
        let cri = if cri.contains('.') { format!("\"{cri}\"") } else { cri.to_string() };
        format!("plugins.{cri}.containerd.runtimes.{RUNTIME_NAME}")
    }
}

/// A parsed config.
pub fn parse(text: &str) -> Result<DocumentMut, ConfigError> {
    Ok(text.parse::<DocumentMut>()?)
}

/// The layout of a parsed config; `None` when the document is empty (no keys at all), where only the
/// installed containerd's version can tell.
pub fn version_of(doc: &DocumentMut) -> Result<Option<ConfigVersion>, ConfigError> {
    match doc.get("version") {
        Some(item) => match item.as_integer() {
            Some(n) => ConfigVersion::from_number(n).map(Some),
            None => Err(ConfigError::UnsupportedVersion(item.to_string().trim().to_string())),
        },
        None if doc.as_table().is_empty() => Ok(None),
        None => Ok(Some(ConfigVersion::V1)),
    }
}

/// Whether our runtime is present with the right type.
pub fn has_runtime(doc: &DocumentMut, version: ConfigVersion) -> bool {
    let mut t: &dyn TableLike = doc.as_table();
    for key in version.runtime_path() {
        match t.get(key).and_then(Item::as_table_like) {
            Some(next) => t = next,
            None => return false,
        }
    }
    t.get("runtime_type").and_then(Item::as_str) == Some(RUNTIME_TYPE)
}

/// Adds (or completes) our runtime entry; returns the new text, equal to `text` when nothing was missing.
/// A `version` must be given for an empty document (see [`version_of`]).
pub fn add_runtime(text: &str, empty_doc_version: ConfigVersion) -> Result<String, ConfigError> {
    let mut doc = parse(text)?;
    let version = version_of(&doc)?.unwrap_or(empty_doc_version);
    if doc.as_table().is_empty() {
        if let Some(n) = version.number() {
            // Below the file's comments, which toml_edit would otherwise move to the end.
            let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
            doc = parse(&format!("{text}{sep}version = {n}\n"))?;
        }
    }
    if ensure_runtime(&mut doc, version)? {
        Ok(doc.to_string())
    } else {
        Ok(text.to_string())
    }
}

/// Sets `runtime_type` and the passed annotations in our runtime's table, creating what is missing; true if changed.
fn ensure_runtime(doc: &mut DocumentMut, version: ConfigVersion) -> Result<bool, ConfigError> {
    let path = version.runtime_path();
    let mut t: &mut dyn TableLike = doc.as_table_mut();
    let mut in_inline = false;
    let mut walked = String::new();
    for (i, key) in path.iter().enumerate() {
        walked = if walked.is_empty() { key.to_string() } else { format!("{walked}.{key}") };
        let last = i == path.len() - 1;
        let item = t.entry(key).or_insert_with(|| new_table(in_inline, last));
        in_inline = item.is_inline_table();
        t = item.as_table_like_mut().ok_or_else(|| ConfigError::NotATable(walked.clone()))?;
    }
    let mut changed = false;
    if t.get("runtime_type").and_then(Item::as_str) != Some(RUNTIME_TYPE) {
        t.insert("runtime_type", toml_edit::value(RUNTIME_TYPE));
        changed = true;
    }
    changed |= ensure_listed(t, &walked, "container_annotations", &PASSED_ANNOTATIONS)?;
    changed |= ensure_listed(t, &walked, "pod_annotations", &PASSED_POD_ANNOTATIONS)?;
    Ok(changed)
}

/// Adds the `values` missing from the array `key` of table `t` (at `walked`), creating it; true if changed.
fn ensure_listed(t: &mut dyn TableLike, walked: &str, key: &str, values: &[&str]) -> Result<bool, ConfigError> {
    if t.get(key).is_none() {
        t.insert(key, toml_edit::value(Array::new()));
    }
    let array =
        t.get_mut(key).and_then(Item::as_array_mut).ok_or_else(|| ConfigError::NotATable(format!("{walked}.{key}")))?;
    let mut changed = false;
    for value in values {
        if !array.iter().any(|v| v.as_str() == Some(value)) {
            array.push(*value);
            changed = true;
        }
    }
    Ok(changed)
}

/// A table on our runtime's path: under a `[header]` table an implicit one (our runtime's with the marker);
/// inside an inline table, which can hold only values, an inline one (dotted on the way, which remove prunes).
fn new_table(in_inline: bool, last: bool) -> Item {
    if in_inline {
        // Why not a `Table`: toml_edit drops one put into an inline table, so the entry would vanish unwritten
        // (found by the fuzz target containerd_config).
        let mut table = InlineTable::new();
        table.set_dotted(!last);
        return Item::Value(Value::InlineTable(table));
    }
    let mut table = Table::new();
    if last {
        table.decor_mut().set_prefix(format!("\n{MARKER}\n"));
    } else {
        table.set_implicit(true);
    }
    Item::Table(table)
}

/// Removes our runtime entry (and the empty tables that only held it); other text is kept.
pub fn remove_runtime(text: &str) -> Result<String, ConfigError> {
    let mut doc = parse(text)?;
    let version = match version_of(&doc)? {
        Some(v) => v,
        None => return Ok(text.to_string()),
    };
    if remove_at(doc.as_table_mut(), &version.runtime_path()) {
        Ok(doc.to_string())
    } else {
        Ok(text.to_string())
    }
}

/// Removes the key at `path`; prunes parents left empty that were never written as headers.
fn remove_at(t: &mut dyn TableLike, path: &[&str]) -> bool {
    match path {
        [] => false,
        [last] => t.remove(last).is_some(),
        [first, rest @ ..] => {
            let Some(child) = t.get_mut(first).and_then(Item::as_table_like_mut) else {
                return false;
            };
            let removed = remove_at(child, rest);
            let prune = t.get(first).is_some_and(|item| match item {
                Item::Table(table) => table.is_empty() && (table.is_implicit() || table.is_dotted()),
                Item::Value(Value::InlineTable(inline)) => inline.is_empty() && inline.is_dotted(),
                _ => false,
            });
            if removed && prune {
                t.remove(first);
            }
            removed
        }
    }
}

/// A whole file holding only our runtime entry: a drop-in for configs that use `imports`.
pub fn drop_in(version: ConfigVersion) -> Result<String, ConfigError> {
    add_runtime("# containerd drop-in written by wasmkube-node-installer; its uninstall deletes this file.\n", version)
}

/// The block appended to a k3s/rke2 `config.toml.tmpl` (a Go template, so not edited as TOML).
pub fn template_block(version: ConfigVersion) -> String {
    let annotations: Array = PASSED_ANNOTATIONS.into_iter().collect();
    let pod_annotations: Array = PASSED_POD_ANNOTATIONS.into_iter().collect();
    format!(
        "{TEMPLATE_BEGIN}\n[{header}]\n  runtime_type = {runtime_type}\n  container_annotations = {annotations}\n  pod_annotations = {pod_annotations}\n{TEMPLATE_END}\n",
        header = version.runtime_header(),
        runtime_type = Value::from(RUNTIME_TYPE),
    )
}

/// First line of the template block.
pub const TEMPLATE_BEGIN: &str = "# BEGIN wasmkube (wasmkube-node-installer; its uninstall removes this block)";
/// Last line of the template block.
pub const TEMPLATE_END: &str = "# END wasmkube";
/// The first line of a template we create: k3s/rke2 render their own config there.
pub const TEMPLATE_BASE: &str = "{{ template \"base\" . }}";

/// Appends our block to a template (or creates one from the base template); idempotent.
pub fn add_template_block(existing: Option<&str>, version: ConfigVersion) -> String {
    match existing {
        Some(text) if text.contains(TEMPLATE_BEGIN) => text.to_string(),
        Some(text) => {
            let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
            format!("{text}{sep}\n{}", template_block(version))
        }
        None => format!("{TEMPLATE_BASE}\n\n{}", template_block(version)),
    }
}

/// Removes our block; `None` when what is left is only the base template we wrote (delete the file).
pub fn remove_template_block(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == TEMPLATE_BEGIN {
            inside = true;
            // The blank line we put before the block goes with it.
            if out.ends_with("\n\n") {
                out.pop();
            }
            continue;
        }
        if inside {
            inside = trimmed != TEMPLATE_END;
            continue;
        }
        out.push_str(line);
    }
    if out.trim() == TEMPLATE_BASE {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_file() {
        assert_eq!(version_of(&parse("version = 2\n").unwrap()).unwrap(), Some(ConfigVersion::V2));
        assert_eq!(version_of(&parse("version = 3\n").unwrap()).unwrap(), Some(ConfigVersion::V3));
        assert_eq!(version_of(&parse("root = \"/x\"\n").unwrap()).unwrap(), Some(ConfigVersion::V1));
        assert_eq!(version_of(&parse("# only a comment\n").unwrap()).unwrap(), None);
        assert!(matches!(version_of(&parse("version = 4\n").unwrap()), Err(ConfigError::UnsupportedVersion(_))));
        assert!(matches!(version_of(&parse("version = \"2\"\n").unwrap()), Err(ConfigError::UnsupportedVersion(_))));
    }

    #[test]
    fn a_non_table_on_the_path_is_refused() {
        let err = add_runtime("version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\" = 1\n", ConfigVersion::V2);
        assert!(matches!(err, Err(ConfigError::NotATable(p)) if p == "plugins.io.containerd.grpc.v1.cri"));
    }

    #[test]
    fn an_empty_file_gets_the_version_it_is_given() {
        let out = add_runtime("", ConfigVersion::V3).unwrap();
        let doc = parse(&out).unwrap();
        assert_eq!(version_of(&doc).unwrap(), Some(ConfigVersion::V3));
        assert!(has_runtime(&doc, ConfigVersion::V3));
    }

    #[test]
    fn existing_annotations_are_kept_and_ours_added() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmkube]\n  runtime_type = \"io.containerd.wasmkube.v1\"\n  container_annotations = [\"a.b/c\"]\n";
        let out = add_runtime(text, ConfigVersion::V2).unwrap();
        assert!(out.contains(r#"["a.b/c", "io.kubernetes.container.terminationMessagePath"]"#), "{out}");
    }

    #[test]
    fn inline_tables_on_the_path_get_the_runtime_inline() {
        // Found by the fuzz target containerd_config (fuzz/regressions/containerd_config/inline-*.toml): the
        // runtime was dropped from the written text, and the install reported success.
        for text in [
            "plugins = { cri = { containerd = { runtimes = {} } } }\n",
            "version = 2\nplugins = {}\n",
            "version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\" = { containerd = { runtimes = { runc = { runtime_type = \"x\" } } } }\n",
        ] {
            let added = add_runtime(text, ConfigVersion::V2).unwrap();
            let doc = parse(&added).unwrap();
            let version = version_of(&doc).unwrap().unwrap();
            assert!(has_runtime(&doc, version), "{added}");
            assert_eq!(add_runtime(&added, ConfigVersion::V2).unwrap(), added, "a second add changes nothing");
            assert_eq!(remove_runtime(&added).unwrap(), text, "remove restores {text:?}");
        }
    }

    #[test]
    fn the_template_block_holds_the_same_entry() {
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let block = template_block(version);
            let n = version.number().unwrap();
            let text = format!("version = {n}\n{block}");
            assert!(has_runtime(&parse(&text).unwrap(), version), "{block}");
            assert_eq!(add_runtime(&text, version).unwrap(), text, "nothing is missing from {block}");
        }
    }

    #[test]
    fn template_block_round_trips() {
        let created = add_template_block(None, ConfigVersion::V2);
        assert!(created.starts_with(TEMPLATE_BASE));
        assert_eq!(remove_template_block(&created), None, "a template we created is deleted");
        let user = "{{ template \"base\" . }}\n[plugins.x]\n  a = 1\n";
        let added = add_template_block(Some(user), ConfigVersion::V3);
        assert!(added.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmkube]"));
        assert_eq!(add_template_block(Some(&added), ConfigVersion::V3), added, "idempotent");
        assert_eq!(remove_template_block(&added).as_deref(), Some(user));
    }
}
