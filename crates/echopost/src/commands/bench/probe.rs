//! What the figures were measured on: the machine, and the daemon's peak memory.
//!
//! A throughput figure means nothing without the machine it came from — in particular,
//! `fdatasync` on tmpfs is free and on a network disk is not — so the report names the
//! CPUs, the kernel, the memory and the file system of the daemon's directory. The
//! daemon's peak RSS is read from `VmHWM` in `/proc/PID/status` and reset between phases
//! by writing `5` to `/proc/PID/clear_refs`, so the ingest peak and the replay peak are
//! reported separately. Everything here is best effort and Linux-first: a probe that
//! cannot read its source reports "unknown" (`None`) rather than failing the run.

use std::path::Path;

use serde::Serialize;

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub os: String,
    pub memory_bytes: Option<u64>,
    /// File system type of the daemon's directory (ext4, xfs, tmpfs, ...), Linux only.
    pub storage_fs: Option<String>,
}

impl Machine {
    /// Probes this machine, and the file system holding `dir`.
    pub fn probe(dir: &Path) -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            os: os_name(),
            memory_bytes: memory_total(),
            storage_fs: fs_type(dir),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("cpu model")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&info, "MemTotal:")
}

/// A `Name:   1234 kB` field of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn os_name() -> String {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: uname fills the struct it is given; it is zeroed, so on failure every field
    // is an empty NUL-terminated string.
    let rc = unsafe { libc::uname(u.as_mut_ptr()) };
    if rc != 0 {
        return std::env::consts::OS.to_owned();
    }
    // SAFETY: initialised by uname (or zeroed).
    let u = unsafe { u.assume_init() };
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname's fields are NUL-terminated within their arrays.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

#[cfg(target_os = "linux")]
fn fs_type(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `buf` is valid for writes.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs succeeded and initialised the struct.
    let magic = unsafe { buf.assume_init() }.f_type as u64 & 0xFFFF_FFFF;
    Some(
        match magic {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x794C_7630 => "overlayfs",
            0x2FC1_2FC1 => "zfs",
            0xF2F5_2010 => "f2fs",
            0x6969 => "nfs",
            0x6573_5546 => "fuse",
            0x0000_9FA0 => "proc",
            _ => return Some(format!("unknown (magic {magic:#x})")),
        }
        .to_owned(),
    )
}

#[cfg(not(target_os = "linux"))]
fn fs_type(_path: &Path) -> Option<String> {
    None
}

/// The daemon's peak resident memory (Linux `/proc`); `None` elsewhere.
pub mod rss {
    /// `VmHWM` of `pid`, in bytes.
    #[cfg(target_os = "linux")]
    pub fn peak(pid: u32) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        super::kib_field(&s, "VmHWM:")
    }

    /// Resets `VmHWM` to the current RSS, so the next [`peak`] covers only what follows.
    #[cfg(target_os = "linux")]
    pub fn reset_peak(pid: u32) {
        // Best effort: without it the peaks are "since start", which is still an upper
        // bound; the report then says so through equal figures.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }

    #[cfg(not(target_os = "linux"))]
    pub fn peak(_pid: u32) -> Option<u64> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub fn reset_peak(_pid: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let status = "Name:\techopost\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(23456 * 1024));
        assert_eq!(kib_field(status, "VmPeak:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_peak_rss_is_readable() {
        let p = rss::peak(std::process::id()).unwrap();
        assert!(p > 0);
    }
}
