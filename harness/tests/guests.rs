//! Guest components are found, or built once, where cargo puts them.

use wasmkube_harness::guests;

/// Start of every binary-encoded component (a module has version 1 in these bytes instead).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

#[test]
fn hello_cli_is_a_component() -> anyhow::Result<()> {
    let path = guests::guest_wasm("hello-cli")?;
    let bytes = std::fs::read(&path)?;
    anyhow::ensure!(bytes.starts_with(&COMPONENT_HEADER), "{} is not a component", path.display());
    Ok(())
}
