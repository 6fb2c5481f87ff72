//! Socket activation: the daemon serves the listening socket a service manager passes
//! (`LISTEN_FDS`/`LISTEN_PID`), exits 0 once drained, leaves the socket to the manager,
//! and the next connection is served by a new daemon on the same socket.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::{AppendRequest, AppendResponse, Record};

use super::{report, script};
use crate::replay_policy::{PyServer, python, wait_until};
use crate::support::daemon::{Area, connect, read_lossy};

/// How long a drained daemon may take to exit (linger 1 s, plus startup and replay).
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The daemon's flags: replay to `upstream`, exit one second after draining.
fn run_args(dir: &Path, upstream: &str) -> Vec<String> {
    [
        "run",
        "--dir",
        dir.to_str().unwrap(),
        "--linger",
        "1s",
        "--log-level",
        "info",
        "--upstream",
        upstream,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Appends one record with route `POST /orders/N` through the socket. The socket file
/// appears when the manager binds it, a moment before it listens: a refused connection
/// is tried again for up to 10 s (as a client of a starting service would).
async fn append_order(socket: &Path, n: u64) -> AppendResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ch = loop {
        match connect(socket).await {
            Ok(ch) => break ch,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect to the activated socket: {e:?}"),
        }
    };
    EchoPostClient::new(ch)
        .append(AppendRequest {
            records: vec![Record {
                payload: format!("order {n}").into_bytes(),
                route: format!("POST /orders/{n}"),
                ..Record::default()
            }],
            ..AppendRequest::default()
        })
        .await
        .expect("append")
        .into_inner()
}

/// Waits for `child` to exit; its exit code.
async fn exit_code(child: &mut Child, stderr: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < EXIT_WAIT,
            "the daemon did not exit within {EXIT_WAIT:?} after draining; stderr:\n{}",
            read_lossy(stderr)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `systemd-socket-activate` (Debian's systemd package) listens, starts the daemon on the
/// first connection with the socket as descriptor 3, the daemon stores and replays the
/// append and exits 0 once drained. Skipped, with the reason, where the tool is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_starts_the_daemon_on_connect() {
    let test = "systemd_socket_activate_starts_the_daemon_on_connect";
    let Some(python) = python(test) else {
        return;
    };
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        report(
            test,
            "SKIPPED: systemd-socket-activate is not installed (Debian/Ubuntu: apt-get install systemd)",
        );
        return;
    }
    let area = Area::new();
    let server =
        PyServer::start_script(&python, &script("http_app.py"), &[], area.root.path()).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let socket = area.root.path().join("activated.sock");
    let stderr = area.root.path().join("activate.stderr");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(env!("CARGO_BIN_EXE_echopost"))
        .args(run_args(&area.dir(), &upstream))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start systemd-socket-activate");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < EXIT_WAIT,
            "no socket: {}",
            read_lossy(&stderr)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a = append_order(&socket, 1).await;
    assert_eq!((a.first_sequence, a.last_sequence), (1, 1));
    let code = exit_code(&mut child, &stderr).await;
    let log = read_lossy(&stderr);
    assert_eq!(code, 0, "exit 0 once drained; stderr:\n{log}");
    assert!(log.contains("socket activation"), "{log}");
    let reqs = server.events_of("req");
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0]["path"], "/orders/1");
    assert!(
        socket.exists(),
        "the socket file is the service manager's, left alone"
    );
    report(
        test,
        "connect → daemon started by systemd-socket-activate → append → replayed → exit 0",
    );
}

/// The test as the service manager: it holds one listening socket across daemon
/// generations, as a systemd `.socket` unit does, and starts a daemon (descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_PID` its pid) when a connection waits. Generation 1 stores,
/// replays and exits 0; a client connects again and generation 2 serves it on the same
/// socket, with the sequence continuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_daemon_serves_the_next_connection_on_the_same_socket() {
    let test = "a_new_daemon_serves_the_next_connection_on_the_same_socket";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let server =
        PyServer::start_script(&python, &script("http_app.py"), &[], area.root.path()).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let socket = area.root.path().join("managed.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let start_daemon = |generation: u32| {
        let stderr = area.root.path().join(format!("gen{generation}.stderr"));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_echopost"))
            .args(run_args(&area.dir(), &upstream))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // SAFETY: dup2 is async-signal-safe; it puts the listening socket at descriptor 3
        // (without close-on-exec), as a service manager does.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        (cmd.spawn().expect("start echopost"), stderr)
    };

    for generation in 1..=2u64 {
        // The client connects first; the manager starts a daemon for it.
        let client = tokio::spawn({
            let socket = socket.clone();
            async move { append_order(&socket, generation).await }
        });
        let (mut child, stderr) = start_daemon(generation as u32);
        let a = client.await.unwrap();
        assert_eq!(
            (a.first_sequence, a.last_sequence),
            (generation, generation),
            "generation {generation}; stderr:\n{}",
            read_lossy(&stderr)
        );
        wait_until("the append replayed", || {
            server.events_of("req").len() as u64 >= generation
        })
        .await;
        let code = exit_code(&mut child, &stderr).await;
        assert_eq!(code, 0, "generation {generation}: {}", read_lossy(&stderr));
        assert!(socket.exists(), "the manager's socket file stays");
    }
    let paths: Vec<String> = server
        .events_of("req")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/orders/1", "/orders/2"]);
    drop(listener);
    report(
        test,
        "two daemon generations on one manager-held socket: each served its connection, replayed, exited 0",
    );
}
