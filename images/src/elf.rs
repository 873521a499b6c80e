//! What goes into an image of a binary. Is it static? The program headers of its ELF file tell: a dynamically
//! linked executable names its loader in a `PT_INTERP` header (what `file` reports as "interpreter
//! /lib/ld-musl-x86_64.so.1"). And its debug sections stay behind.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};

const PT_INTERP: u32 = 3;

/// Fails unless `path` is a 64-bit little-endian ELF executable without a program interpreter.
pub fn require_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    let not_static = |reason: String| Error::NotStatic { path: path.to_path_buf(), reason };
    match interpreter(&bytes) {
        Ok(None) => Ok(()),
        Ok(Some(interp)) => Err(not_static(format!("it is linked dynamically, against {interp}"))),
        Err(reason) => Err(not_static(reason.into())),
    }
}

/// The binary at `path` without its debug sections, by binutils' `objcopy --strip-debug` (symbols stay, so a
/// backtrace still names functions). The line tables of every crate are most of a build's binary (175 of the
/// release shim's 210 MB); a node pulls the image and the installer copies the shim onto it, so they stay out.
pub fn without_debug_info(path: &Path) -> Result<Vec<u8>> {
    let stripped = tempfile::NamedTempFile::new().ctx(|| "creating a temporary file".to_string())?;
    let out = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(stripped.path())
        .output()
        .ctx(|| "running objcopy (Debian package binutils, installed by `make deps`)".to_string())?;
    if !out.status.success() {
        return Err(Error::Strip {
            path: path.to_path_buf(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::read(stripped.path()).ctx(|| format!("reading the stripped copy of {}", path.display()))
}

/// The program interpreter an ELF file names, `None` for a static executable.
fn interpreter(bytes: &[u8]) -> Result<Option<String>, &'static str> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file");
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at =
        |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).map(|v| v as usize);
    let truncated = "truncated ELF header";
    let (phoff, phentsize, phnum) =
        (u64_at(0x20).ok_or(truncated)?, u16_at(0x36).ok_or(truncated)?, u16_at(0x38).ok_or(truncated)?);
    for n in 0..phnum {
        let header = phoff + n * phentsize;
        if u32_at(header).ok_or(truncated)? == PT_INTERP {
            let (offset, size) = (u64_at(header + 8).ok_or(truncated)?, u64_at(header + 32).ok_or(truncated)?);
            let name = bytes.get(offset..offset + size).ok_or(truncated)?;
            return Ok(Some(String::from_utf8_lossy(name).trim_end_matches('\0').to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_its_loader() {
        // Debian's own tools are glibc executables.
        let bytes = std::fs::read("/bin/sh").unwrap();
        let interp = interpreter(&bytes).unwrap().expect("/bin/sh is dynamic");
        assert!(interp.starts_with("/lib"), "{interp}");
        let err = require_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(err.contains("linked dynamically, against /lib"), "{err}");
    }

    #[test]
    fn this_test_binary_is_static() {
        // Tests are built for the musl target with crt-static, like the shipped binaries.
        let exe = std::env::current_exe().unwrap();
        require_static(&exe).unwrap();
    }

    #[test]
    fn the_stripped_copy_has_no_debug_sections_and_still_runs() {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().unwrap();
        let stripped = without_debug_info(&exe).unwrap();
        let original = std::fs::read(&exe).unwrap();
        assert!(stripped.len() < original.len(), "{} !< {}", stripped.len(), original.len());
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("stripped");
        std::fs::write(&copy, &stripped).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sections = Command::new("objdump").arg("-h").arg(&copy).output().unwrap();
        let sections = String::from_utf8_lossy(&sections.stdout);
        // `.debug_gdb_scripts` is loaded data, not debug info: objcopy rightly keeps it.
        assert!(sections.contains(".text"), "{sections}");
        for debug in [".debug_info", ".debug_line", ".debug_str"] {
            assert!(!sections.contains(debug), "{debug} left in:\n{sections}");
        }
        require_static(&copy).unwrap();
        let listed = Command::new(&copy).arg("--list").output().unwrap();
        assert!(listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("elf::tests::"));
    }

    #[test]
    fn objcopy_failures_are_reported_with_its_words() {
        let err = without_debug_info(Path::new("/nonexistent/binary")).unwrap_err().to_string();
        assert!(err.starts_with("cannot strip the debug sections of /nonexistent/binary: objcopy"), "{err}");
    }

    #[test]
    fn other_files_are_refused_in_words() {
        assert_eq!(interpreter(b"#!/bin/sh\n"), Err("not an ELF file"));
        assert_eq!(interpreter(b"\x7fELF\x02\x01\x01"), Err("truncated ELF header"));
    }
}
