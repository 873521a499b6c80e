//! Where a node's containerd config lives (plain containerd, k3s, rke2, microk8s, k0s) and which unit runs it.

use std::path::{Path, PathBuf};

/// The host's file system as seen from the installer (`/host` in the DaemonSet, `/` on the node itself).
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// A host whose `/` is `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    /// Whether the installer runs on the host's own file system (not in a container).
    pub fn is_own_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where the host path `p` (absolute on the host) is from here.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

/// The Kubernetes distribution, by the containerd config it brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// containerd installed as a system service (kubeadm, kind, managed node pools).
    Containerd,
    /// k3s: containerd config rendered from a template.
    K3s,
    /// rke2: as k3s, under `/var/lib/rancher/rke2`.
    Rke2,
    /// microk8s: the snap's containerd template.
    MicroK8s,
    /// k0s: drop-ins in `/etc/k0s/containerd.d`.
    K0s,
}

/// How the runtime entry gets into containerd's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigTarget {
    /// A TOML config edited in place, or a drop-in next to it when its `imports` cover one (host path).
    File(PathBuf),
    /// A directory of generated `config.toml` where k3s/rke2 read `config.toml.tmpl` (host path).
    Template(PathBuf),
    /// A directory whose `*.toml` files containerd imports (host path).
    DropInDir(PathBuf),
}

/// The detected layout of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Which distribution.
    pub distro: Distro,
    /// What to edit.
    pub target: ConfigTarget,
}

impl Layout {
    /// Host path of the config containerd is started with: the edited file, or the one k3s/rke2 generate
    /// from the template; unknown for a drop-in directory.
    pub fn containerd_config(&self) -> Option<PathBuf> {
        match &self.target {
            ConfigTarget::File(path) => Some(path.clone()),
            ConfigTarget::Template(dir) => Some(dir.join("config.toml")),
            ConfigTarget::DropInDir(_) => None,
        }
    }
}

/// File name of every drop-in we write.
pub const DROP_IN_NAME: &str = "wasmkube.toml";
/// containerd's default config.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
const K3S_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
const RKE2_DIR: &str = "/var/lib/rancher/rke2/agent/etc/containerd";
const MICROK8S_TEMPLATE: &str = "/var/snap/microk8s/current/args/containerd-template.toml";
const K0S_DROP_INS: &str = "/etc/k0s/containerd.d";

/// The layout of `host`; `explicit` (a host path given by the user) wins: a `.tmpl` file or a directory
/// is taken as a template or drop-in directory, anything else as a config file.
pub fn detect(host: &Host, explicit: Option<&Path>) -> Layout {
    if let Some(path) = explicit {
        let target = if path.extension().is_some_and(|e| e == "tmpl") {
            ConfigTarget::Template(path.parent().unwrap_or(Path::new("/")).to_path_buf())
        } else if host.path(path).is_dir() {
            ConfigTarget::DropInDir(path.to_path_buf())
        } else {
            ConfigTarget::File(path.to_path_buf())
        };
        return Layout { distro: Distro::Containerd, target };
    }
    let exists = |p: &str| host.path(p).exists();
    let (distro, target) = if exists(RKE2_DIR) {
        (Distro::Rke2, ConfigTarget::Template(RKE2_DIR.into()))
    } else if exists(K3S_DIR) {
        (Distro::K3s, ConfigTarget::Template(K3S_DIR.into()))
    } else if exists(MICROK8S_TEMPLATE) {
        (Distro::MicroK8s, ConfigTarget::File(MICROK8S_TEMPLATE.into()))
    } else if exists(K0S_DROP_INS) {
        (Distro::K0s, ConfigTarget::DropInDir(K0S_DROP_INS.into()))
    } else {
        (Distro::Containerd, ConfigTarget::File(CONTAINERD_CONFIG.into()))
    };
    Layout { distro, target }
}

/// The systemd unit that runs containerd for `distro` (the agent unit where a node may be either).
pub fn restart_unit(host: &Host, distro: Distro) -> String {
    let installed = |unit: &str| {
        ["/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system", "/usr/local/lib/systemd/system"]
            .iter()
            .any(|dir| host.path(Path::new(dir).join(format!("{unit}.service"))).exists())
    };
    let first_installed =
        |units: [&str; 2]| units.iter().find(|u| installed(u)).copied().unwrap_or(units[0]).to_string();
    match distro {
        Distro::Containerd => "containerd".into(),
        Distro::K3s => first_installed(["k3s-agent", "k3s"]),
        Distro::Rke2 => first_installed(["rke2-agent", "rke2-server"]),
        Distro::MicroK8s => "snap.microk8s.daemon-containerd".into(),
        Distro::K0s => first_installed(["k0sworker", "k0scontroller"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(paths: &[&str]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        for p in paths {
            let full = host.path(p);
            if p.ends_with('/') {
                std::fs::create_dir_all(full).unwrap();
            } else {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(full, "").unwrap();
            }
        }
        (dir, host)
    }

    #[test]
    fn host_paths_are_under_the_root() {
        assert_eq!(Host::new("/host").path("/etc/x"), Path::new("/host/etc/x"));
        assert_eq!(Host::new("/").path("/etc/x"), Path::new("/etc/x"));
        assert!(Host::new("/").is_own_root());
        assert!(!Host::new("/host").is_own_root());
    }

    #[test]
    fn each_distribution_is_recognised() {
        let cases: [(&[&str], Distro, ConfigTarget); 5] = [
            (&[], Distro::Containerd, ConfigTarget::File(CONTAINERD_CONFIG.into())),
            (
                &["/var/lib/rancher/k3s/agent/etc/containerd/config.toml"],
                Distro::K3s,
                ConfigTarget::Template(K3S_DIR.into()),
            ),
            (&["/var/lib/rancher/rke2/agent/etc/containerd/"], Distro::Rke2, ConfigTarget::Template(RKE2_DIR.into())),
            (&[MICROK8S_TEMPLATE], Distro::MicroK8s, ConfigTarget::File(MICROK8S_TEMPLATE.into())),
            (&["/etc/k0s/containerd.d/"], Distro::K0s, ConfigTarget::DropInDir(K0S_DROP_INS.into())),
        ];
        for (paths, distro, target) in cases {
            let (_dir, host) = host_with(paths);
            assert_eq!(detect(&host, None), Layout { distro, target }, "{paths:?}");
        }
    }

    #[test]
    fn an_explicit_path_wins() {
        let (_dir, host) = host_with(&["/var/lib/rancher/k3s/agent/etc/containerd/", "/opt/dropins/"]);
        assert_eq!(detect(&host, Some(Path::new("/opt/c.toml"))).target, ConfigTarget::File("/opt/c.toml".into()));
        assert_eq!(
            detect(&host, Some(Path::new("/opt/dropins"))).target,
            ConfigTarget::DropInDir("/opt/dropins".into())
        );
        assert_eq!(detect(&host, Some(Path::new("/x/config.toml.tmpl"))).target, ConfigTarget::Template("/x".into()));
    }

    #[test]
    fn the_config_containerd_reads() {
        let layout = |target| Layout { distro: Distro::Containerd, target };
        assert_eq!(
            layout(ConfigTarget::File(CONTAINERD_CONFIG.into())).containerd_config(),
            Some(PathBuf::from(CONTAINERD_CONFIG))
        );
        assert_eq!(
            layout(ConfigTarget::Template(K3S_DIR.into())).containerd_config(),
            Some(Path::new(K3S_DIR).join("config.toml"))
        );
        assert_eq!(layout(ConfigTarget::DropInDir(K0S_DROP_INS.into())).containerd_config(), None);
    }

    #[test]
    fn restart_units_follow_what_is_installed() {
        let (_dir, host) = host_with(&[]);
        assert_eq!(restart_unit(&host, Distro::Containerd), "containerd");
        assert_eq!(restart_unit(&host, Distro::K3s), "k3s-agent");
        let (_dir, host) =
            host_with(&["/etc/systemd/system/k3s.service", "/usr/lib/systemd/system/rke2-server.service"]);
        assert_eq!(restart_unit(&host, Distro::K3s), "k3s");
        assert_eq!(restart_unit(&host, Distro::Rke2), "rke2-server");
        assert_eq!(restart_unit(&host, Distro::MicroK8s), "snap.microk8s.daemon-containerd");
    }
}
