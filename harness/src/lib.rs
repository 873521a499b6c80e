//! The node test harness: everything a test needs to drive a real containerd on this machine —
//! Debian packages, a private containerd with teardown, OCI images built in memory, guest components.

pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod dns;
pub mod error;
pub mod guests;
pub mod http;
pub mod images;
pub mod mounts;
pub mod node_test;
/// OCI layouts of test images (the image builder of `wasmkube-images`).
pub use wasmkube_images::layout as oci;
pub mod packages;
pub mod paths;
pub mod procs;
pub mod registry;

pub use cmd::CmdOutput;
pub use containerd::{ContainerdOpts, PrivateContainerd};
pub use error::{Error, Result};
pub use node_test::{require_root, wait_until};
pub use oci::{ImageInfo, OciImage};

/// Sends `tracing` output to the test's captured output; `RUST_LOG` filters it (default `info`).
pub fn init_test_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
