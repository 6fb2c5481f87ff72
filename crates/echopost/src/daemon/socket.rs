//! The UNIX listener: file permissions, stale-socket detection, and the peer's uid on
//! every accepted connection.
//!
//! * **Permissions** follow the peer-credential policy ([`SocketAccess`]). By default the
//!   socket file is created `0600` (the process umask is narrowed around `bind`, so there
//!   is no moment when it is wider) inside a directory created `0700`, and a warning names
//!   an existing directory that other users can enter. With `--allow-uid` naming a user
//!   other than the daemon's own and root (root passes file permissions anyway), that user
//!   must be able to open the socket file, so it is created `0666` and a socket directory
//!   the daemon creates is `0711` (searchable, not listable). The uid check
//!   ([`crate::daemon::peer`]) stays the gate: every other user who connects is answered
//!   `PERMISSION_DENIED`. Every directory above the socket must also be searchable by the
//!   allowed user; a warning at startup names each one that is not (the default socket
//!   lives in the `0700` state directory, so an allowed user needs `--socket` elsewhere,
//!   e.g. `/run/echopost/echopost.sock` with `/run/echopost` `0711` or `0755`).
//! * **Stale or live.** A socket file left by a crashed run is harmless to remove, but one
//!   a running daemon listens on is not: deleting it would silently steal that daemon's
//!   clients. So an existing socket file is probed with a `connect`: refused means stale
//!   (replaced), accepted means live (startup fails with exit code 3). Anything that is not
//!   a socket is never deleted.
//! * **Peer credentials.** Each accepted stream is wrapped in a [`PeerStream`] carrying the
//!   peer's uid (read once, at accept, via [`crate::daemon::platform::peer_uid`]), which tonic
//!   attaches to every request of the connection for [`crate::daemon::peer::PeerCheckLayer`].
//!   Below the HTTP/2 server the stream goes through [`H2Stream`], which makes any
//!   client's `:authority` acceptable (see [`crate::daemon::h2`]).
//! * **Removal.** [`SocketFile::remove_if_ours`] removes the path only while it is still
//!   the file this process bound (same device and inode), so a daemon that exits late
//!   never deletes the socket of the instance that replaced it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use crate::daemon::h2::H2Stream;
use crate::daemon::peer::{PeerInfo, PeerPolicy};
use crate::daemon::platform;
use crate::daemon::rewind::Rewind;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A running process accepts connections on the path.
    #[error("another process is listening on {}", path.display())]
    Live { path: PathBuf },
    /// The path exists and is not a socket; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it (remove it or pass another --socket)", path.display())]
    NotASocket { path: PathBuf },
    /// Anything else.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError + use<> {
    let path = path.to_path_buf();
    move |source| SocketError::Io {
        context,
        path,
        source,
    }
}

/// The socket file this process created; see [`SocketFile::remove_if_ours`].
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one this process bound. Returns whether
    /// it removed it.
    ///
    /// Call it while the listener is still open: a bound socket keeps its inode alive, so
    /// another file at the path cannot have the same device and inode numbers.
    pub fn remove_if_ours(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                std::fs::remove_file(&self.path)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What [`bind`] found at the path before binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// Nothing.
    Nothing,
    /// A stale socket file from a crashed run, now replaced.
    ReplacedStale,
}

/// Who besides the daemon's own user must be able to open the socket file: the users of
/// `--allow-uid`, except the daemon's own and root (which file permissions do not stop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketAccess {
    others: Vec<u32>,
}

impl SocketAccess {
    /// Only the daemon's user: socket `0600`, a created directory `0700`.
    pub fn owner_only() -> SocketAccess {
        SocketAccess::default()
    }

    /// The access the peer policy (`own_uid` plus `allowed`) needs.
    pub fn for_policy(own_uid: u32, allowed: &[u32]) -> SocketAccess {
        let mut others: Vec<u32> = allowed
            .iter()
            .copied()
            .filter(|&u| u != own_uid && u != 0)
            .collect();
        others.sort_unstable();
        others.dedup();
        SocketAccess { others }
    }

    /// The uids other than ours that must reach the socket.
    pub fn others(&self) -> &[u32] {
        &self.others
    }

    /// The socket file's mode.
    pub fn socket_mode(&self) -> u32 {
        if self.others.is_empty() { 0o600 } else { 0o666 }
    }

    /// The mode of a socket directory the daemon creates.
    pub fn dir_mode(&self) -> u32 {
        if self.others.is_empty() { 0o700 } else { 0o711 }
    }
}

/// A directory above the socket that some allowed uids cannot search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub dir: PathBuf,
    pub mode: u32,
    pub uids: Vec<u32>,
    /// The directory is searchable by its group (`gid`): the uids reach the socket if
    /// they are members.
    pub group: Option<u32>,
}

/// Every directory above `socket` (its parent up to `/`) that a uid of `access` cannot
/// search, judged from the directory's owner and mode (group membership is not looked
/// up: a group-searchable directory is reported with its group). Directories that cannot
/// be inspected are skipped.
pub fn unreachable_ancestors(socket: &Path, access: &SocketAccess) -> Vec<Unreachable> {
    let mut out = Vec::new();
    if access.others.is_empty() {
        return out;
    }
    for dir in socket.ancestors().skip(1) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = m.permissions().mode() & 0o7777;
        let uids: Vec<u32> = access
            .others
            .iter()
            .copied()
            .filter(|&u| {
                let as_owner = m.uid() == u && mode & 0o100 != 0;
                !(as_owner || mode & 0o001 != 0)
            })
            .collect();
        if !uids.is_empty() {
            out.push(Unreachable {
                dir: dir.to_path_buf(),
                mode,
                uids,
                group: (mode & 0o010 != 0).then_some(m.gid()),
            });
        }
    }
    out
}

/// Binds a listening socket at `path` with the permissions `access` needs (see the module
/// documentation). Blocking; call it during startup.
pub fn bind(
    path: &Path,
    access: &SocketAccess,
) -> Result<(UnixListener, SocketFile, Previous), SocketError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(parent) {
            Ok(m) => {
                if access.others.is_empty() && m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        dir = %parent.display(),
                        mode = format!("{:o}", m.permissions().mode() & 0o777),
                        "the socket's directory is accessible to other users; the socket itself is 0600 and other users are refused by uid"
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(access.dir_mode())
                    .create(parent)
                    .map_err(io_err("cannot create the socket directory", parent))?;
                // Whatever the process umask: an allowed user must be able to search it.
                std::fs::set_permissions(
                    parent,
                    std::fs::Permissions::from_mode(access.dir_mode()),
                )
                .map_err(io_err("cannot set the permissions of", parent))?;
            }
            Err(e) => return Err(io_err("cannot inspect the socket directory", parent)(e)),
        }
    }
    for u in unreachable_ancestors(path, access) {
        let group = u.group.map_or(String::new(), |g| {
            format!(" (only its group, gid {g}, may search it: members can)")
        });
        tracing::warn!(
            dir = %u.dir.display(),
            mode = format!("{:o}", u.mode),
            uids = ?u.uids,
            "uid(s) {:?} allowed by --allow-uid cannot reach the socket: {} (mode 0{:o}) is not searchable by them{group}. Put the socket in a directory every allowed user can search (--socket, e.g. /run/echopost/echopost.sock with /run/echopost mode 0711), or give them search permission (chmod o+x)",
            u.uids,
            u.dir.display(),
            u.mode
        );
    }

    let previous = clear_stale(path)?;
    let listener = match bind_with_mode(path, access.socket_mode()) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // Someone bound it between our check and our bind.
            return Err(SocketError::Live {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("cannot listen on", path)(e)),
    };
    // Belt and braces: the umask already gave it this mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.socket_mode()))
        .map_err(io_err("cannot set the permissions of", path))?;
    let m = std::fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("cannot configure", path))?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        },
        previous,
    ))
}

/// Removes a stale socket at `path`; refuses a live one or a non-socket.
fn clear_stale(path: &Path) -> Result<Previous, SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Previous::Nothing),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::Live {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(Previous::ReplacedStale),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Previous::Nothing),
                Err(e) => Err(io_err("cannot remove the stale socket", path)(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Previous::Nothing),
        Err(e) => Err(io_err("cannot check whether a daemon listens on", path)(e)),
    }
}

/// `bind` with the umask set so the socket file is born with `mode` (`0600` or `0666`:
/// a socket needs no execute bit), never wider.
///
/// The umask is process-wide. This runs during startup, before the socket exists and
/// before any append can make the engine create a file, so no other file creation can
/// race with it.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let mask = !mode & 0o777;
    // SAFETY: umask has no preconditions; it only swaps the process's mask.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let res = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    res
}

/// A connection with the peer's uid attached (see the module documentation), seen
/// through the [`H2Stream`] layer that lets every stock gRPC client in.
#[derive(Debug)]
pub struct PeerStream {
    inner: H2Stream<Rewind<tokio::net::UnixStream>>,
    info: PeerInfo,
}

/// Who is on the other end of `stream`: the uid from the kernel (`None`, refused, if it
/// cannot tell), and a name for log lines.
pub fn peer_of(stream: &tokio::net::UnixStream) -> (PeerInfo, String) {
    let uid = match platform::peer_uid(stream) {
        Ok(uid) => Some(uid),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; the connection will be refused");
            None
        }
    };
    // For log lines only (the uid is the gate): the pid tells two connections of one
    // user apart.
    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
    let peer = match (uid, pid) {
        (Some(u), Some(p)) => format!("uid {u} pid {p}"),
        (Some(u), None) => format!("uid {u}"),
        (None, _) => "uid unknown".to_owned(),
    };
    (PeerInfo { uid }, peer)
}

impl PeerStream {
    /// Reads the peer's uid from the kernel.
    pub fn new(inner: tokio::net::UnixStream) -> PeerStream {
        let (info, peer) = peer_of(&inner);
        PeerStream::with_prefix(inner, bytes::Bytes::new(), info, peer)
    }

    /// A connection whose first bytes (`prefix`) were already read to tell its protocol
    /// (`--accept-http`), from the peer `peer_of` described.
    pub fn with_prefix(
        inner: tokio::net::UnixStream,
        prefix: bytes::Bytes,
        info: PeerInfo,
        peer: String,
    ) -> PeerStream {
        PeerStream {
            inner: H2Stream::new(Rewind::new(prefix, inner), peer),
            info,
        }
    }

    /// The peer's identity.
    pub fn info(&self) -> PeerInfo {
        self.info
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The stream of accepted connections for tonic. Refused peers are logged here, once per
/// connection; their requests are answered by [`crate::daemon::peer::PeerCheckLayer`].
///
/// An accept error (e.g. out of file descriptors) is logged and followed by a short pause:
/// tonic retries at once, which would otherwise spin.
pub fn incoming(
    listener: tokio::net::UnixListener,
    policy: Arc<PeerPolicy>,
) -> impl Stream<Item = io::Result<PeerStream>> + Send + 'static {
    tokio_stream::wrappers::UnixListenerStream::new(listener).then(move |res| {
        let policy = Arc::clone(&policy);
        async move {
            match res {
                Ok(stream) => {
                    let s = PeerStream::new(stream);
                    if let Err(why) = policy.check(s.info().uid) {
                        tracing::warn!(peer_uid = ?s.info().uid, "refusing a connection: {why}");
                    }
                    Ok(s)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(e)
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_replaces_stale_refuses_live_and_non_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join("s.sock");

        let (l, file, prev) = bind(&path, &SocketAccess::owner_only()).unwrap();
        assert_eq!(prev, Previous::Nothing);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        // Live: the listener is open.
        assert!(matches!(
            bind(&path, &SocketAccess::owner_only()),
            Err(SocketError::Live { .. })
        ));

        // Someone deletes our socket file and another instance binds the path while we
        // still listen: removing "ours" must leave the newcomer's file alone.
        std::fs::remove_file(&path).unwrap();
        let (l2, file2, prev) = bind(&path, &SocketAccess::owner_only()).unwrap();
        assert_eq!(prev, Previous::Nothing);
        assert!(!file.remove_if_ours().unwrap());
        assert!(path.exists());
        drop(l);

        // Stale: the listener is gone, the file stays; the next bind replaces it.
        drop(l2);
        let (_l3, file3, prev) = bind(&path, &SocketAccess::owner_only()).unwrap();
        assert_eq!(prev, Previous::ReplacedStale);
        assert!(file3.remove_if_ours().unwrap());
        assert!(!path.exists());
        let _ = file2;

        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(matches!(
            bind(&plain, &SocketAccess::owner_only()),
            Err(SocketError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&plain).unwrap(), b"x");
    }

    #[test]
    fn access_follows_the_allowed_uids() {
        assert_eq!(SocketAccess::for_policy(1000, &[]).socket_mode(), 0o600);
        // Our own uid and root need no wider file permissions.
        let own_and_root = SocketAccess::for_policy(1000, &[1000, 0]);
        assert_eq!(own_and_root, SocketAccess::owner_only());
        assert_eq!(own_and_root.dir_mode(), 0o700);
        let other = SocketAccess::for_policy(0, &[65534, 1001, 65534]);
        assert_eq!(other.others(), &[1001, 65534]);
        assert_eq!(other.socket_mode(), 0o666);
        assert_eq!(other.dir_mode(), 0o711);
    }

    #[test]
    fn binds_0666_with_other_allowed_uids_and_names_unsearchable_ancestors() {
        let tmp = tempfile::tempdir().unwrap();
        let access = SocketAccess::for_policy(platform::current_uid(), &[4242]);

        // A directory the daemon creates is searchable (0711); the socket is 0666.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = tmp.path().join("run").join("s.sock");
        let (_l, file, _) = bind(&path, &access).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o666);
        assert_eq!(mode(path.parent().unwrap()), 0o711);
        let below_tmp: Vec<_> = unreachable_ancestors(&path, &access)
            .into_iter()
            .filter(|u| u.dir.starts_with(tmp.path()))
            .collect();
        assert!(below_tmp.is_empty(), "{below_tmp:?}");
        assert!(file.remove_if_ours().unwrap());

        // A 0700 directory on the way is named, with the uids it stops.
        let private = tmp.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let inner = private.join("s.sock");
        let found = unreachable_ancestors(&inner, &access);
        assert_eq!(found[0].dir, private);
        assert_eq!(found[0].mode, 0o700);
        assert_eq!(found[0].uids, vec![4242]);
        assert_eq!(found[0].group, None);
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(unreachable_ancestors(&inner, &access)[0].group.is_some());
        assert!(unreachable_ancestors(&inner, &SocketAccess::owner_only()).is_empty());
    }
}
