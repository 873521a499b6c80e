//! What a guest sees of its container: args, env, stdio, and only the spec's volume mounts as preopens.
//!
//! A [`WasiTemplate`] is set up once per container: its volumes are opened then, once. Every instance (each
//! wasi:http request, the one run of a wasi:cli component) gets a bare `WasiCtx` of its own (clocks, random,
//! sockets) and reads the args, env, standard output streams and preopened directories from the template
//! itself, through the functions of [`add_to_linker`]: nothing of them is copied or opened for an instance that
//! does not ask for them.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::filesystem::{Descriptor, Dir};
use wasmtime_wasi::p2::bindings::cli::{environment, stderr, stdout};
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::{FsPerms, OpenMode};

use super::host::Host;
use super::log_pipe::LogPipe;
use crate::runtime::LaunchError;
use crate::spec::{ContainerSpec, GuestVolume};

/// The per-container part of every instance's WASI context, resolved and opened once.
#[derive(Clone)]
pub struct WasiTemplate {
    inner: Arc<Template>,
}

struct Template {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Each directory volume, open, with the path the guest sees it at. A `Dir` is a shared handle, so every
    /// instance gets the same open directory, as every process of a container sees the same bind mount.
    preopens: Vec<(Dir, String)>,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl WasiTemplate {
    /// Opens the container's volumes: bind mounts whose source is a directory become preopens (files such
    /// as `/etc/hosts` cannot be). A volume that cannot be opened fails the container at create.
    pub fn new(spec: &ContainerSpec, stdout: LogPipe, stderr: LogPipe) -> Result<Self, LaunchError> {
        let preopens = spec
            .volumes
            .iter()
            .filter(|v| v.host.is_dir())
            .map(|v| Ok((open_volume(v)?, v.guest.clone())))
            .collect::<Result<_, LaunchError>>()?;
        let template = Template { args: spec.args.clone(), env: spec.guest_env.clone(), preopens, stdout, stderr };
        Ok(Self { inner: Arc::new(template) })
    }

    /// The guest's view of the template, for the functions of [`add_to_linker`].
    pub fn view<'a>(&'a self, table: &'a mut ResourceTable) -> ContainerView<'a> {
        ContainerView { template: &self.inner, table }
    }
}

/// `wasi:cli`'s environment and standard output streams and `wasi:filesystem`'s preopens, served from a
/// container's template.
pub struct ContainerView<'a> {
    template: &'a Template,
    table: &'a mut ResourceTable,
}

impl environment::Host for ContainerView<'_> {
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

impl stdout::Host for ContainerView<'_> {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.template.stdout.p2_stream())?)
    }
}

impl stderr::Host for ContainerView<'_> {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        Ok(self.table.push(self.template.stderr.p2_stream())?)
    }
}

impl preopens::Host for ContainerView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut directories = Vec::with_capacity(self.template.preopens.len());
        for (dir, guest) in &self.template.preopens {
            directories.push((self.table.push(Descriptor::Dir(dir.clone()))?, guest.clone()));
        }
        Ok(directories)
    }
}

struct FromTemplate;

impl HasData for FromTemplate {
    type Data<'a> = ContainerView<'a>;
}

/// Serves `wasi:cli/environment`, `stdout`, `stderr` and `wasi:filesystem/preopens` from each store's
/// template, in place of wasmtime-wasi's own functions (added before), which read what a `WasiCtx` holds:
/// copying the env into every instance costs each request in proportion to the env, and preopens in a
/// `WasiCtx` are opened again for each one (a system call per volume and request), whether the guest reads
/// them or not. Stdin and the terminal queries stay wasmtime-wasi's: a container's stdin is closed, and its
/// streams are no terminal.
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = environment::add_to_linker::<Host, FromTemplate>(linker, Host::container)
        .and_then(|()| stdout::add_to_linker::<Host, FromTemplate>(linker, Host::container))
        .and_then(|()| stderr::add_to_linker::<Host, FromTemplate>(linker, Host::container))
        .and_then(|()| preopens::add_to_linker::<Host, FromTemplate>(linker, Host::container));
    linker.allow_shadowing(false);
    added
}

/// A volume's directory, opened as wasmtime-wasi's `WasiCtxBuilder::preopened_dir` opens one (a path-only
/// handle: every access is a `*at` call beneath it).
fn open_volume(volume: &GuestVolume) -> Result<Dir, LaunchError> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(&volume.host)
        .map_err(|e| {
            LaunchError::cannot_run(format!(
                "volume mount {} (from {}) cannot be opened for the component: {e}",
                volume.guest,
                volume.host.display()
            ))
        })?;
    let (perms, open_mode) = match volume.read_only {
        true => (FsPerms::ReadOnly, OpenMode::READ),
        false => (FsPerms::ReadWrite, OpenMode::READ | OpenMode::WRITE),
    };
    // Blocking file calls go to tokio's blocking pool, as with the builder's default.
    Ok(Dir::new(dir, perms, open_mode, false))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec_with(volumes: Vec<GuestVolume>) -> ContainerSpec {
        let oci: oci_spec::runtime::Spec = serde_json::from_str(r#"{"ociVersion": "1.0.2"}"#).unwrap();
        ContainerSpec { volumes, ..ContainerSpec::from_oci("c", &oci).unwrap() }
    }

    fn volume(host: PathBuf, guest: &str) -> GuestVolume {
        GuestVolume { host, guest: guest.into(), read_only: false }
    }

    fn template_with(volumes: Vec<GuestVolume>) -> WasiTemplate {
        let (out, _) = LogPipe::new(None);
        let (err, _) = LogPipe::new(None);
        WasiTemplate::new(&spec_with(volumes), out, err).unwrap()
    }

    fn preopened(template: &WasiTemplate, table: &mut ResourceTable) -> Vec<(std::fs::Metadata, String)> {
        let directories = preopens::Host::get_directories(&mut template.view(table)).unwrap();
        directories
            .into_iter()
            .map(|(fd, guest)| match table.get(&fd).unwrap() {
                Descriptor::Dir(dir) => (dir.dir.metadata().unwrap(), guest),
                Descriptor::File(_) => panic!("{guest} is preopened as a file"),
            })
            .collect()
    }

    #[tokio::test]
    async fn only_directories_become_preopens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let template = template_with(vec![volume(dir.path().into(), "/data"), volume(file, "/etc/hosts")]);
        let guests: Vec<String> = preopened(&template, &mut ResourceTable::new()).into_iter().map(|p| p.1).collect();
        assert_eq!(guests, ["/data"], "files cannot be preopens");
    }

    #[tokio::test]
    async fn every_instance_gets_the_directory_opened_at_create_as_a_bind_mount_would_give() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let template = template_with(vec![volume(data.clone(), "/data")]);
        // The host path now names another directory; the container keeps the one it was given.
        std::fs::rename(&data, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&data).unwrap();
        let given = std::fs::metadata(dir.path().join("moved")).unwrap().ino();
        for _ in 0..2 {
            let mut table = ResourceTable::new();
            let preopens = preopened(&template, &mut table);
            assert_eq!(preopens.len(), 1);
            assert_eq!((preopens[0].0.ino(), preopens[0].1.as_str()), (given, "/data"));
        }
    }

    #[tokio::test]
    async fn a_volume_that_cannot_be_opened_fails_the_container_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_volume(&volume(dir.path().join("gone"), "/data")).err().unwrap();
        assert_eq!(e.exit_code, 126);
        assert!(e.message.starts_with("volume mount /data (from "), "{}", e.message);
        assert!(e.message.contains("No such file or directory"), "{}", e.message);
    }
}
