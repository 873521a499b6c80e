//! mimalloc's options for wasmkube's long-running processes (the shim's node daemon, the operator).
//!
//! mimalloc commits each arena eagerly where the kernel overcommits, which left the shim's daemon at 76 MiB RSS
//! instead of 30 with no gain in speed (docs/install.md, "Allocator"; `wasmkube-bench pod-memory` and `http`); the
//! operator holds its watch caches for its whole life and is held to 64 MiB (`wasmkube-bench operator-scale`). mimalloc reads its options at its first
//! allocation, before `main`, so they can only reach a process through the environment it starts with: the shim
//! sets them for the daemon it spawns, the operator executes itself again with them. (One exception: the arena
//! commit option is read when the first arena is reserved, which in the shim's binary comes after `main` begins,
//! so its `main` also sets it in-process, for the short `start` and `delete` commands.)

/// The options, unless the environment already sets them (a node's or a pod's own choice wins).
pub const ALLOCATOR_ENV: [(&str, &str); 1] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// The operator's options: the shared ones, and freed memory handed back at once. Why: mimalloc purges the freed pages
/// of a segment only when something in that segment is freed again after the delay, so what the start-up's burst
/// freed stayed resident for the life of an operator at rest (docs/operator.md, "At scale").
pub const OPERATOR_ALLOCATOR_ENV: [(&str, &str); 2] =
    [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "0")];

/// The options of [`ALLOCATOR_ENV`] that `is_set` says the environment lacks.
pub fn missing(is_set: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    missing_of(&ALLOCATOR_ENV, is_set)
}

/// The options of `options` that `is_set` says the environment lacks.
pub fn missing_of(
    options: &[(&'static str, &'static str)],
    is_set: impl Fn(&str) -> bool,
) -> Vec<(&'static str, &'static str)> {
    options.iter().copied().filter(|(name, _)| !is_set(name)).collect()
}

/// The options of [`ALLOCATOR_ENV`] the current process's environment lacks.
pub fn missing_here() -> Vec<(&'static str, &'static str)> {
    missing(|name| std::env::var_os(name).is_some())
}

/// Execute this program again, same arguments, with the missing ones of `options` set; returns only when nothing is
/// missing (`Ok`) or the exec failed. Call it first thing in `main`, before threads or files are opened: the
/// process image is replaced, the pid stays.
#[cfg(unix)]
pub fn reexec_with_options(options: &[(&'static str, &'static str)]) -> std::io::Result<()> {
    use std::ffi::OsStr;
    use std::os::unix::process::CommandExt;

    let missing = missing_of(options, |name| std::env::var_os(name).is_some());
    if missing.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg0(&arg0).args(args).envs(missing.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))));
    // The options are now set, so the new image returns at the check above: no loop.
    Err(cmd.exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unset_options_are_missing() {
        assert_eq!(missing(|_| false), [("MIMALLOC_ARENA_EAGER_COMMIT", "0")]);
        assert!(missing(|name| name == "MIMALLOC_ARENA_EAGER_COMMIT").is_empty());
        let operator = missing_of(&OPERATOR_ALLOCATOR_ENV, |name| name == "MIMALLOC_ARENA_EAGER_COMMIT");
        assert_eq!(operator, [("MIMALLOC_PURGE_DELAY", "0")]);
    }
}
