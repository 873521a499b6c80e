//! What the parsers of registry input promise, as checks for the fuzz targets `oci_manifest` and `oci_reference`
//! (`fuzz/`); the tests replay them on `fuzz/corpus/` and `fuzz/regressions/` (see `wasmkube_contract::fuzz`).

use wasmkube_contract::component::{oci_uri, strip_oci_scheme};

use crate::manifest::{LayerKind, Manifest};
use crate::{media, parse_oci_ref, Error};

/// The reference a pull names in its errors.
const REFERENCE: &str = "oci://registry.example/app:v1";

/// A manifest or index from a registry: the pull's rules find an index entry or a component layer, or say why not.
pub fn manifest(data: &[u8]) {
    let digest = crate::sha256_digest(data);
    let Ok(manifest) = Manifest::parse(data, &digest) else { return };
    if manifest.is_index() {
        match manifest.pick_platform(REFERENCE) {
            Ok(entry) => {
                let platform = entry.platform.as_ref().expect("a picked entry has a platform");
                assert_eq!(platform.architecture, media::WASM_ARCH);
                // The pull then asks for the entry's digest under the same name.
                let pinned =
                    parse_oci_ref(REFERENCE).expect("a valid reference").clone_with_digest(entry.digest.clone());
                assert_eq!(pinned.digest(), Some(entry.digest.as_str()));
            }
            Err(e) => assert_named(&e),
        }
        return;
    }
    match manifest.component_layer(REFERENCE) {
        Ok((layer, kind)) => {
            assert!(manifest.layers.contains(layer));
            let media_type = layer.media_type.as_str();
            match kind {
                LayerKind::Raw => assert!(media::RAW_WASM_LAYERS.contains(&media_type)),
                LayerKind::Tar => assert!(media::TAR_LAYERS.contains(&media_type)),
                LayerKind::TarGzip => assert!(media::TAR_GZIP_LAYERS.contains(&media_type)),
            }
        }
        Err(e) => assert_named(&e),
    }
}

/// An `oci://` reference: one that parses has an explicit registry and a digest a blob can match, and prints
/// back as a reference that parses to the same value.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert_eq!(strip_oci_scheme(&oci_uri(text)), Some(text));
    let Ok(parsed) = parse_oci_ref(text) else { return };
    if let Some(digest) = parsed.digest() {
        let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("{digest} is not sha256"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{digest} is not what sha256_digest writes, so no blob can match it"
        );
    }
    let printed = oci_uri(&parsed.whole());
    let again = parse_oci_ref(&printed).unwrap_or_else(|e| panic!("{text:?} prints as {printed:?}, which fails: {e}"));
    assert_eq!(again, parsed, "{text:?} prints as {printed:?}");
}

/// Errors name the reference, so the container log says which component.
fn assert_named(e: &Error) {
    assert!(e.to_string().contains(REFERENCE), "{e}");
}

#[cfg(test)]
mod tests {
    use wasmkube_contract::fuzz::replay;

    #[test]
    fn manifest_inputs_keep_their_promises() {
        replay("oci_manifest", super::manifest);
    }

    #[test]
    fn reference_inputs_keep_their_promises() {
        replay("oci_reference", super::reference);
    }
}
