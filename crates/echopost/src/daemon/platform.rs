//! Everything that differs between operating systems, behind `cfg`, in one place.
//!
//! The rest of the daemon is portable POSIX (via std and tokio). Only three things are not:
//!
//! * **The peer's user id on a UNIX socket.** Linux has `SO_PEERCRED`; macOS and the BSDs
//!   have `getpeereid` (built on `LOCAL_PEERCRED`). There is no portable call.
//! * **The per-user state directory.** XDG on Linux, `~/Library/Application Support` on
//!   macOS.
//! * **The size of `sockaddr_un.sun_path`**, which bounds the socket path: 108 bytes on
//!   Linux, 104 on macOS and the BSDs (including the terminating NUL).
//!
//! Keeping them here means a port to another OS touches exactly this file.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Longest socket path (in bytes, without the terminating NUL) that `bind` accepts.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest socket path (in bytes, without the terminating NUL) that `bind` accepts.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const MAX_SOCKET_PATH: usize = 103;

/// The user id of the process at the other end of a connected UNIX socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed, and the fd is
    // owned by `sock` for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short ucred"));
    }
    Ok(cred.uid)
}

/// The user id of the process at the other end of a connected UNIX socket.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: `uid` and `gid` are valid for writes, the fd is owned by `sock`.
    let rc = unsafe { libc::getpeereid(sock.as_raw_fd(), &mut uid, &mut gid) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// The user id of the process at the other end of a connected UNIX socket.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
pub fn peer_uid(_sock: &impl AsRawFd) -> io::Result<u32> {
    // Unknown peers are refused by the caller, so an unported OS fails closed.
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are not implemented on this platform",
    ))
}

/// The effective user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The default state directory, from the environment as read by `var`:
/// `$XDG_STATE_HOME/echopost` if that is an absolute path, else the platform's per-user
/// location under `$HOME`. (`$ECHOPOST_DIR` is handled by the command line as the env twin
/// of `--dir`.) `None` if neither variable helps.
pub fn default_state_dir(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(xdg) = var("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(xdg);
        // The XDG spec says relative values are invalid and must be ignored.
        if p.is_absolute() {
            return Some(p.join("echopost"));
        }
    }
    let home = PathBuf::from(var("HOME").filter(|v| !v.is_empty())?);
    Some(home_state_dir(home))
}

#[cfg(target_os = "macos")]
fn home_state_dir(home: PathBuf) -> PathBuf {
    home.join("Library")
        .join("Application Support")
        .join("echopost")
}

#[cfg(not(target_os = "macos"))]
fn home_state_dir(home: PathBuf) -> PathBuf {
    home.join(".local").join("state").join("echopost")
}

/// Caps glibc's malloc at two arenas.
///
/// glibc gives threads their own arenas (up to eight per core) and each keeps memory it
/// freed for reuse. The replayer builds multi-megabyte batches on whichever blocking
/// thread is free, so with the default every such thread ends up holding a batch's worth:
/// a 2 GiB replay peaked at 63 MiB of RSS. Two arenas bring that to about 40 MiB at the
/// same drain rate. Other C libraries (musl, macOS) do not need or offer this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_allocator_arenas() {
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// No-op where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_allocator_arenas() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_prefers_absolute_xdg() {
        let env = |k: &str| match k {
            "XDG_STATE_HOME" => Some("/x/state".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(
            default_state_dir(env),
            Some(PathBuf::from("/x/state/echopost"))
        );
        let relative = |k: &str| match k {
            "XDG_STATE_HOME" => Some("rel".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        let d = default_state_dir(relative).unwrap();
        assert!(d.starts_with("/home/u"), "{}", d.display());
        assert_eq!(default_state_dir(|_| None), None);
    }

    #[test]
    fn peer_uid_of_a_socketpair_is_ours() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), current_uid());
    }
}
