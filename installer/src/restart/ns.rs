//! Entering another process's namespaces in a child before it execs — our own `nsenter`, so the node
//! image needs no util-linux.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// The namespaces a command is moved into, in this order (the mount namespace last, so the `/proc/PID/ns`
/// files are all opened before the file system changes).
const KINDS: [(&str, libc::c_int); 6] = [
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    // Only the children of a process change PID namespace; with hostPID it is the same one anyway.
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// Open handles on the namespaces of a process that differ from ours.
#[derive(Debug)]
pub struct Namespaces {
    entries: Vec<(&'static str, OwnedFd, libc::c_int)>,
}

impl Namespaces {
    /// The namespaces of `pid` that this process is not in. Opened now: they stay valid after `pid` exits.
    pub fn of(pid: i32) -> io::Result<Self> {
        let mut entries = Vec::new();
        for (name, flag) in KINDS {
            let theirs = format!("/proc/{pid}/ns/{name}");
            let target =
                std::fs::read_link(&theirs).map_err(|e| io::Error::new(e.kind(), format!("reading {theirs}: {e}")))?;
            if std::fs::read_link(format!("/proc/self/ns/{name}")).is_ok_and(|own| own == target) {
                continue;
            }
            let file = File::open(&theirs).map_err(|e| io::Error::new(e.kind(), format!("opening {theirs}: {e}")))?;
            entries.push((name, OwnedFd::from(file), flag));
        }
        Ok(Namespaces { entries })
    }

    /// Names of the namespaces that will be entered, for the log.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(name, _, _)| *name).collect()
    }

    /// Runs `f` on a thread of its own in the cgroup namespace among them (a thread may change it alone):
    /// `/proc/PID/cgroup` and cgroup mounts are shown relative to the reader's cgroup namespace, and only
    /// from the process's own are the cgroups above the installer's namespace root named.
    pub fn in_cgroup_namespace<T: Send>(&self, f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
        let Some((_, fd, flag)) = self.entries.iter().find(|(_, _, flag)| *flag == libc::CLONE_NEWCGROUP) else {
            return f();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a plain system call on a descriptor we own; it changes this thread only.
                if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
                    return Err(format!("entering containerd's cgroup namespace: {}", io::Error::last_os_error()));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err("reading containerd's cgroups failed".into()))
        })
    }

    /// Enters every namespace. Runs in the forked child (`pre_exec`): setns of a mount namespace is refused
    /// to a multi-threaded process. Async-signal-safe: only `setns` on descriptors opened before the fork.
    pub fn enter(&self) -> io::Result<()> {
        for (_, fd, flag) in &self.entries {
            // SAFETY: a plain system call on a descriptor we own.
            if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn our_own_namespaces_need_no_setns() {
        let ns = Namespaces::of(std::process::id() as i32).unwrap();
        assert!(ns.names().is_empty(), "{:?}", ns.names());
    }

    #[test]
    fn a_child_runs_after_entering() {
        let ns = Namespaces::of(std::process::id() as i32).unwrap();
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "exit 7"]);
        // SAFETY: `enter` is async-signal-safe.
        unsafe { c.pre_exec(move || ns.enter()) };
        assert_eq!(c.status().unwrap().code(), Some(7));
    }

    #[test]
    fn a_missing_process_is_an_error_naming_the_file() {
        let err = Namespaces::of(i32::MAX).unwrap_err();
        assert!(err.to_string().contains(&format!("/proc/{}/ns/cgroup", i32::MAX)), "{err}");
    }
}
