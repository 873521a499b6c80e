//! `install` and `uninstall`: the shim binary, the node config, containerd's runtime entry, the restart.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigVersion};
use crate::files::{self, FileError};
use crate::layout::{self, ConfigTarget, Host, Layout, DROP_IN_NAME};
use crate::restart::{self, RestartMode};

pub use wasmkube_contract::node::SHIM_CONFIG_PATH as SHIM_CONFIG;
pub use wasmkube_contract::runtime::SHIM_BINARY;
/// Where the node image carries the shim the installer copies onto the node (`wasmkube-images` puts it there).
pub const IMAGE_SHIM_PATH: &str = "/usr/local/lib/wasmkube/containerd-shim-wasmkube-v1";
/// Where the node image carries the installer itself (on `PATH`, as the chart's probe runs it by name).
pub const IMAGE_INSTALLER_PATH: &str = "/usr/local/bin/wasmkube-node-installer";
/// Host path of the marker of a config change that containerd has not loaded yet: a run after a failed
/// restart finds the config already edited and must restart all the same.
pub const RESTART_PENDING: &str = "/etc/wasmkube/restart-pending";

/// What `install` and `uninstall` act on.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's root file system.
    pub host: Host,
    /// Host path of containerd's config (file, `.tmpl` template or drop-in directory); detected when unset.
    pub containerd_config: Option<PathBuf>,
    /// Config layout for a config file that is missing or empty; else asked of the host's containerd.
    pub config_version: Option<ConfigVersion>,
    /// The shim binary to copy (a path in the installer's own file system).
    pub shim_source: PathBuf,
    /// Host directory on containerd's PATH that receives the shim.
    pub bin_dir: PathBuf,
    /// A shim.toml to copy to [`SHIM_CONFIG`] (a path in the installer's own file system).
    pub shim_config_source: Option<PathBuf>,
    /// How to restart containerd.
    pub restart: RestartMode,
    /// Overrides the detected systemd unit.
    pub restart_unit: Option<String>,
}

/// Errors of install and uninstall.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// containerd's config could not be edited.
    #[error("{path}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: config::ConfigError,
    },
    /// The layout of a missing or empty config is unknown.
    #[error(
        "{0} is missing or empty and the installed containerd's version could not be read; \
         pass --config-version 2 (containerd 1.x) or 3 (containerd 2.x)"
    )]
    UnknownVersion(PathBuf),
    /// containerd could not be restarted.
    #[error(transparent)]
    Restart(#[from] restart::RestartError),
}

/// What was done, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Host paths written or removed.
    pub changed: Vec<PathBuf>,
    /// Whether containerd was restarted.
    pub restarted: bool,
}

/// Copies the shim and its config, adds the runtime to containerd's config, restarts containerd if the
/// config changed (or the restart is forced by a changed shim binary).
pub fn install(opts: &Options, containerd_version: impl Fn() -> Option<String>) -> Result<Report, InstallError> {
    let host = &opts.host;
    let mut report = Report::default();
    let shim = host.path(opts.bin_dir.join(SHIM_BINARY));
    files::copy_atomic(&opts.shim_source, &shim, 0o755)?;
    report.changed.push(shim);
    if let Some(src) = &opts.shim_config_source {
        let dst = host.path(SHIM_CONFIG);
        files::copy_atomic(src, &dst, 0o644)?;
        report.changed.push(dst);
    }
    let layout = layout::detect(host, opts.containerd_config.as_deref());
    tracing::info!(?layout, "containerd layout");
    let config_changed = add_to_config(opts, &layout, containerd_version, &mut report)?;
    report.restarted = restart_if_needed(opts, &layout, config_changed)?;
    Ok(report)
}

/// Removes the runtime from containerd's config (restarting containerd if it was there), the shim and its config.
pub fn uninstall(opts: &Options) -> Result<Report, InstallError> {
    let host = &opts.host;
    let mut report = Report::default();
    let layout = layout::detect(host, opts.containerd_config.as_deref());
    tracing::info!(?layout, "containerd layout");
    let config_changed = remove_from_config(host, &layout, &mut report)?;
    report.restarted = restart_if_needed(opts, &layout, config_changed)?;
    let token = host.path(wasmkube_contract::node::METRICS_TOKEN_PATH);
    for path in [host.path(opts.bin_dir.join(SHIM_BINARY)), host.path(SHIM_CONFIG), token] {
        if files::remove_optional(&path)? {
            report.changed.push(path);
        }
    }
    if let Some(dir) = Path::new(SHIM_CONFIG).parent() {
        // Only when empty: the shim's cache or an admin's files may live there.
        let _ = std::fs::remove_dir(host.path(dir));
    }
    Ok(report)
}

/// Restarts containerd when the config changed now or in a run whose restart failed ([`RESTART_PENDING`]).
/// With [`RestartMode::Skip`] the user restarts it, and no marker is kept.
fn restart_if_needed(opts: &Options, layout: &Layout, config_changed: bool) -> Result<bool, InstallError> {
    let marker = opts.host.path(RESTART_PENDING);
    let skip = opts.restart == RestartMode::Skip;
    if !config_changed && (skip || !marker.exists()) {
        tracing::info!("containerd's config is as wanted and loaded; no restart");
        return Ok(false);
    }
    if !skip {
        files::write_atomic(&marker, b"containerd has not loaded the wasmkube runtime change yet\n", 0o644)?;
    }
    let target = restart::Target {
        host: opts.host.clone(),
        unit: opts.restart_unit.clone().unwrap_or_else(|| layout::restart_unit(&opts.host, layout.distro)),
        config: layout.containerd_config(),
    };
    let restarted = restart::restart(opts.restart, &target)?;
    if restarted {
        files::remove_optional(&marker)?;
    }
    Ok(restarted)
}

/// Where the drop-in goes when the config at `config_path` imports a glob that covers it.
fn drop_in_for(host: &Host, config_path: &Path, imports: &[String]) -> Option<PathBuf> {
    let config_dir = config_path.parent().unwrap_or(Path::new("/"));
    imports.iter().find_map(|import| {
        let import = Path::new(import);
        let full = if import.is_absolute() { import.to_path_buf() } else { config_dir.join(import) };
        let (dir, pattern) = (full.parent()?, full.file_name()?.to_str()?);
        let plain_dir = !dir.to_string_lossy().contains(['*', '?', '[']);
        (plain_dir && config::glob_match(pattern, DROP_IN_NAME) && host.path(dir).is_dir())
            .then(|| dir.join(DROP_IN_NAME))
    })
}

fn config_error<'a>(path: &'a Path) -> impl FnOnce(config::ConfigError) -> InstallError + 'a {
    move |source| InstallError::Config { path: path.to_path_buf(), source }
}

/// Adds the runtime; true when a file changed.
fn add_to_config(
    opts: &Options,
    layout: &Layout,
    containerd_version: impl Fn() -> Option<String>,
    report: &mut Report,
) -> Result<bool, InstallError> {
    let host = &opts.host;
    let detected_version =
        || opts.config_version.or_else(|| containerd_version().as_deref().and_then(config::version_for_containerd));
    match &layout.target {
        ConfigTarget::File(path) => {
            let full = host.path(path);
            let original = files::read_optional(&full)?;
            let text = original.clone().unwrap_or_default();
            let doc = config::parse(&text).map_err(config_error(&full))?;
            let version = match config::version_of(&doc).map_err(config_error(&full))? {
                Some(v) => v,
                None => detected_version().ok_or_else(|| InstallError::UnknownVersion(full.clone()))?,
            };
            if let Some(drop_in) = drop_in_for(host, path, &config::imports_of(&doc)) {
                let content = config::drop_in(version).map_err(config_error(&full))?;
                return write_if_changed(&host.path(drop_in), None, &content, report);
            }
            let new = config::add_runtime(&text, version).map_err(config_error(&full))?;
            write_if_changed(&full, original.as_deref(), &new, report)
        }
        ConfigTarget::Template(dir) => {
            let generated = files::read_optional(&host.path(dir.join("config.toml")))?;
            let version = match generated.as_deref().map(config::parse) {
                Some(Ok(doc)) if config::version_of(&doc).ok().flatten() == Some(ConfigVersion::V3) => {
                    ConfigVersion::V3
                }
                _ => ConfigVersion::V2,
            };
            let full = host.path(dir.join(template_name(version)));
            let original = files::read_optional(&full)?;
            let new = config::add_template_block(original.as_deref(), version);
            write_if_changed(&full, original.as_deref(), &new, report)
        }
        ConfigTarget::DropInDir(dir) => {
            // k0s merges the CRI section of drop-ins into its containerd 1.x (version 2) config.
            let version = detected_version().unwrap_or(ConfigVersion::V2);
            let full = host.path(dir.join(DROP_IN_NAME));
            let content = config::drop_in(version).map_err(config_error(&full))?;
            write_if_changed(&full, None, &content, report)
        }
    }
}

/// k3s/rke2 read `config-v3.toml.tmpl` for containerd 2.x and `config.toml.tmpl` before.
fn template_name(version: ConfigVersion) -> &'static str {
    match version {
        ConfigVersion::V3 => "config-v3.toml.tmpl",
        _ => "config.toml.tmpl",
    }
}

fn write_if_changed(path: &Path, original: Option<&str>, new: &str, report: &mut Report) -> Result<bool, InstallError> {
    let current = match original {
        Some(text) => Some(text.to_string()),
        None => files::read_optional(path)?,
    };
    if current.as_deref() == Some(new) {
        return Ok(false);
    }
    files::replace_text(path, original, new)?;
    tracing::info!(path = %path.display(), "written");
    report.changed.push(path.to_path_buf());
    Ok(true)
}

/// Removes the runtime; true when a file changed.
fn remove_from_config(host: &Host, layout: &Layout, report: &mut Report) -> Result<bool, InstallError> {
    let mut changed = false;
    match &layout.target {
        ConfigTarget::File(path) => {
            let full = host.path(path);
            let Some(text) = files::read_optional(&full)? else {
                return Ok(false);
            };
            let doc = config::parse(&text).map_err(config_error(&full))?;
            if let Some(drop_in) = drop_in_for(host, path, &config::imports_of(&doc)) {
                changed |= remove_file(host.path(drop_in), report)?;
            }
            let new = config::remove_runtime(&text).map_err(config_error(&full))?;
            if new != text {
                files::replace_text(&full, Some(&text), &new)?;
                report.changed.push(full.clone());
                changed = true;
            }
            files::drop_backup_if_restored(&full)?;
        }
        ConfigTarget::Template(dir) => {
            for version in [ConfigVersion::V2, ConfigVersion::V3] {
                let full = host.path(dir.join(template_name(version)));
                let Some(text) = files::read_optional(&full)? else {
                    continue;
                };
                match config::remove_template_block(&text) {
                    None => changed |= remove_file(full.clone(), report)?,
                    Some(new) if new != text => {
                        files::replace_text(&full, Some(&text), &new)?;
                        report.changed.push(full.clone());
                        changed = true;
                    }
                    Some(_) => {}
                }
                files::drop_backup_if_restored(&full)?;
            }
        }
        ConfigTarget::DropInDir(dir) => changed |= remove_file(host.path(dir.join(DROP_IN_NAME)), report)?,
    }
    Ok(changed)
}

fn remove_file(path: PathBuf, report: &mut Report) -> Result<bool, InstallError> {
    let removed = files::remove_optional(&path)?;
    if removed {
        report.changed.push(path);
    }
    Ok(removed)
}
