//! What a guest sees of its container: args, env, stdio, and only the spec's volume mounts as preopens.
//!
//! A [`WasiTemplate`] is set up once per container. Every instance (each wasi:http request, the one run of
//! a wasi:cli component) gets its own `WasiCtx` from it for the preopens, and reads the args, env and
//! standard output streams from the template itself, through the `wasi:cli` functions of [`add_to_linker`]:
//! nothing of them is copied into an instance that does not ask for them.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::bindings::cli::{environment, stderr, stdout};
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::host::Host;
use super::log_pipe::LogPipe;
use crate::runtime::LaunchError;
use crate::spec::ContainerSpec;

/// A volume resolved to a directory that opened once.
#[derive(Debug, Clone)]
struct Preopen {
    host: PathBuf,
    guest: String,
    perms: FsPerms,
}

/// The per-container part of every instance's WASI context, resolved and checked once.
#[derive(Clone)]
pub struct WasiTemplate {
    inner: Arc<Template>,
}

struct Template {
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl WasiTemplate {
    /// Resolves the container's volumes: bind mounts whose source is a directory become preopens (files
    /// such as `/etc/hosts` cannot be), and each must open now, so a bad volume fails the container at
    /// create rather than each request.
    pub fn new(spec: &ContainerSpec, stdout: LogPipe, stderr: LogPipe) -> Result<Self, LaunchError> {
        let mut preopens = Vec::new();
        for volume in spec.volumes.iter().filter(|v| v.host.is_dir()) {
            let perms = if volume.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            let preopen = Preopen { host: volume.host.clone(), guest: volume.guest.clone(), perms };
            // The builder's own open, so the error is the one an instance would meet.
            preopen.add_to(&mut WasiCtxBuilder::new())?;
            preopens.push(preopen);
        }
        let template = Template { args: spec.args.clone(), env: spec.guest_env.clone(), preopens, stdout, stderr };
        Ok(Self { inner: Arc::new(template) })
    }

    /// A fresh context for one instance: what wasmtime-wasi keeps per instance of ours, the preopens. A
    /// `WasiCtx` is not `Clone`, and its builder takes preopens only as paths, so each instance opens its
    /// directories again (one `open` each, no re-validation).
    pub fn instantiate(&self) -> Result<WasiCtx, LaunchError> {
        let mut b = WasiCtxBuilder::new();
        for preopen in &self.inner.preopens {
            preopen.add_to(&mut b)?;
        }
        Ok(b.build())
    }

    /// The guest's view of the template, for the `wasi:cli` functions.
    pub fn view<'a>(&'a self, table: &'a mut ResourceTable) -> GuestCli<'a> {
        GuestCli { template: &self.inner, table }
    }
}

/// `wasi:cli`'s environment and standard output streams, served from a container's template.
pub struct GuestCli<'a> {
    template: &'a Template,
    table: &'a mut ResourceTable,
}

impl environment::Host for GuestCli<'_> {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.template.env.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.template.args.clone())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

impl stdout::Host for GuestCli<'_> {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.template.stdout.p2_stream())?)
    }
}

impl stderr::Host for GuestCli<'_> {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.template.stderr.p2_stream())?)
    }
}

struct FromTemplate;

impl HasData for FromTemplate {
    type Data<'a> = GuestCli<'a>;
}

/// Serves `wasi:cli/environment`, `stdout` and `stderr` from each store's template, in place of
/// wasmtime-wasi's own functions (added before), which read what a `WasiCtx` holds: copying the env into
/// every instance costs each request in proportion to the env, whether the guest reads it or not. Stdin and
/// the terminal queries stay wasmtime-wasi's: a container's stdin is closed, and its streams are no terminal.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = environment::add_to_linker::<Host, FromTemplate>(linker, Host::cli)
        .and_then(|()| stdout::add_to_linker::<Host, FromTemplate>(linker, Host::cli))
        .and_then(|()| stderr::add_to_linker::<Host, FromTemplate>(linker, Host::cli));
    linker.allow_shadowing(false);
    added
}

impl Preopen {
    fn add_to(&self, b: &mut WasiCtxBuilder) -> Result<(), LaunchError> {
        b.preopened_dir(&self.host, &self.guest, self.perms).map_err(|e| {
            LaunchError::cannot_run(format!(
                "volume mount {} (from {}) cannot be opened for the component: {e:#}",
                self.guest,
                self.host.display()
            ))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GuestVolume;

    fn spec_with(volumes: Vec<GuestVolume>) -> ContainerSpec {
        let oci: oci_spec::runtime::Spec = serde_json::from_str(r#"{"ociVersion": "1.0.2"}"#).unwrap();
        ContainerSpec { volumes, ..ContainerSpec::from_oci("c", &oci).unwrap() }
    }

    fn volume(host: PathBuf, guest: &str) -> GuestVolume {
        GuestVolume { host, guest: guest.into(), read_only: false }
    }

    #[tokio::test]
    async fn only_directories_become_preopens_and_instances_reuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let (out, _d1) = LogPipe::new(None);
        let (err, _d2) = LogPipe::new(None);
        let spec = spec_with(vec![volume(dir.path().into(), "/data"), volume(file, "/etc/hosts")]);
        let template = WasiTemplate::new(&spec, out, err).unwrap();
        let guests: Vec<&str> = template.inner.preopens.iter().map(|p| p.guest.as_str()).collect();
        assert_eq!(guests, ["/data"], "files cannot be preopens");
        for _ in 0..3 {
            template.instantiate().unwrap();
        }
    }

    #[tokio::test]
    async fn a_directory_gone_after_create_is_a_clear_error_for_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let (out, _d1) = LogPipe::new(None);
        let (err, _d2) = LogPipe::new(None);
        let template = WasiTemplate::new(&spec_with(vec![volume(data.clone(), "/data")]), out, err).unwrap();
        std::fs::remove_dir(&data).unwrap();
        let e = template.instantiate().err().unwrap();
        assert_eq!(e.exit_code, 126);
        assert!(e.message.starts_with("volume mount /data (from "), "{}", e.message);
    }
}
