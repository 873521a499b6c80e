//! The file layout of one private containerd, all under its temp dir.

use std::path::{Path, PathBuf};

/// Prefix of every private containerd's temp dir (stale ones are found by it).
pub const DIR_PREFIX: &str = "wasmkube-ctrd-";

/// Every path one private containerd uses.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The temp dir holding everything else.
    pub base: PathBuf,
}

impl Dirs {
    /// The layout under `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Dirs { base: base.into() }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.at("containerd.sock")
    }
    /// containerd's ttrpc socket.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.at("containerd.sock.ttrpc")
    }
    /// The generated config.toml.
    pub fn config(&self) -> PathBuf {
        self.at("config.toml")
    }
    /// containerd's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.at("containerd.log")
    }
    /// PID of the containerd process.
    pub fn containerd_pid(&self) -> PathBuf {
        self.at("containerd.pid")
    }
    /// PID of the test process that owns this instance (stale when it is gone).
    pub fn owner_pid(&self) -> PathBuf {
        self.at("owner.pid")
    }
    /// Marker of a dir kept for debugging, which stale cleanup leaves alone.
    pub fn kept_marker(&self) -> PathBuf {
        self.at("KEPT")
    }
    /// containerd `root`.
    pub fn root(&self) -> PathBuf {
        self.at("root")
    }
    /// containerd `state`.
    pub fn state(&self) -> PathBuf {
        self.at("state")
    }
    /// containerd `temp` (temporary mounts while unpacking).
    pub fn tmp(&self) -> PathBuf {
        self.at("tmp")
    }
    /// The NRI socket of containerd 2.x (default `/var/run/nri/nri.sock`, one for the whole host).
    pub fn nri_socket(&self) -> PathBuf {
        self.at("nri.sock")
    }
    /// The `opt` plugin's dir (default `/opt/containerd`).
    pub fn opt(&self) -> PathBuf {
        self.at("opt")
    }
    /// runc state root used by the CRI runc runtime.
    pub fn runc_root(&self) -> PathBuf {
        self.at("runc")
    }
    /// CNI network configs.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.at("cni/net.d")
    }
    /// host-local IPAM state.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.at("cni/ipam")
    }
    /// CRI registry hosts config (`hosts.toml` per registry).
    pub fn registry_config_dir(&self) -> PathBuf {
        self.at("certs.d")
    }
    /// FIFOs of `ctr run`/`task start`/`task exec` (ctr's default is /run/containerd/fifo).
    pub fn fifo(&self) -> PathBuf {
        self.at("fifo")
    }
    /// Scratch space for tests: image tarballs, built binaries.
    pub fn work(&self) -> PathBuf {
        self.at("work")
    }
    /// Where the overlay probe mounts.
    pub fn overlay_probe(&self) -> PathBuf {
        self.at("overlay-probe")
    }
    /// Task bundles of runtime v2 shims, one dir per namespace.
    pub fn task_bundles(&self) -> PathBuf {
        self.state().join("io.containerd.runtime.v2.task")
    }

    /// Dirs created before containerd starts.
    pub fn to_create(&self) -> Vec<PathBuf> {
        vec![
            self.root(),
            self.state(),
            self.tmp(),
            self.opt(),
            self.runc_root(),
            self.cni_conf_dir(),
            self.cni_ipam_dir(),
            self.registry_config_dir(),
            self.work(),
            self.fifo(),
        ]
    }

    /// The random suffix of the temp dir, used to name per-instance host objects.
    pub fn suffix(&self) -> String {
        let name = self.base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.strip_prefix(DIR_PREFIX).unwrap_or(&name).to_string()
    }

    /// True when `path` is this instance's dir or inside it.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.base)
    }
}
