//! What `wasmkube inspect` prints: where a component came from and its WIT world.

use std::fmt::Write;

use anyhow::{bail, Result};
use wasmkube_oci::{sha256_digest, Pulled};
use wit_component::DecodedWasm;
use wit_parser::WorldItem;

/// The component's world as `world NAME` followed by `import …`/`export …` lines.
pub fn world(wasm: &[u8]) -> Result<String> {
    if let Some(what) = wasmkube_oci::not_a_component(wasm) {
        bail!("this is {what}");
    }
    let decoded = wit_component::decode(wasm)?;
    let (resolve, world_id) = match decoded {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => bail!("this is a WIT package, not a component"),
    };
    let world = &resolve.worlds[world_id];
    let mut out = format!("world {}\n", world.name);
    for (direction, items) in [("import", &world.imports), ("export", &world.exports)] {
        for (key, item) in items.iter() {
            let kind = match item {
                WorldItem::Interface { .. } => "interface",
                WorldItem::Function(_) => "func",
                WorldItem::Type { .. } => "type",
            };
            let _ = writeln!(out, "  {direction} {kind} {}", resolve.name_world_key(key));
        }
    }
    Ok(out)
}

/// Report of a component file.
pub fn file_report(path: &str, wasm: &[u8]) -> Result<String> {
    let mut out = format!("file: {path}\ncomponent: {} {} bytes\n", sha256_digest(wasm), wasm.len());
    out.push_str(&world(wasm)?);
    Ok(out)
}

/// Report of a pulled component.
pub fn pulled_report(reference: &str, pulled: &Pulled) -> Result<String> {
    let mut out =
        format!("reference: {reference}\nmanifest: {} {}\n", pulled.manifest_media_type, pulled.manifest_digest);
    if let Some(config) = &pulled.config_media_type {
        let _ = writeln!(out, "config: {config}");
    }
    let layer = &pulled.layer;
    let _ = writeln!(out, "layer: {} {} {} bytes", layer.media_type, layer.digest, layer.size);
    let _ = writeln!(out, "component: {} {} bytes", sha256_digest(&pulled.wasm), pulled.wasm.len());
    out.push_str(&world(&pulled.wasm)?);
    Ok(out)
}
