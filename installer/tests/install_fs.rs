//! `install` and `uninstall` on a host root in a temp dir, one node layout each (containerd left alone:
//! `--restart skip`): which files are written, kept, backed up and removed.

use std::path::{Path, PathBuf};

use wasmkube_node_installer::layout::Host;
use wasmkube_node_installer::restart::RestartMode;
use wasmkube_node_installer::{install, uninstall, InstallError, Options};

struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
    opts: Options,
}

impl Node {
    fn new(files: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        for (path, text) in files {
            let full = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            if path.ends_with('/') {
                std::fs::create_dir_all(&full).unwrap();
            } else {
                std::fs::write(&full, text).unwrap();
            }
        }
        let shim = dir.path().join("containerd-shim-wasmkube-v1");
        std::fs::write(&shim, b"\x7fELF shim").unwrap();
        let opts = Options {
            host: Host::new(&root),
            containerd_config: None,
            config_version: None,
            shim_source: shim,
            bin_dir: "/usr/local/bin".into(),
            shim_config_source: None,
            restart: RestartMode::Skip,
            restart_unit: None,
        };
        Node { _dir: dir, root, opts }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }

    fn install(&self, containerd_version: Option<&str>) -> Result<Vec<PathBuf>, InstallError> {
        install(&self.opts, || containerd_version.map(str::to_string)).map(|r| r.changed)
    }

    /// Every file under the host root, relative, sorted.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(format!("/{}", p.strip_prefix(base).unwrap().display()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

const V2: &str = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n";

#[test]
fn a_plain_config_is_edited_with_a_backup_and_restored() {
    let node = Node::new(&[("/etc/containerd/config.toml", V2)]);
    node.install(None).unwrap();
    let installed = node.read("/etc/containerd/config.toml").unwrap();
    assert!(installed.starts_with(V2) && installed.contains("io.containerd.wasmkube.v1"), "{installed}");
    assert_eq!(node.read("/etc/containerd/config.toml.wasmkube-backup").as_deref(), Some(V2));
    assert!(node.path("/usr/local/bin/containerd-shim-wasmkube-v1").is_file());
    // A second run only refreshes the shim.
    assert_eq!(node.install(None).unwrap(), [node.path("/usr/local/bin/containerd-shim-wasmkube-v1")]);
    uninstall(&node.opts).unwrap();
    assert_eq!(node.files(), ["/etc/containerd/config.toml"]);
    assert_eq!(node.read("/etc/containerd/config.toml").as_deref(), Some(V2));
}

#[test]
fn imports_that_cover_a_drop_in_get_one_and_the_main_file_stays() {
    let main = "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n";
    let node = Node::new(&[("/etc/containerd/config.toml", main), ("/etc/containerd/conf.d/", "")]);
    node.install(None).unwrap();
    assert_eq!(node.read("/etc/containerd/config.toml").as_deref(), Some(main));
    let drop_in = node.read("/etc/containerd/conf.d/wasmkube.toml").unwrap();
    assert!(drop_in.contains("version = 3") && drop_in.contains("io.containerd.cri.v1.runtime"), "{drop_in}");
    uninstall(&node.opts).unwrap();
    assert_eq!(node.files(), ["/etc/containerd/config.toml"]);
}

#[test]
fn imports_of_single_files_mean_the_main_file_is_edited() {
    let main = "version = 2\nimports = [\"/etc/containerd/other.toml\"]\n";
    let node = Node::new(&[("/etc/containerd/config.toml", main)]);
    node.install(None).unwrap();
    assert!(node.read("/etc/containerd/config.toml").unwrap().contains("runtimes.wasmkube"));
    uninstall(&node.opts).unwrap();
    assert_eq!(node.read("/etc/containerd/config.toml").as_deref(), Some(main));
}

#[test]
fn a_missing_config_takes_the_installed_containerd_layout_or_is_refused() {
    let node = Node::new(&[]);
    let err = node.install(None).unwrap_err();
    assert!(err.to_string().contains("pass --config-version 2 (containerd 1.x) or 3 (containerd 2.x)"), "{err}");
    node.install(Some("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7")).unwrap();
    let written = node.read("/etc/containerd/config.toml").unwrap();
    assert!(written.starts_with("version = 3\n") && written.contains("io.containerd.cri.v1.runtime"), "{written}");
}

#[test]
fn k3s_gets_a_template_that_uninstall_deletes() {
    let dir = "/var/lib/rancher/k3s/agent/etc/containerd";
    let node = Node::new(&[(&format!("{dir}/config.toml"), "version = 3\n")]);
    node.install(None).unwrap();
    let template = node.read(&format!("{dir}/config-v3.toml.tmpl")).unwrap();
    assert!(template.starts_with("{{ template \"base\" . }}") && template.contains("io.containerd.cri.v1.runtime"));
    assert!(node.read(&format!("{dir}/config.toml.tmpl")).is_none(), "containerd 2.x k3s reads the v3 template");
    uninstall(&node.opts).unwrap();
    assert_eq!(node.files(), [format!("{dir}/config.toml")]);
}

#[test]
fn rke2_keeps_a_users_template_around_our_block() {
    let dir = "/var/lib/rancher/rke2/agent/etc/containerd";
    let user = "{{ template \"base\" . }}\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/x\"\n";
    let node =
        Node::new(&[(&format!("{dir}/config.toml"), "version = 2\n"), (&format!("{dir}/config.toml.tmpl"), user)]);
    node.install(None).unwrap();
    assert!(node.read(&format!("{dir}/config.toml.tmpl")).unwrap().contains("# BEGIN wasmkube"));
    uninstall(&node.opts).unwrap();
    assert_eq!(node.read(&format!("{dir}/config.toml.tmpl")).as_deref(), Some(user));
    assert!(node.read(&format!("{dir}/config.toml.tmpl.wasmkube-backup")).is_none());
}

#[test]
fn k0s_gets_a_drop_in() {
    let node = Node::new(&[("/etc/k0s/containerd.d/", "")]);
    node.install(Some("containerd containerd.io v1.7.27 05044ec0")).unwrap();
    assert!(node.read("/etc/k0s/containerd.d/wasmkube.toml").unwrap().contains("io.containerd.grpc.v1.cri"));
    uninstall(&node.opts).unwrap();
    assert_eq!(node.files(), Vec::<String>::new());
}

#[test]
fn the_shim_config_is_installed_and_removed() {
    let mut node = Node::new(&[("/etc/containerd/config.toml", V2)]);
    let src = node.root.parent().unwrap().join("shim.toml");
    std::fs::write(&src, "cache_max_bytes = 1\n").unwrap();
    node.opts.shim_config_source = Some(src);
    node.install(None).unwrap();
    assert_eq!(node.read("/etc/wasmkube/shim.toml").as_deref(), Some("cache_max_bytes = 1\n"));
    uninstall(&node.opts).unwrap();
    assert!(!node.path("/etc/wasmkube").exists());
}

#[test]
fn an_unknown_version_is_refused_and_nothing_is_written() {
    let node = Node::new(&[("/etc/containerd/config.toml", "version = 9\n")]);
    let err = node.install(None).unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(message.ends_with("/etc/containerd/config.toml: unsupported containerd config version 9 (known: 2 for containerd 1.x, 3 for containerd 2.x)"), "{message}");
    assert_eq!(node.read("/etc/containerd/config.toml").as_deref(), Some("version = 9\n"));
    assert!(node.read("/etc/containerd/config.toml.wasmkube-backup").is_none());
}

#[test]
fn a_failed_restart_is_retried_by_the_next_run() {
    let mut node = Node::new(&[("/etc/containerd/config.toml", V2)]);
    node.opts.restart = RestartMode::Systemctl;
    node.opts.restart_unit = Some("wasmkube-no-such-unit-for-tests".into());
    let err = node.install(None).unwrap_err();
    assert!(matches!(err, InstallError::Restart(_)), "{err}");
    assert!(node.path("/etc/wasmkube/restart-pending").is_file());
    // The config is already edited now; the restart is still owed.
    let err = node.install(None).unwrap_err();
    assert!(err.to_string().contains("run on the node: systemctl restart wasmkube-no-such-unit-for-tests"), "{err}");
    assert!(node.path("/etc/wasmkube/restart-pending").is_file());
}
