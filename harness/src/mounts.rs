//! Reading /proc/self/mountinfo and detaching every mount that belongs to a directory.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id (later mounts have larger ids).
    pub id: u64,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File-system type.
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options (overlay's lowerdir/upperdir live here).
    pub super_options: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    Some(MountInfo {
        id: left.first()?.parse().ok()?,
        mount_point: PathBuf::from(unescape(left.get(4)?)),
        fs_type: right.next()?.to_string(),
        source: unescape(right.next()?),
        super_options: unescape(right.next().unwrap_or("")),
    })
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and backslashes.
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts at or under `dir`, or whose source or options name a path inside it; deepest first.
pub fn belonging_to(dir: &Path, mounts: &[MountInfo]) -> Vec<MountInfo> {
    let inside = format!("{}/", dir.to_string_lossy().trim_end_matches('/'));
    let mut found: Vec<MountInfo> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir) || m.source.contains(&inside) || m.super_options.contains(&inside))
        .cloned()
        .collect();
    // Children before parents, and the top of a stack before what it covers.
    found.sort_by_key(|m| (std::cmp::Reverse(m.mount_point.components().count()), std::cmp::Reverse(m.id)));
    found
}

/// Current mounts of this process's mount namespace.
pub fn current() -> Vec<MountInfo> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// Lazily unmounts everything belonging to `dir`; returns the mount points still present.
pub fn unmount_all(dir: &Path) -> Vec<PathBuf> {
    // Detaching one mount can reveal another stacked below it, so repeat a few times.
    for _ in 0..5 {
        let targets = belonging_to(dir, &current());
        if targets.is_empty() {
            return Vec::new();
        }
        for m in targets {
            match umount2(&m.mount_point, MntFlags::MNT_DETACH) {
                Ok(()) => tracing::debug!(mount = %m.mount_point.display(), "unmounted"),
                Err(e) => tracing::debug!(mount = %m.mount_point.display(), %e, "umount"),
            }
        }
    }
    belonging_to(dir, &current()).into_iter().map(|m| m.mount_point).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
90 27 0:50 / /tmp/wasmkube-ctrd-x/state/io.containerd.runtime.v2.task/ns/c1/rootfs rw - overlay overlay rw,lowerdir=/tmp/wasmkube-ctrd-x/root/snap/1/fs,upperdir=/tmp/wasmkube-ctrd-x/root/snap/2/fs
91 90 0:51 / /tmp/wasmkube-ctrd-x/state/io.containerd.runtime.v2.task/ns/c1/rootfs/proc rw - proc proc rw
92 27 0:52 / /run/elsewhere/rootfs rw - overlay overlay rw,lowerdir=/tmp/wasmkube-ctrd-x/root/snap/3/fs
93 27 0:53 / /tmp/wasmkube-ctrd-xy rw - tmpfs tmpfs rw
94 27 0:54 / /tmp/with\\040space rw - tmpfs tmp\\134fs rw
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[5].mount_point, Path::new("/tmp/with space"));
        assert_eq!(m[5].source, "tmp\\fs");
        assert!(m[1].super_options.contains("upperdir="));
    }

    #[test]
    fn selects_ours_deepest_first() {
        let m = parse_mountinfo(SAMPLE);
        let ours: Vec<u64> = belonging_to(Path::new("/tmp/wasmkube-ctrd-x"), &m).iter().map(|m| m.id).collect();
        assert_eq!(ours, [91, 90, 92]);
    }

    #[test]
    fn reads_own_mountinfo() {
        assert!(current().iter().any(|m| m.mount_point == Path::new("/")));
    }
}
