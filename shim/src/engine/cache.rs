//! The node cache under `cache_dir`: blobs by digest and precompiled components, bounded in size.
//!
//! ```text
//! <cache_dir>/blobs/sha256/<hex>                       manifest, config or layer bytes
//! <cache_dir>/compiled/<hex>-<engine hash>.cwasm       Engine::precompile_component output
//! <cache_dir>/compiled/<hex>-<engine hash>.cwasm.sha256  sha256 of that file, written after it
//! <cache_dir>/tags/<sha256 of REGISTRY/REPO:TAG>       that key and the manifest digest it last resolved to
//! <cache_dir>/tmp/                                     files being written (then renamed into place)
//! ```
//!
//! Every read is verified: a blob against its digest, a precompiled file against the checksum written
//! next to it by this cache. A damaged entry is removed and treated as a miss. Writes go to `tmp/` and
//! are renamed into place, so a crash never leaves a partial entry under its final name. One daemon
//! serves a node (per containerd namespace); the per-digest locks here are in-process only, and
//! daemons that share a `cache_dir` can at worst download the same blob twice (renames keep entries
//! whole).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::future::BoxFuture;
use wasmkube_oci::{sha256_digest, sha256_digest_of_reader, verify_digest, BlobStore, Error};
use wasmtime::component::Component;
use wasmtime::Engine;

type DigestLock = Arc<tokio::sync::Mutex<()>>;

/// The node's blob and compiled-code cache.
pub struct NodeCache {
    root: PathBuf,
    max_bytes: u64,
    engine_hash: String,
    locks: Mutex<HashMap<String, DigestLock>>,
    pins: Arc<Mutex<HashMap<String, usize>>>,
}

/// Keeps digests from eviction while a task uses them; dropping it releases them.
pub struct Pin {
    digests: Vec<String>,
    pins: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(d);
                }
            }
        }
    }
}

impl NodeCache {
    /// Opens (creating) the cache at `root` for code compiled by `engine`.
    pub fn open(root: &Path, max_bytes: u64, engine: &Engine) -> std::io::Result<Self> {
        for dir in ["blobs/sha256", "compiled", "tags", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            root: root.to_path_buf(),
            max_bytes,
            engine_hash: format!("{:016x}", hasher.finish()),
            locks: Mutex::default(),
            pins: Arc::default(),
        })
    }

    /// Pins `digests` (blobs or components) until the returned guard is dropped.
    pub fn pin(&self, digests: Vec<String>) -> Pin {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for d in &digests {
            *pins.entry(d.clone()).or_default() += 1;
        }
        Pin { digests, pins: self.pins.clone() }
    }

    fn lock_for(&self, key: &str) -> DigestLock {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.root.join("blobs/sha256").join(hex))
    }

    /// The blob `digest` if the cache holds an intact copy; a damaged one is removed.
    pub fn read_blob(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if let Err(e) = verify_digest(digest, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "damaged cache entry removed; it will be fetched again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.blob_path(digest).ok_or_else(|| Error::UnsupportedDigest(digest.to_string()))?;
        self.write_atomically(&path, bytes)?;
        self.evict_except(Some(digest));
        Ok(())
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.as_file().sync_data()?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| Error::io(format!("writing cache entry {}", path.display()), e))
    }

    fn compiled_path(&self, component_digest: &str) -> Option<PathBuf> {
        let hex = component_digest.strip_prefix("sha256:")?;
        Some(self.root.join("compiled").join(format!("{hex}-{}.cwasm", self.engine_hash)))
    }

    /// The component compiled earlier by this engine configuration, if its file is intact.
    pub async fn load_compiled(&self, engine: &Engine, component_digest: &str) -> Option<Component> {
        let path = self.compiled_path(component_digest)?;
        let lock = self.lock_for(&path.display().to_string());
        let _held = lock.lock().await;
        // Hashing and mapping tens of MiB is blocking work: not on the threads that serve other containers.
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || load_compiled_file(&engine, &path)).await.ok().flatten()
    }

    /// Stores precompiled code for `component_digest` and returns its file; `None` when it could not be
    /// stored (logged: the cache is an optimisation).
    pub fn store_compiled(&self, component_digest: &str, serialized: &[u8]) -> Option<PathBuf> {
        let path = self.compiled_path(component_digest)?;
        // The checksum goes last: a file without one is never loaded.
        let stored = self
            .write_atomically(&path, serialized)
            .and_then(|()| self.write_atomically(&checksum_path(&path), sha256_digest(serialized).as_bytes()));
        self.evict_except(Some(component_digest));
        match stored {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "cannot store precompiled component");
                None
            }
        }
    }

    /// Removes least recently used entries that no task pins until the cache fits `cache_max_bytes`,
    /// sparing `keep` (the entry just written for a caller).
    fn evict_except(&self, keep: Option<&str>) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by_key(|e| e.used);
        let pinned: HashSet<String> = self.pins.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            if pinned.contains(&entry.digest) || keep == Some(entry.digest.as_str()) {
                continue;
            }
            tracing::info!(path = %entry.path.display(), size = entry.size, "evicting cache entry");
            if entry.path.extension().is_some_and(|x| x == "cwasm") {
                remove_compiled(&entry.path);
            } else {
                let _ = std::fs::remove_file(&entry.path);
            }
            total = total.saturating_sub(entry.size);
        }
        if total > self.max_bytes {
            tracing::warn!(total, max = self.max_bytes, "cache over its bound: the rest is in use");
        }
    }

    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (dir, compiled) in [("blobs/sha256", false), ("compiled", true)] {
            let Ok(read) = std::fs::read_dir(self.root.join(dir)) else { continue };
            for item in read.flatten() {
                let path = item.path();
                let name = item.file_name().to_string_lossy().into_owned();
                if compiled && !name.ends_with(".cwasm") {
                    continue;
                }
                let Ok(meta) = item.metadata() else { continue };
                let hex = name.split(['-', '.']).next().unwrap_or_default().to_string();
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(Entry { digest: format!("sha256:{hex}"), size: meta.len(), used, path });
            }
        }
        out
    }
}

struct Entry {
    digest: String,
    size: u64,
    used: SystemTime,
    path: PathBuf,
}

#[async_trait]
impl BlobStore for NodeCache {
    async fn get_or_fetch(&self, digest: &str, fetch: BoxFuture<'_, Result<Vec<u8>, Error>>) -> Result<Vec<u8>, Error> {
        if let Some(bytes) = self.read_blob(digest) {
            return Ok(bytes);
        }
        // One download per digest: later callers wait here and then find the blob stored.
        let lock = self.lock_for(digest);
        let _held = lock.lock().await;
        if let Some(bytes) = self.read_blob(digest) {
            return Ok(bytes);
        }
        let bytes = fetch.await?;
        verify_digest(digest, &bytes)?;
        self.write_blob(digest, &bytes)?;
        Ok(bytes)
    }

    fn tag_digest(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.tag_path(key)).ok()?;
        // The file names its key: a hash collision or a damaged file is a miss, not another tag's digest.
        let (stored_key, digest) = text.trim_end().split_once('\n')?;
        (stored_key == key && self.blob_path(digest).is_some()).then(|| digest.to_string())
    }

    fn remember_tag(&self, key: &str, digest: &str) {
        if self.tag_digest(key).as_deref() == Some(digest) {
            return;
        }
        if let Err(e) = self.write_atomically(&self.tag_path(key), format!("{key}\n{digest}\n").as_bytes()) {
            tracing::warn!(tag = key, error = %e, "cannot remember what the tag resolved to");
        }
    }
}

impl NodeCache {
    fn tag_path(&self, key: &str) -> PathBuf {
        let hex = sha256_digest(key.as_bytes());
        self.root.join("tags").join(hex.trim_start_matches("sha256:"))
    }
}

/// Loads a precompiled file after checking it against the checksum beside it; a damaged entry is removed.
fn load_compiled_file(engine: &Engine, path: &Path) -> Option<Component> {
    // Hashed as it is read, so a large entry costs no buffer of its size (nor the heap it would leave).
    let actual = sha256_digest_of_reader(std::fs::File::open(path).ok()?).ok()?;
    let recorded = std::fs::read_to_string(checksum_path(path)).ok();
    if recorded.as_deref().map(str::trim) != Some(actual.as_str()) {
        tracing::warn!(path = %path.display(), "precompiled component does not match its checksum; recompiling");
        remove_compiled(path);
        return None;
    }
    // SAFETY: the file holds exactly what this cache wrote from `Engine::precompile_component` for an
    // engine with the same compatibility hash (file name), checked against the checksum stored next to
    // it; entries are only ever replaced whole (rename) or removed, never changed in place, so the mapping
    // keeps what was checked. wasmtime still validates the header and engine settings.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => {
            touch(path);
            Some(component)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "precompiled component rejected; recompiling");
            remove_compiled(path);
            None
        }
    }
}

fn checksum_path(compiled: &Path) -> PathBuf {
    let mut p = compiled.as_os_str().to_owned();
    p.push(".sha256");
    PathBuf::from(p)
}

fn remove_compiled(path: &Path) {
    let _ = std::fs::remove_file(checksum_path(path));
    let _ = std::fs::remove_file(path);
}

/// Marks an entry used now (eviction removes the least recently used first).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    async fn fetch_counting(
        cache: &NodeCache,
        bytes: &'static [u8],
        calls: &std::sync::atomic::AtomicUsize,
    ) -> Vec<u8> {
        let digest = sha256_digest(bytes);
        let fetch = async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(bytes.to_vec())
        };
        cache.get_or_fetch(&digest, Box::pin(fetch)).await.unwrap()
    }

    #[tokio::test]
    async fn concurrent_misses_fetch_once_and_damage_is_refetched() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NodeCache::open(dir.path(), 1 << 20, &engine()).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let all = futures::future::join_all((0..5).map(|_| fetch_counting(&cache, b"blob", &calls))).await;
        assert!(all.iter().all(|b| b == b"blob"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let path = cache.blob_path(&sha256_digest(b"blob")).unwrap();
        std::fs::write(&path, b"blub").unwrap();
        assert_eq!(fetch_counting(&cache, b"blob", &calls).await, b"blob");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "a damaged entry is fetched again");
        assert_eq!(std::fs::read(&path).unwrap(), b"blob");
    }

    #[tokio::test]
    async fn a_fetch_that_does_not_match_its_digest_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NodeCache::open(dir.path(), 1 << 20, &engine()).unwrap();
        let digest = sha256_digest(b"expected");
        let err = cache.get_or_fetch(&digest, Box::pin(async { Ok(b"other".to_vec()) })).await.unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(cache.read_blob(&digest).is_none());
    }

    #[tokio::test]
    async fn eviction_keeps_pinned_entries_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NodeCache::open(dir.path(), 10, &engine()).unwrap();
        let pin = cache.pin(vec![sha256_digest(b"pinned-1")]);
        for b in [&b"pinned-1"[..], b"old-blob", b"new-blob"] {
            let owned = b.to_vec();
            cache.get_or_fetch(&sha256_digest(b), Box::pin(async move { Ok(owned) })).await.unwrap();
        }
        assert!(cache.read_blob(&sha256_digest(b"pinned-1")).is_some(), "in use: kept although over the bound");
        assert!(cache.read_blob(&sha256_digest(b"old-blob")).is_none());
        assert!(cache.read_blob(&sha256_digest(b"new-blob")).is_some(), "the entry just written stays");
        drop(pin);
        cache.evict_except(None);
        let total: u64 = cache.entries().iter().map(|e| e.size).sum();
        assert!(total <= 10, "released entries are evicted down to the bound: {total}");
    }

    #[tokio::test]
    async fn precompiled_code_with_a_bad_checksum_is_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = NodeCache::open(dir.path(), 1 << 30, &engine).unwrap();
        // The engine's `wat` feature accepts the text format.
        let wasm = b"(component)".to_vec();
        let digest = sha256_digest(&wasm);
        assert!(cache.load_compiled(&engine, &digest).await.is_none());
        let serialized = engine.precompile_component(&wasm).unwrap();
        cache.store_compiled(&digest, &serialized);
        assert!(cache.load_compiled(&engine, &digest).await.is_some());
        let path = cache.compiled_path(&digest).unwrap();
        let mut damaged = serialized.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(cache.load_compiled(&engine, &digest).await.is_none());
        assert!(!path.exists(), "the damaged file is removed");
    }
}
