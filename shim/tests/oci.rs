//! `oci://` components pulled by the shim from a real registry (Debian's docker-registry on 127.0.0.1),
//! driven through CRI like the kubelet drives it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use oci_client::secrets::RegistryAuth;
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::log::stream_lines;
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient, Status};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::registry::{Credentials, Registry};
use wasmkube_harness::{guests, require_root, wait_until, ContainerdOpts, PrivateContainerd};
use wasmkube_oci::{parse_oci_ref, Puller};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmkube-v1");
const STATE_TIMEOUT: Duration = Duration::from_secs(60);
const HELLO_LINE: &str = "hello from a WebAssembly component";

/// A private containerd whose shim trusts `registry` over plain HTTP; its cache is the harness's.
struct Node {
    ctrd: PrivateContainerd,
    cri: CriClient,
    cache_dir: PathBuf,
}

fn node(subnet: &str, registry: &Registry) -> Result<Node> {
    let mut opts = ContainerdOpts::with_shim(SHIM);
    opts.cni = Some(CniOpts { subnet: subnet.into() });
    opts.insecure_registries.push(registry.host());
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    let cri = ctrd.cri()?;
    wait_until("CRI sees the imported image", Duration::from_secs(10), || {
        cri.image_id(PAUSE_IMAGE).is_ok_and(|id| id.is_some())
    })?;
    let cache_dir = ctrd.shim_cache_dir();
    Ok(Node { ctrd, cri, cache_dir })
}

/// What one run of a component ended with.
struct Run {
    status: Status,
    termination: String,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Node {
    /// Runs `reference` as the only container of a new pod (placeholder image: the pause image) to its end.
    fn run(&self, name: &str, reference: &str, mounts: Vec<(String, PathBuf, bool)>) -> Result<Run> {
        let pod = self.cri.run_pod_sandbox(name, WASMKUBE_HANDLER)?;
        let id = self.create(&pod, name, reference, mounts)?;
        self.cri.start_container(&id)?;
        let run = self.finish(&id, name)?;
        self.cri.stop_pod_sandbox(&pod.id)?;
        self.cri.remove_pod_sandbox(&pod.id)?;
        Ok(run)
    }

    fn create(
        &self,
        pod: &wasmkube_harness::cri::Pod,
        name: &str,
        reference: &str,
        mut mounts: Vec<(String, PathBuf, bool)>,
    ) -> Result<String> {
        let termination = self.termination_file(name);
        std::fs::write(&termination, b"")?;
        mounts.push(("/dev/termination-log".into(), termination, false));
        let spec = ContainerSpec {
            name: name.into(),
            image: PAUSE_IMAGE.into(),
            command: vec![reference.into()],
            mounts,
            ..Default::default()
        };
        Ok(self.cri.create_container(pod, &spec)?)
    }

    fn finish(&self, id: &str, name: &str) -> Result<Run> {
        let status = self.cri.wait_container_state(id, ContainerState::Exited, STATE_TIMEOUT)?;
        let _ = wait_until("the CRI log copier catches up", Duration::from_secs(5), || {
            self.cri.read_log(id).is_ok_and(|l| !l.is_empty())
        });
        let log = self.cri.read_log(id)?;
        let owned = |stream| stream_lines(&log, stream).iter().map(|s| s.to_string()).collect();
        let termination = std::fs::read_to_string(self.termination_file(name))?;
        Ok(Run { status, termination, stdout: owned("stdout"), stderr: owned("stderr") })
    }

    fn termination_file(&self, name: &str) -> PathBuf {
        self.ctrd.work_dir().join(format!("{name}.termination-log"))
    }

    fn daemon_log(&self) -> String {
        let path = self.ctrd.dirs().state().join("wasmkube").join(CRI_NAMESPACE).join("daemon.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.cache_dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }
}

fn assert_ran(run: &Run, what: &str) {
    assert_eq!(run.status.exit_code, 0, "{what}: {:?} stderr {:?}", run.status, run.stderr);
    assert_eq!(run.stdout.first().map(String::as_str), Some(HELLO_LINE), "{what}: {:?}", run.stdout);
}

fn assert_failed_with(run: &Run, what: &str, needles: &[&str]) {
    assert_eq!(run.status.exit_code, 126, "{what}: {:?}", run.status);
    for needle in needles {
        assert!(run.termination.contains(needle), "{what}: termination message {:?} lacks {needle:?}", run.termination);
        assert!(
            run.stderr.iter().any(|l| l.starts_with("wasmkube:") && l.contains(needle)),
            "{what}: stderr {:?} lacks {needle:?}",
            run.stderr
        );
    }
}

/// Pushes `wasm` to `reference` with the code `wasmkube push` uses; returns the manifest and layer digests.
fn push(reference: &str, wasm: Vec<u8>, auth: RegistryAuth) -> Result<(String, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = parse_oci_ref(reference)?;
    let puller = Puller::new(vec![parsed.resolve_registry().to_string()], Duration::from_secs(30));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pushed = rt.block_on(wasmkube_oci::push::push_component(&puller, &parsed, &auth, wasm))?;
    Ok((pushed.manifest_digest, pushed.layer_digest))
}

/// Pushes an OCI index to `reference` whose linux/amd64 entry (first) is `decoy` and whose wasip2/wasm entry
/// is `manifest`; returns the index digest.
fn push_index(reference: &str, decoy: &str, manifest: &str) -> Result<String> {
    let parsed = parse_oci_ref(reference)?;
    let puller = Puller::new(vec![parsed.resolve_registry().to_string()], Duration::from_secs(30));
    let client = puller.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let auth = RegistryAuth::Anonymous;
    let entry = |digest: &str, arch: &str, os: &str| -> Result<serde_json::Value> {
        let at = parsed.clone_with_digest(digest.into());
        let (bytes, _) = rt.block_on(client.pull_manifest_raw(&at, &auth, wasmkube_oci::media::MANIFESTS))?;
        Ok(serde_json::json!({ "mediaType": wasmkube_oci::media::OCI_MANIFEST, "digest": digest,
            "size": bytes.len(), "platform": { "architecture": arch, "os": os } }))
    };
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": wasmkube_oci::media::OCI_INDEX,
        "manifests": [entry(decoy, "amd64", "linux")?, entry(manifest, "wasm", "wasip2")?] })
    .to_string();
    let content_type = http::HeaderValue::from_static(wasmkube_oci::media::OCI_INDEX);
    rt.block_on(client.push_manifest_raw(&parsed, index.clone().into_bytes(), content_type))?;
    Ok(wasmkube_oci::sha256_digest(index.as_bytes()))
}

#[test]
fn components_are_pulled_by_tag_and_digest_cached_verified_and_retried() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut registry = Registry::start()?;
    let node = node("10.88.41.0/24", &registry)?;
    let host = registry.host();
    let hello = std::fs::read(guests::guest_wasm("hello-cli")?)?;
    let tag = format!("oci://{host}/apps/hello:v1");
    let (manifest, layer) = push(&tag, hello.clone(), RegistryAuth::Anonymous)?;
    let by_digest = format!("oci://{host}/apps/hello@{manifest}");

    // A digest the registry does not have: a clear error naming the reference.
    let missing = format!("oci://{host}/apps/hello@sha256:{}", "0".repeat(64));
    let run = node.run("missing", &missing, vec![])?;
    assert_failed_with(&run, "unknown digest", &["cannot pull component", &missing]);

    // Registry unreachable: the container fails with the reason; the next start retries and runs.
    registry.stop();
    let run = node.run("unreachable", &tag, vec![])?;
    assert_failed_with(&run, "registry stopped", &["cannot pull component", &host]);
    registry.restart()?;

    // Five pods created at once pull the component's blob once.
    let (shared, tag_ref) = (&node, &tag);
    std::thread::scope(|s| -> Result<()> {
        let runs: Vec<_> = (0..5).map(|i| s.spawn(move || shared.run(&format!("many-{i}"), tag_ref, vec![]))).collect();
        for (i, handle) in runs.into_iter().enumerate() {
            let run = handle.join().map_err(|_| anyhow::anyhow!("pod thread {i} panicked"))??;
            assert_ran(&run, &format!("pod {i} of five"));
        }
        Ok(())
    })?;
    assert_eq!(registry.blob_gets(&layer), 1, "one blob download for five pods:\n{}", registry.log());
    assert!(node.blob_path(&layer).is_file(), "the blob is in the node cache");
    let compiled = std::fs::read_dir(node.cache_dir.join("compiled"))?.count();
    assert_eq!(compiled, 2, "precompiled code and its checksum are cached");

    // A digest reference starts from the cache with the registry stopped.
    registry.stop();
    assert_ran(&node.run("offline", &by_digest, vec![])?, "digest with registry stopped");

    // A corrupted cache entry is detected, removed and fetched again.
    std::fs::write(node.blob_path(&layer), b"corrupted")?;
    registry.restart()?;
    assert_ran(&node.run("refetch", &by_digest, vec![])?, "after corruption");
    assert_eq!(registry.blob_gets(&layer), 2, "the corrupted blob was fetched again");
    assert_eq!(std::fs::read(node.blob_path(&layer))?, hello, "the cache holds the good bytes again");
    assert!(node.daemon_log().contains("damaged cache entry removed"), "{}", node.daemon_log());

    // An image index: the wasip2/wasm entry is chosen, not the first (a decoy that is no component).
    let (decoy, _) = push(&format!("oci://{host}/apps/hello:decoy"), b"#!/bin/sh\n".to_vec(), RegistryAuth::Anonymous)?;
    let index = push_index(&format!("oci://{host}/apps/hello:multi"), &decoy, &manifest)?;
    assert_ran(&node.run("index", &format!("oci://{host}/apps/hello@{index}"), vec![])?, "image index");

    // An image pushed by a foreign tool: a plain OCI image whose one tar layer holds the .wasm file.
    let layout = node.ctrd.work_dir().join("plain-layout");
    component_image_at("plain", hello, "/app.wasm").write_dir(&layout)?;
    registry.skopeo_copy_layout(&layout, "apps/plain:v1")?;
    assert_ran(&node.run("foreign", &format!("oci://{host}/apps/plain:v1"), vec![])?, "skopeo-pushed image");

    // A tag this node resolved starts from the cache while its registry is down, and says so in the log.
    registry.stop();
    let run = node.run("tag-offline", &tag, vec![])?;
    assert_ran(&run, "tag with registry stopped");
    let warning = run.stderr.first().map(String::as_str).unwrap_or_default();
    assert!(warning.starts_with("wasmkube: warning: registry") && warning.contains("cannot be reached"), "{warning}");
    assert!(warning.contains(&manifest), "the log names the digest that runs: {warning}");

    // A registry that answers is always asked: the tag moved, and the next pod runs what it names now.
    registry.restart()?;
    let (moved, _) = push(&tag, std::fs::read(guests::guest_wasm("probe")?)?, RegistryAuth::Anonymous)?;
    let run = node.run("tag-moved", &tag, vec![])?;
    assert_eq!(run.status.exit_code, 0, "{:?} {:?}", run.status, run.stderr);
    assert!(run.stdout.first().is_some_and(|l| l.starts_with("env: ")), "the new component ran: {:?}", run.stdout);
    assert!(run.stderr.iter().all(|l| !l.contains("warning")), "{:?}", run.stderr);
    registry.stop();
    let run = node.run("tag-moved-offline", &tag, vec![])?;
    assert!(run.stdout.first().is_some_and(|l| l.starts_with("env: ")), "{:?}", run.stdout);
    assert!(run.stderr.first().is_some_and(|l| l.contains(&moved)), "the newest digest: {:?}", run.stderr);
    Ok(())
}

#[test]
fn pull_secrets_authenticate_and_never_leak() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let password = "pw-Zq81-never-shown";
    let creds = Credentials { username: "puller".into(), password: password.into() };
    let registry = Registry::start_with(Some(creds.clone()))?;
    let node = node("10.88.42.0/24", &registry)?;
    let host = registry.host();
    let hello = std::fs::read(guests::guest_wasm("hello-cli")?)?;
    let tag = format!("oci://{host}/private/hello:v1");
    push(&tag, hello, RegistryAuth::Basic(creds.username.clone(), password.into()))?;

    // No secret: the registry's refusal, clearly.
    let run = node.run("anonymous", &tag, vec![])?;
    assert_failed_with(&run, "no secret", &["cannot pull component", &host]);

    // A wrong secret: refused, and neither password shows anywhere.
    let wrong_password = "wrong-Kx42-secret";
    let wrong = secret_dir(&node, "wrong", &host, "puller", wrong_password)?;
    let mount =
        |dir: &Path, name: &str| vec![(format!("/var/run/wasmkube/pull-secrets/{name}"), dir.to_path_buf(), true)];
    let run = node.run("wrong-secret", &tag, mount(&wrong, "wrong"))?;
    assert_failed_with(&run, "wrong secret", &["cannot pull component"]);
    let everything = format!("{}{:?}{}", run.termination, run.stderr, node.daemon_log());
    assert!(!everything.contains(wrong_password), "the secret leaked: {everything}");

    // The right secret: it runs.
    let right = secret_dir(&node, "regcred", &host, "puller", password)?;
    let run = node.run("right-secret", &tag, mount(&right, "regcred"))?;
    assert_ran(&run, "right secret");
    let everything = format!("{}{:?}{:?}{}", run.termination, run.stdout, run.stderr, node.daemon_log());
    assert!(!everything.contains(password), "the secret leaked: {everything}");
    let cached = walk_contents(&node.cache_dir)?;
    assert!(!cached.windows(password.len()).any(|w| w == password.as_bytes()), "the secret is in the cache");
    Ok(())
}

/// A pull secret as the kubelet mounts it: a directory with `.dockerconfigjson`.
fn secret_dir(node: &Node, name: &str, host: &str, user: &str, password: &str) -> Result<PathBuf> {
    let dir = node.ctrd.work_dir().join(format!("secret-{name}"));
    std::fs::create_dir_all(&dir)?;
    let json = format!(r#"{{"auths":{{"{host}":{{"username":"{user}","password":"{password}"}}}}}}"#);
    std::fs::write(dir.join(".dockerconfigjson"), json)?;
    Ok(dir)
}

/// Every file's bytes under `dir`, concatenated.
fn walk_contents(dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk_contents(&path)?);
        } else {
            out.extend(std::fs::read(&path)?);
        }
    }
    Ok(out)
}
