//! Finding and killing processes through /proc: the shims a private containerd leaves behind.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// State letter from /proc/PID/stat (`Z` for zombies).
    pub state: char,
    /// Arguments (empty for kernel threads and zombies).
    pub cmdline: Vec<String>,
}

/// Every process currently visible in /proc.
pub fn list() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter_map(read).collect()
}

/// Reads one process; `None` if it is gone.
pub fn read(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, ppid) = parse_stat(&stat)?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    Some(Proc { pid, ppid, state, cmdline: split_cmdline(&raw) })
}

/// State and parent pid from a /proc/PID/stat line (the command name may hold spaces and parens).
pub fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// True when `args` pass `socket` as `-address`/`--address` (shims and ctr both do).
pub fn has_address_arg(args: &[String], socket: &str) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        let flag = a.trim_start_matches('-');
        let dashed = a.starts_with('-');
        match flag.split_once('=') {
            Some(("address", value)) => dashed && value == socket,
            _ => dashed && flag == "address" && args.get(i + 1).is_some_and(|v| v == socket),
        }
    })
}

/// Live (non-zombie) processes started with `-address <socket>`.
pub fn with_address(socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    let me = std::process::id() as i32;
    list()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z' && has_address_arg(&p.cmdline, &socket))
        .map(|p| p.pid)
        .collect()
}

/// `roots` and all their descendants, from a snapshot of the process table.
pub fn with_descendants(roots: &[i32], procs: &[Proc]) -> BTreeSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut found: BTreeSet<i32> = BTreeSet::new();
    let mut stack: Vec<i32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if found.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    found
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    read(pid).is_some_and(|p| p.state != 'Z')
}

/// SIGKILLs `roots` and their process trees, then waits (bounded) until they are gone.
pub fn kill_trees(roots: &[i32], timeout: Duration) -> Vec<i32> {
    let targets = with_descendants(roots, &list());
    for pid in &targets {
        tracing::debug!(pid, "SIGKILL");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    wait_gone(&targets.into_iter().collect::<Vec<_>>(), timeout)
}

/// Waits until none of `pids` is alive; returns those still alive at the deadline.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Paths of the unix sockets that `pids` hold open (bound or connected), from /proc.
pub fn unix_socket_paths(pids: &[i32]) -> Vec<PathBuf> {
    let by_inode = std::fs::read_to_string("/proc/net/unix").map(|t| parse_net_unix(&t)).unwrap_or_default();
    let mut paths: Vec<PathBuf> = pids
        .iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten())
        .filter_map(|fd| socket_inode(&std::fs::read_link(fd.ok()?.path()).ok()?.to_string_lossy()))
        .filter_map(|inode| by_inode.get(&inode).cloned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Paths currently bound by any process in this network namespace.
pub fn bound_unix_socket_paths() -> BTreeSet<PathBuf> {
    std::fs::read_to_string("/proc/net/unix").map(|t| parse_net_unix(&t).into_values().collect()).unwrap_or_default()
}

/// Inode to path of the named (non-abstract) sockets in /proc/net/unix.
pub fn parse_net_unix(text: &str) -> HashMap<u64, PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = cols.get(7).filter(|p| p.starts_with('/'))?;
            Some((cols.get(6)?.parse().ok()?, PathBuf::from(path)))
        })
        .collect()
}

/// The inode of a `socket:[N]` fd link.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn address_flag_forms() {
        let sock = "/tmp/x/containerd.sock";
        let shim = args(&["shim", "-namespace", "n", "-id", "i", "-address", sock]);
        assert!(has_address_arg(&shim, sock));
        assert!(has_address_arg(&args(&["ctr", "--address", sock, "t"]), sock));
        assert!(has_address_arg(&args(&["x", "-address=/tmp/x/containerd.sock"]), sock));
        assert!(!has_address_arg(&args(&["x", "-address", "/run/containerd/containerd.sock"]), sock));
        assert!(!has_address_arg(&args(&["x", "address", sock]), sock));
        assert!(!has_address_arg(&args(&["x", "-address"]), sock));
    }

    #[test]
    fn stat_with_odd_command_names() {
        assert_eq!(parse_stat("42 (a b) c)) S 7 42 42 0"), Some(('S', 7)));
        assert_eq!(parse_stat("1 (init) R 0 1"), Some(('R', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_of_a_tree() {
        let p = |pid, ppid| Proc { pid, ppid, state: 'S', cmdline: vec![] };
        let procs = [p(10, 1), p(11, 10), p(12, 11), p(20, 1), p(13, 10)];
        let got: Vec<i32> = with_descendants(&[10], &procs).into_iter().collect();
        assert_eq!(got, [10, 11, 12, 13]);
    }

    #[test]
    fn net_unix_lines() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/containerd/s/abc\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 4243 @abstract\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 4244\n";
        let m = parse_net_unix(text);
        assert_eq!(m.len(), 1);
        assert_eq!(m[&4242], Path::new("/run/containerd/s/abc"));
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[1]"), None);
    }

    #[test]
    fn sees_itself() {
        let me = read(std::process::id() as i32).unwrap();
        assert!(me.state != 'Z');
        assert!(!me.cmdline.is_empty());
    }
}
