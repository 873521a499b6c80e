//! The wasmkube node installer: puts the shim on a node and registers it with containerd (and takes it
//! away again). Config edits are pure functions ([`config`]); the rest is thin I/O around them.

pub mod config;
pub mod files;
pub mod install;
pub mod label;
pub mod layout;
pub mod metrics_token;
pub mod restart;
pub mod rollout;

pub use install::{install, uninstall, InstallError, Options, Report};
