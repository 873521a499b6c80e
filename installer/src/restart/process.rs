//! Restarting a containerd that is a plain process (started by a node's own scripts, no systemd unit):
//! find the process that reads the edited config, note how it runs, stop it, and — unless a supervisor
//! brings it back — start it again the same way, in its namespaces and cgroups, detached from the installer.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::ns::Namespaces;
use super::{RestartError, Target};
use crate::layout::{Host, CONTAINERD_CONFIG};

/// The process name of the containerd daemon.
const CONTAINERD: &str = "containerd";
/// containerd's gRPC socket unless its config or `--address` says otherwise.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Host path of the log of a containerd we start whose output did not go to a file.
pub const FALLBACK_LOG: &str = "/var/log/wasmkube-containerd.log";
/// containerd gets this long to exit after SIGTERM, then it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a supervisor has to start a new containerd before we do (systemd's containerd.service
/// restarts after 5 s).
const SUPERVISOR_GRACE: Duration = Duration::from_secs(8);
/// Bound on the new containerd answering on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// containerd's flags that take a value (urfave/cli: one or two dashes, value next or after `=`).
const VALUE_FLAGS: [&str; 8] = ["config", "c", "address", "a", "log-level", "l", "root", "state"];

/// What containerd's arguments say about the daemon.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DaemonArgs {
    /// `--config`/`-c`.
    pub config: Option<String>,
    /// `--address`/`-a` (overrides the config's `[grpc] address`).
    pub address: Option<String>,
}

/// The daemon's flags from `argv`; `None` when it runs a subcommand (`containerd config dump`), not the daemon.
pub fn parse_daemon_args(argv: &[String]) -> Option<DaemonArgs> {
    let mut out = DaemonArgs::default();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let flag = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        if !VALUE_FLAGS.contains(&name) {
            continue;
        }
        let value = inline.or_else(|| args.next().cloned());
        match name {
            "config" | "c" => out.config = value,
            "address" | "a" => out.address = value,
            _ => {}
        }
    }
    Some(out)
}

/// The `[grpc] address` of a containerd config.
pub fn grpc_address(config: &str) -> Option<String> {
    let doc: toml_edit::DocumentMut = config.parse().ok()?;
    doc.get("grpc")?.get("address")?.as_str().filter(|a| !a.is_empty()).map(String::from)
}

/// NUL-separated fields (`/proc/PID/cmdline`, `/proc/PID/environ`).
pub fn split_nul(raw: &[u8]) -> Vec<OsString> {
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| OsString::from_vec(a.to_vec())).collect()
}

/// `NAME=value` pairs of `/proc/PID/environ`.
pub fn parse_environ(raw: &[u8]) -> Vec<(OsString, OsString)> {
    split_nul(raw)
        .into_iter()
        .filter_map(|kv| {
            let bytes = kv.as_bytes();
            let eq = bytes.iter().position(|b| *b == b'=')?;
            Some((OsStr::from_bytes(&bytes[..eq]).to_owned(), OsStr::from_bytes(&bytes[eq + 1..]).to_owned()))
        })
        .collect()
}

/// The `cgroup.procs` files, as paths in the process's mount namespace, that put a process into the
/// cgroups of `/proc/PID/cgroup` (`cgroup`), given its `/proc/PID/mountinfo`. Both files name cgroups
/// relative to the reader's cgroup namespace, so a cgroup's place below its mount is the same for any reader.
pub fn cgroup_procs_files(cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
    let mut files = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let found = mounts.iter().find_map(|m| {
            let hierarchy =
                if wanted.is_empty() { m.v2 } else { !m.v2 && wanted.iter().all(|c| m.options.iter().any(|o| o == c)) };
            let below = Path::new(path).strip_prefix(&m.root).ok()?;
            hierarchy.then(|| m.mount_point.join(below).join("cgroup.procs"))
        });
        if let Some(file) = found.filter(|f| !files.contains(f)) {
            files.push(file);
        }
    }
    files
}

/// One cgroup file system mount of `/proc/PID/mountinfo`.
struct CgroupMount {
    root: PathBuf,
    mount_point: PathBuf,
    v2: bool,
    options: Vec<String>,
}

impl CgroupMount {
    /// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS`.
    fn parse(line: &str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        let fs_type = after.next()?;
        let super_options = after.nth(1).unwrap_or("");
        let v2 = match fs_type {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(CgroupMount {
            root: PathBuf::from(unescape_octal(fields.get(3)?)),
            mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
            v2,
            options: super_options.split(',').map(String::from).collect(),
        })
    }
}

/// mountinfo writes space, tab, newline and backslash as `\NNN`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok().and_then(|o| u8::from_str_radix(o, 8).ok()))
            .flatten();
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// State letter and start time (clock ticks since boot) from `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, starttime field 22.
    Some((fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?))
}

fn proc_path(pid: i32, rel: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rel}"))
}

/// `path` (absolute in the mount namespace of `pid`) as reachable from here, through `/proc/PID/root`.
fn in_root_of(pid: i32, path: &Path) -> PathBuf {
    proc_path(pid, "root").join(path.strip_prefix("/").unwrap_or(path))
}

/// A running containerd daemon.
#[derive(Debug, Clone)]
struct Daemon {
    pid: i32,
    start_time: u64,
    argv: Vec<OsString>,
    args: DaemonArgs,
    /// Its config, absolute in its mount namespace.
    config: PathBuf,
}

impl Daemon {
    fn read(pid: i32) -> Option<Self> {
        if std::fs::read_to_string(proc_path(pid, "comm")).ok()?.trim() != CONTAINERD {
            return None;
        }
        let (state, start_time) = parse_stat(&std::fs::read_to_string(proc_path(pid, "stat")).ok()?)?;
        if state == 'Z' {
            return None;
        }
        let argv = split_nul(&std::fs::read(proc_path(pid, "cmdline")).ok()?);
        let lossy: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let args = parse_daemon_args(&lossy)?;
        let given = PathBuf::from(args.config.clone().unwrap_or_else(|| CONTAINERD_CONFIG.to_string()));
        let config =
            if given.is_absolute() { given } else { std::fs::read_link(proc_path(pid, "cwd")).ok()?.join(given) };
        Some(Daemon { pid, start_time, argv, args, config })
    }

    /// Whether it reads the host's `config`: the same path, or the same file seen through its root.
    fn reads(&self, host: &Host, config: &Path) -> bool {
        if normalize(&self.config) == normalize(config) {
            return true;
        }
        let theirs = std::fs::metadata(in_root_of(self.pid, &self.config));
        let ours = std::fs::metadata(host.path(config));
        matches!((theirs, ours), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    }

    fn alive(&self) -> bool {
        let stat = std::fs::read_to_string(proc_path(self.pid, "stat")).ok();
        stat.as_deref().and_then(parse_stat).is_some_and(|(state, start)| state != 'Z' && start == self.start_time)
    }

    fn command_line(&self) -> String {
        self.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }
}

/// Drops `.` and resolves `..` lexically, for comparing paths as given.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Every containerd daemon in /proc.
fn daemons() -> Vec<Daemon> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(Daemon::read)
        .collect()
}

/// The daemons that read `config` (every daemon when it is unknown).
fn daemons_reading(host: &Host, config: Option<&Path>) -> (Vec<Daemon>, Vec<Daemon>) {
    daemons().into_iter().partition(|d| config.is_none_or(|c| d.reads(host, c)))
}

/// Where a stream of the daemon went.
#[derive(Debug)]
struct LogTarget {
    file: File,
    /// For the log: the file's path in the daemon's mount namespace, or the fallback's host path.
    path: PathBuf,
}

/// Everything needed to start the daemon again, read while it still runs.
#[derive(Debug)]
struct Snapshot {
    daemon: Daemon,
    /// The executable, in its mount namespace.
    exe: PathBuf,
    env: Vec<(OsString, OsString)>,
    cwd: CString,
    stdout: LogTarget,
    stderr: LogTarget,
    /// `cgroup.procs` files in its mount namespace.
    cgroups: Vec<CString>,
    ns: Arc<Namespaces>,
    /// Directory of its gRPC socket, held open (`O_PATH`), and the socket's file name.
    socket_dir: File,
    socket_name: OsString,
    /// The socket's path in its mount namespace, for messages.
    address: PathBuf,
}

impl Snapshot {
    fn take(daemon: Daemon, host: &Host) -> Result<Self, String> {
        let pid = daemon.pid;
        let read =
            |rel: &str| std::fs::read(proc_path(pid, rel)).map_err(|e| format!("reading /proc/{pid}/{rel}: {e}"));
        let link =
            |rel: &str| std::fs::read_link(proc_path(pid, rel)).map_err(|e| format!("reading /proc/{pid}/{rel}: {e}"));
        let exe = link("exe")?;
        // An upgraded binary replaced on disk: start the new file at the same path.
        let exe = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")).map(PathBuf::from).unwrap_or(exe);
        let env = parse_environ(&read("environ")?);
        let cwd = CString::new(link("cwd")?.into_os_string().into_vec()).map_err(|e| e.to_string())?;
        let stdout = log_target(pid, 1, host)?;
        let stderr = log_target(pid, 2, host)?;
        let ns = Arc::new(Namespaces::of(pid).map_err(|e| format!("reading the namespaces of containerd: {e}"))?);
        let (cgroup, mountinfo) = ns.in_cgroup_namespace(|| Ok((read("cgroup")?, read("mountinfo")?)))?;
        let cgroups = cgroup_procs_files(&String::from_utf8_lossy(&cgroup), &String::from_utf8_lossy(&mountinfo))
            .into_iter()
            .filter_map(|p| CString::new(p.into_os_string().into_vec()).ok())
            .collect();
        let config_text = std::fs::read_to_string(in_root_of(pid, &daemon.config)).unwrap_or_default();
        let address = PathBuf::from(
            daemon
                .args
                .address
                .clone()
                .or_else(|| grpc_address(&config_text))
                .unwrap_or_else(|| DEFAULT_ADDRESS.into()),
        );
        let address = PathBuf::from(address.to_string_lossy().trim_start_matches("unix://"));
        let (Some(dir), Some(name)) = (address.parent(), address.file_name()) else {
            return Err(format!("containerd's address {} is not a socket path", address.display()));
        };
        let socket_dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(in_root_of(pid, dir))
            .map_err(|e| format!("opening the directory of containerd's socket {}: {e}", address.display()))?;
        Ok(Snapshot {
            daemon,
            exe,
            env,
            cwd,
            stdout,
            stderr,
            cgroups,
            ns,
            socket_dir,
            socket_name: name.to_owned(),
            address,
        })
    }
}

/// The daemon's stream `fd` when it is a regular file (reopened for appending), else the fallback log.
fn log_target(pid: i32, fd: i32, host: &Host) -> Result<LogTarget, String> {
    let link = proc_path(pid, &format!("fd/{fd}"));
    if std::fs::metadata(&link).is_ok_and(|m| m.is_file()) {
        if let Ok(file) = OpenOptions::new().append(true).open(&link) {
            let path = std::fs::read_link(&link).unwrap_or(link);
            return Ok(LogTarget { file, path });
        }
    }
    let path = host.path(FALLBACK_LOG);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    Ok(LogTarget { file, path: FALLBACK_LOG.into() })
}

/// Restarts the containerd daemon that reads `target.config`.
pub fn restart(target: &Target) -> Result<(), RestartError> {
    let config = target.config.as_deref();
    let wanted = config.map_or("any config".to_string(), |c| c.display().to_string());
    let generic = |reason: String| RestartError {
        reason,
        by_hand: format!("restart containerd on the node so that it reads {wanted}"),
    };
    let (mut ours, others) = daemons_reading(&target.host, config);
    let daemon = match ours.len() {
        1 => ours.remove(0),
        0 => {
            let seen: Vec<String> =
                others.iter().map(|d| format!("pid {} reads {}", d.pid, d.config.display())).collect();
            let seen = if seen.is_empty() {
                "none runs here; the installer needs the host's PID namespace (hostPID)".to_string()
            } else {
                seen.join(", ")
            };
            return Err(generic(format!("no containerd process reads {wanted}: {seen}")));
        }
        n => return Err(generic(format!("{n} containerd processes read {wanted}; which one to restart is unclear"))),
    };
    tracing::info!(
        pid = daemon.pid,
        config = %daemon.config.display(),
        command = %daemon.command_line(),
        "found containerd"
    );
    let snapshot = Snapshot::take(daemon.clone(), &target.host)
        .map_err(|e| generic(format!("reading how containerd {} runs: {e}", daemon.pid)))?;
    stop(&daemon).map_err(generic)?;
    // From here on containerd is down: a failure says how to start it again.
    let stopped = |reason: String| RestartError {
        reason: format!("containerd was stopped; {reason}"),
        by_hand: format!("start it again on the node: {}", daemon.command_line()),
    };
    if let Some(new) = wait_for_supervisor(&target.host, config, &daemon) {
        tracing::info!(pid = new.pid, "a supervisor started containerd again");
        return wait_ready(&snapshot, new.pid, None).map_err(stopped);
    }
    tracing::info!(
        grace = ?SUPERVISOR_GRACE,
        "no supervisor started containerd again; starting it as it ran"
    );
    let child = launch(&snapshot).map_err(stopped)?;
    let pid = child.id() as i32;
    wait_ready(&snapshot, pid, Some(child)).map_err(stopped)
}

/// SIGTERM, a bounded wait, then SIGKILL.
fn stop(daemon: &Daemon) -> Result<(), String> {
    let pid = Pid::from_raw(daemon.pid);
    tracing::info!(pid = daemon.pid, "stopping containerd (SIGTERM)");
    kill(pid, Signal::SIGTERM).map_err(|e| format!("sending SIGTERM to containerd {}: {e}", daemon.pid))?;
    if wait_until(STOP_TIMEOUT, || !daemon.alive()) {
        return Ok(());
    }
    tracing::warn!(pid = daemon.pid, timeout = ?STOP_TIMEOUT, "containerd ignored SIGTERM; killing it");
    let _ = kill(pid, Signal::SIGKILL);
    if wait_until(Duration::from_secs(10), || !daemon.alive()) {
        Ok(())
    } else {
        Err(format!("containerd {} did not exit after SIGTERM and SIGKILL", daemon.pid))
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// A new daemon on the same config, started by someone else within [`SUPERVISOR_GRACE`].
fn wait_for_supervisor(host: &Host, config: Option<&Path>, old: &Daemon) -> Option<Daemon> {
    let mut found = None;
    wait_until(SUPERVISOR_GRACE, || {
        found =
            daemons_reading(host, config).0.into_iter().find(|d| d.pid != old.pid || d.start_time != old.start_time);
        found.is_some()
    });
    found
}

/// Starts the daemon as the snapshot says: same executable, argv, environment and working directory, in
/// its namespaces and cgroups, in a session of its own, output appended to where it went.
fn launch(s: &Snapshot) -> Result<Child, String> {
    match spawn(s, true) {
        Ok(child) => Ok(child),
        Err(first) if !s.cgroups.is_empty() => {
            // Outside its cgroups it still runs; it may only be stopped along with the installer's pod.
            let child = spawn(s, false).map_err(|e| format!("starting {}: {e}", s.exe.display()))?;
            tracing::warn!(
                pid = child.id(),
                "containerd could not be placed back into its cgroups ({first}); it runs in the installer's"
            );
            Ok(child)
        }
        Err(e) => Err(format!("starting {}: {e}", s.exe.display())),
    }
}

fn spawn(s: &Snapshot, into_cgroups: bool) -> io::Result<Child> {
    let stdout = s.stdout.file.try_clone()?;
    let stderr = s.stderr.file.try_clone()?;
    let mut c = Command::new(&s.exe);
    if let Some(arg0) = s.daemon.argv.first() {
        c.arg0(arg0);
    }
    c.args(s.daemon.argv.iter().skip(1))
        .env_clear()
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let ns = Arc::clone(&s.ns);
    let cwd = s.cwd.clone();
    let cgroups: Vec<CString> = if into_cgroups { s.cgroups.clone() } else { Vec::new() };
    tracing::info!(
        exe = %s.exe.display(),
        stdout = %s.stdout.path.display(),
        stderr = %s.stderr.path.display(),
        namespaces = ?ns.names(),
        cgroups = ?cgroups,
        "starting containerd"
    );
    // SAFETY: the hook only makes system calls on data prepared before the fork (async-signal-safe).
    unsafe {
        c.pre_exec(move || {
            ns.enter()?;
            // Entering a mount namespace moves the working directory to its root.
            if libc::chdir(cwd.as_ptr()) != 0 && libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for file in &cgroups {
                // "0" moves the writing process.
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(err);
                }
            }
            // Its own session: no signal to the installer's process group reaches it.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    c.spawn()
}

/// Waits until the daemon `pid` accepts connections on its socket; `child` when we started it.
fn wait_ready(s: &Snapshot, pid: i32, mut child: Option<Child>) -> Result<(), String> {
    // Through the directory held open: reachable from any mount namespace, and short enough for sun_path.
    let socket = PathBuf::from(format!("/proc/self/fd/{}", s.socket_dir.as_raw_fd())).join(&s.socket_name);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(format!("containerd {pid} exited with {status}; see {}", s.stderr.path.display()));
        }
        if UnixStream::connect(&socket).is_ok() {
            tracing::info!(pid, address = %s.address.display(), "containerd answers on its socket");
            if let Some(mut child) = child {
                // Reaps it should it exit while the installer stays; the installer's exit does not stop it.
                std::thread::spawn(move || {
                    if let Ok(status) = child.wait() {
                        tracing::warn!(pid, %status, "the containerd the installer started exited");
                    }
                });
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "containerd {pid} did not answer on {} within {READY_TIMEOUT:?}; see {}",
                s.address.display(),
                s.stderr.path.display()
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn config_and_address_in_every_flag_form() {
        let p = |a: &[&str]| parse_daemon_args(&argv(a));
        assert_eq!(p(&["containerd"]), Some(DaemonArgs::default()));
        assert_eq!(p(&["containerd", "--config", "/a.toml"]).unwrap().config.as_deref(), Some("/a.toml"));
        assert_eq!(p(&["containerd", "--config=/b.toml"]).unwrap().config.as_deref(), Some("/b.toml"));
        assert_eq!(p(&["containerd", "-c", "/c.toml"]).unwrap().config.as_deref(), Some("/c.toml"));
        assert_eq!(p(&["containerd", "-config", "/d.toml"]).unwrap().config.as_deref(), Some("/d.toml"));
        let k3s = p(&[
            "containerd",
            "-c",
            "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            "-a",
            "/run/k3s/containerd/containerd.sock",
            "--state",
            "/run/k3s/containerd",
            "--root",
            "/var/lib/rancher/k3s/agent/containerd",
        ])
        .unwrap();
        assert_eq!(k3s.config.as_deref(), Some("/var/lib/rancher/k3s/agent/etc/containerd/config.toml"));
        assert_eq!(k3s.address.as_deref(), Some("/run/k3s/containerd/containerd.sock"));
        // A value that looks like a subcommand belongs to its flag.
        assert_eq!(p(&["containerd", "--log-level", "debug", "-c", "x"]).unwrap().config.as_deref(), Some("x"));
    }

    #[test]
    fn a_subcommand_is_no_daemon() {
        assert_eq!(parse_daemon_args(&argv(&["containerd", "config", "dump"])), None);
        assert_eq!(parse_daemon_args(&argv(&["containerd", "-c", "/x", "publish"])), None);
    }

    #[test]
    fn grpc_address_from_the_config() {
        assert_eq!(grpc_address("version = 2\n[grpc]\n  address = \"/run/x.sock\"\n").as_deref(), Some("/run/x.sock"));
        assert_eq!(grpc_address("version = 2\n"), None);
        assert_eq!(grpc_address("[grpc]\naddress = \"\"\n"), None);
    }

    #[test]
    fn environ_pairs() {
        let env = parse_environ(b"PATH=/usr/bin:/bin\0EMPTY=\0A=b=c\0junk\0");
        let s: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect();
        assert_eq!(
            s,
            [("PATH".into(), "/usr/bin:/bin".into()), ("EMPTY".into(), String::new()), ("A".into(), "b=c".into())]
        );
    }

    #[test]
    fn stat_with_odd_names() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9876 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 9876)));
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn cgroup_files_for_v2_and_v1() {
        let mountinfo = "\
30 23 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 23 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 23 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 23 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
40 23 8:1 / / rw - ext4 /dev/sda1 rw
";
        let cgroup = "4:memory:/node/containerd\n2:cpu,cpuacct:/\n1:name=systemd:/node\n0::/node/containerd\n";
        let files = cgroup_procs_files(cgroup, mountinfo);
        let want = [
            "/sys/fs/cgroup/memory/node/containerd/cgroup.procs",
            "/sys/fs/cgroup/cpu,cpuacct/cgroup.procs",
            "/sys/fs/cgroup/systemd/node/cgroup.procs",
            "/sys/fs/cgroup/unified/node/containerd/cgroup.procs",
        ];
        assert_eq!(files, want.map(PathBuf::from));
    }

    #[test]
    fn cgroup_paths_seen_from_another_cgroup_namespace() {
        // Read from a pod's cgroup namespace: both the mount's root and the cgroup are above the reader's root.
        let mountinfo = "30 23 0:26 /../../.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let files = cgroup_procs_files("0::/../../../system.slice/containerd.service\n", mountinfo);
        assert_eq!(files, [PathBuf::from("/sys/fs/cgroup/system.slice/containerd.service/cgroup.procs")]);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/end\04"), r"/end\04");
    }

    #[test]
    fn paths_compare_lexically() {
        assert_eq!(
            normalize(Path::new("/etc/./containerd/../containerd/config.toml")),
            Path::new("/etc/containerd/config.toml")
        );
    }

    #[test]
    fn output_to_a_file_is_reopened_and_a_pipe_gives_the_fallback_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        let mut child =
            Command::new("sleep").arg("30").stdout(File::create(&log).unwrap()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id() as i32;
        let host = Host::new(dir.path().join("host"));
        let out = log_target(pid, 1, &host);
        let err = log_target(pid, 2, &host);
        child.kill().unwrap();
        child.wait().unwrap();
        let (mut out, err) = (out.unwrap(), err.unwrap());
        assert_eq!(out.path, log);
        std::io::Write::write_all(&mut out.file, b"appended\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "appended\n");
        assert_eq!(err.path, Path::new(FALLBACK_LOG));
        assert!(host.path(FALLBACK_LOG).is_file());
    }

    #[test]
    fn this_test_process_is_no_containerd() {
        assert!(Daemon::read(std::process::id() as i32).is_none());
    }
}
