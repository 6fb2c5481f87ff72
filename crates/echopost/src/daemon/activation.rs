//! Socket activation: the listening socket handed over by a service manager, used instead
//! of binding one (issue 15).
//!
//! * **systemd** (and `systemd-socket-activate`): `LISTEN_PID` is this process's pid and
//!   `LISTEN_FDS` ≥ 1; the socket is descriptor 3 (`SD_LISTEN_FDS_START`, sd_listen_fds(3)).
//!   Only the first descriptor is used (the packaged `.socket` unit passes one). The
//!   variables are read, never removed: removing them would mutate the environment while the
//!   runtime's threads may read it, and a child process never matches `LISTEN_PID` anyway.
//! * **launchd** (macOS): `launch_activate_socket("Listeners")`, the `Sockets` entry of the
//!   packaged plist.
//!
//! The descriptor must be a listening UNIX stream socket; anything else is a configuration
//! error (exit code 2). Such a socket belongs to the service manager: the daemon never
//! removes its file, and when the daemon exits (drained, linger) the manager keeps
//! listening and starts it again on the next connection.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

/// The first descriptor systemd passes (sd_listen_fds(3)).
pub const SD_LISTEN_FDS_START: RawFd = 3;

/// Where an inherited socket came from, for log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

/// The socket a service manager passed, if it did. `var` reads the environment.
pub fn inherited(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<(UnixListener, Manager)>, String> {
    if let Some(fd) = systemd_fd(&var, std::process::id())? {
        return listener_from(fd).map(|l| Some((l, Manager::Systemd)));
    }
    #[cfg(target_os = "macos")]
    if let Some(fd) = launchd::activate_socket("Listeners")? {
        return listener_from(fd).map(|l| Some((l, Manager::Launchd)));
    }
    Ok(None)
}

/// systemd's descriptor for process `pid`, when `LISTEN_PID`/`LISTEN_FDS` say there is one.
fn systemd_fd(var: &impl Fn(&str) -> Option<String>, pid: u32) -> Result<Option<RawFd>, String> {
    let Some(listen_pid) = var("LISTEN_PID") else {
        return Ok(None);
    };
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        // Meant for another process (e.g. a parent that was activated).
        return Ok(None);
    }
    let fds = var("LISTEN_FDS").unwrap_or_default();
    match fds.trim().parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(SD_LISTEN_FDS_START)),
        Err(_) => Err(format!(
            "LISTEN_FDS={fds:?} is not a number of descriptors (socket activation: sd_listen_fds(3))"
        )),
    }
}

/// Takes `fd` as a listening UNIX stream socket (close-on-exec, non-blocking).
fn listener_from(fd: RawFd) -> Result<UnixListener, String> {
    let bad = |what: String| {
        format!(
            "the socket passed by the service manager (descriptor {fd}) {what}; the .socket unit must name a stream socket path (ListenStream=/path)"
        )
    };
    let int_opt = |opt: libc::c_int| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`, which is that large.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
        if rc == 0 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let ty = int_opt(libc::SO_TYPE).map_err(|e| bad(format!("cannot be used: {e}")))?;
    if ty != libc::SOCK_STREAM {
        return Err(bad("is not a stream socket".to_owned()));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let domain = int_opt(libc::SO_DOMAIN).map_err(|e| bad(format!("cannot be used: {e}")))?;
        if domain != libc::AF_UNIX {
            return Err(bad("is not a UNIX socket".to_owned()));
        }
    }
    let listening =
        int_opt(libc::SO_ACCEPTCONN).map_err(|e| bad(format!("cannot be used: {e}")))?;
    if listening == 0 {
        return Err(bad("is not listening".to_owned()));
    }
    // SAFETY: the descriptor was handed to this process to own (sd_listen_fds(3)); it is
    // taken exactly once, here.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(format!("cannot be made non-blocking: {e}")))?;
    Ok(listener)
}

#[cfg(target_os = "macos")]
mod launchd {
    use std::os::fd::RawFd;

    unsafe extern "C" {
        /// launch(3): the descriptors of the `Sockets` entry `name` of the job's plist.
        fn launch_activate_socket(
            name: *const libc::c_char,
            fds: *mut *mut libc::c_int,
            cnt: *mut libc::size_t,
        ) -> libc::c_int;
    }

    /// The first descriptor of the plist's `Sockets` entry `name`; `None` when the process
    /// was not started by launchd with such an entry.
    pub fn activate_socket(name: &str) -> Result<Option<RawFd>, String> {
        let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        let mut fds: *mut libc::c_int = std::ptr::null_mut();
        let mut cnt: libc::size_t = 0;
        // SAFETY: the out-pointers are valid; on success launchd allocates `fds` with
        // malloc, which is freed below.
        let rc = unsafe { launch_activate_socket(cname.as_ptr(), &mut fds, &mut cnt) };
        if rc == libc::ESRCH || rc == libc::ENOENT {
            return Ok(None);
        }
        if rc != 0 {
            return Err(format!(
                "launch_activate_socket({name:?}) failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if fds.is_null() || cnt == 0 {
            return Ok(None);
        }
        // SAFETY: launchd returned `cnt` descriptors at `fds`.
        let all = unsafe { std::slice::from_raw_parts(fds, cnt) }.to_vec();
        // SAFETY: allocated by launchd with malloc, not used after this.
        unsafe { libc::free(fds.cast()) };
        for extra in &all[1..] {
            // SAFETY: descriptors handed to us that we do not use.
            unsafe { libc::close(*extra) };
        }
        Ok(Some(all[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn systemd_variables_name_descriptor_3_for_this_pid_only() {
        assert_eq!(systemd_fd(&env(&[]), 42), Ok(None));
        assert_eq!(
            systemd_fd(&env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "1")]), 42),
            Ok(Some(3))
        );
        assert_eq!(
            systemd_fd(&env(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "1")]), 42),
            Ok(None),
            "meant for another process"
        );
        assert_eq!(
            systemd_fd(&env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "0")]), 42),
            Ok(None)
        );
        assert!(systemd_fd(&env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "x")]), 42).is_err());
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_taken() {
        use std::os::fd::IntoRawFd;
        let tmp = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(tmp.path().join("s")).unwrap();
        let fd = l.into_raw_fd();
        let taken = listener_from(fd).unwrap();
        drop(taken);

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = listener_from(a.into_raw_fd()).unwrap_err();
        assert!(e.contains("not listening"), "{e}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = listener_from(udp.into_raw_fd()).unwrap_err();
        assert!(e.contains("not a stream socket"), "{e}");
    }
}
