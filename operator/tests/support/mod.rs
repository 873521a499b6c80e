//! Test support shared by the operator's integration tests (and the installer's, by path).
pub mod rbac;
