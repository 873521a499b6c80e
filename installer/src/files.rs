//! File operations on the host: atomic replacement (temp file + rename) and one backup per edited file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError { action, path: path.to_path_buf(), source }
}

/// Suffix of the backup kept of every file the installer edits.
pub const BACKUP_SUFFIX: &str = ".wasmkube-backup";

/// The backup path of `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

/// Reads a file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("reading", path)(e)),
    }
}

/// Writes `contents` to a temp file beside `path` and renames it over `path`, so readers (containerd,
/// a running shim's exec) never see a partial file; creates the parent directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err("creating", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.wasmkube-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(err("creating", &tmp))?;
        f.write_all(contents).map_err(err("writing", &tmp))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err("setting the mode of", &tmp))?;
        f.sync_all().map_err(err("syncing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(err("renaming a temp file onto", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Copies `src` onto `dst` atomically with `mode`.
pub fn copy_atomic(src: &Path, dst: &Path, mode: u32) -> Result<(), FileError> {
    let bytes = std::fs::read(src).map_err(err("reading", src))?;
    write_atomic(dst, &bytes, mode)
}

/// Replaces the text file `path` with `text`, keeping its mode and a backup of the first original.
pub fn replace_text(path: &Path, original: Option<&str>, text: &str) -> Result<(), FileError> {
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    if let Some(original) = original {
        let backup = backup_path(path);
        if !backup.exists() {
            write_atomic(&backup, original.as_bytes(), mode)?;
        }
    }
    write_atomic(path, text.as_bytes(), mode)
}

/// Removes a file; true if it existed.
pub fn remove_optional(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err("removing", path)(e)),
    }
}

/// Drops the backup of `path` when the file is back to it (an uninstall restored it exactly).
pub fn drop_backup_if_restored(path: &Path) -> Result<(), FileError> {
    let backup = backup_path(path);
    if read_optional(&backup)?.is_some_and(|b| read_optional(path).ok().flatten().as_deref() == Some(&*b)) {
        remove_optional(&backup)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_first_original_and_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace_text(&path, Some("one"), "two").unwrap();
        replace_text(&path, Some("two"), "three").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three");
        assert_eq!(std::fs::read_to_string(backup_path(&path)).unwrap(), "one");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temp files left behind");
        replace_text(&path, Some("three"), "one").unwrap();
        drop_backup_if_restored(&path).unwrap();
        assert!(!backup_path(&path).exists());
    }

    #[test]
    fn copies_are_executable_and_removals_tolerate_absence() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, "bin").unwrap();
        let dst = dir.path().join("usr/local/bin/shim");
        copy_atomic(&src, &dst, 0o755).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(remove_optional(&dst).unwrap());
        assert!(!remove_optional(&dst).unwrap());
        assert!(copy_atomic(&dir.path().join("missing"), &dst, 0o755).is_err());
    }
}
