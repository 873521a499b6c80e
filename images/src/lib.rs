//! wasmkube's container images without Docker: OCI archives assembled from the static binaries
//! (`make images`), and the OCI layout writer the node test harness builds its test images with.

pub mod catalog;
pub mod elf;
pub mod error;
pub mod layout;

pub use error::{Error, Result};
