//! The contract between wasmkube's parts: every name and value that one part writes and another reads.
//!
//! The operator renders Deployments the shim runs; the installer writes the containerd runtime entry the
//! shim is started through; the node metrics endpoint serves series the operator scrapes. Each value that
//! crosses such a line is defined here once, so the two sides cannot drift apart; the round-trip tests of
//! this crate tie the writer to the reader.

pub mod allocator;
pub mod component;
#[cfg(feature = "containerd-config")]
pub mod containerd;
pub mod env;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod labels;
pub mod metrics;
pub mod node;
pub mod runtime;
