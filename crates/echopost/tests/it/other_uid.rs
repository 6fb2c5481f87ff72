//! `--allow-uid` across real users: the daemon runs as root and the client as `nobody`
//! (65534). Needs root (CI runs the tests as root); prints SKIPPED otherwise.
//!
//! * allowed, socket in a directory others can search: `send` and `status` work;
//! * not allowed: the socket is 0600, so `nobody` cannot open it, and the commands say
//!   "permission denied on <socket>" (exit 5), never "no daemon answers";
//! * allowed, but the socket in the 0700 state directory: the daemon warns at startup,
//!   naming the directory, and the client gets the same permission error;
//! * another uid allowed: `nobody` opens the socket and the daemon refuses its uid; still
//!   a permission error.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::support::daemon::{Area, CliOutput, Daemon, ENV_VARS, run_command_output};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `echopost ARGS` (the binary at `bin`) run as `nobody` in `cwd`, with the
/// `ECHOPOST_*` environment cleared.
fn as_nobody(bin: &Path, cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("ECHOPOST_BIN");
    cmd.current_dir(cwd).uid(NOBODY).gid(NOBODY);
    run_command_output(cmd, stdin)
}

/// The echopost binary at a path every user can reach and run: the test's own if every
/// directory above it is searchable by others, else a copy under `root` (mode 0755).
fn reachable_binary(root: &Path) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_echopost"));
    let open = |p: &Path, bits: u32| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & bits == bits)
            .unwrap_or(false)
    };
    if open(&bin, 0o005)
        && bin
            .ancestors()
            .skip(1)
            .all(|a| a.as_os_str().is_empty() || open(a, 0o001))
    {
        return bin;
    }
    let copy = root.join("echopost");
    std::fs::copy(&bin, &copy).unwrap();
    chmod(&copy, 0o755);
    copy
}

fn assert_permission_error(out: &CliOutput, socket: &Path) {
    assert_eq!(
        out.code, 5,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let want = format!("permission denied on {}", socket.display());
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(out.stderr.contains("--allow-uid"), "{}", out.stderr);
    assert!(!out.stderr.contains("no daemon answers"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("no echopost daemon answers"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn allow_uid_lets_another_user_in_and_a_refusal_says_permission_denied() {
    if !is_root() {
        println!(
            "SKIPPED other_uid::allow_uid_lets_another_user_in_and_a_refusal_says_permission_denied: needs root to run a client as uid {NOBODY}"
        );
        return;
    }
    let area = Area::new();
    let root = area.root.path().to_path_buf();
    chmod(&root, 0o755);
    let bin = reachable_binary(&root);
    let run_dir = root.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    chmod(&run_dir, 0o755);
    let socket = run_dir.join("s.sock");
    let sock = socket.display().to_string();
    let dir = area.dir().display().to_string();
    let send = |stdin: &'static [u8]| {
        as_nobody(
            &bin,
            &root,
            &["send", "--dir", &dir, "--socket", &sock, "--json"],
            Some(stdin),
        )
    };
    let status = || {
        as_nobody(
            &bin,
            &root,
            &["status", "--dir", &dir, "--socket", &sock, "--json"],
            None,
        )
    };

    // Allowed: the socket is 0666 (the uid check is the gate) and nobody gets in.
    let mut d = Daemon::start(
        &area,
        &["--allow-uid", &NOBODY.to_string(), "--socket", &sock],
    )
    .await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let out = send(b"from nobody\n");
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(out.json()["ranges"], serde_json::json!([[1, 1]]));
    let out = status();
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(out.json()["mode"], "online");
    assert_eq!(out.json()["pid"], d.pid());
    assert!(
        !d.session_logs().contains("cannot reach the socket"),
        "{}",
        d.session_logs()
    );
    d.stop().await;

    // Not allowed: the socket is 0600; the kernel refuses nobody's connect.
    let mut d = Daemon::start(&area, &["--socket", &sock]).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_permission_error(&send(b"refused\n"), &socket);
    assert_permission_error(&status(), &socket);
    let out = as_nobody(
        &bin,
        &root,
        &["send", "--start-daemon", "--dir", &dir, "--socket", &sock],
        Some(b"refused\n"),
    );
    assert_permission_error(&out, &socket);
    d.stop().await;

    // Allowed, but the socket stays in the 0700 state directory: a warning names it,
    // and nobody still cannot reach the socket.
    let default_socket = area.socket();
    let mut d = Daemon::start(&area, &["--allow-uid", &NOBODY.to_string()]).await;
    let logs = d.session_logs();
    assert!(
        logs.contains("cannot reach the socket") && logs.contains(&dir),
        "{logs}"
    );
    let out = as_nobody(
        &bin,
        &root,
        &[
            "send",
            "--dir",
            &dir,
            "--socket",
            &default_socket.display().to_string(),
        ],
        Some(b"refused\n"),
    );
    assert_permission_error(&out, &default_socket);
    d.stop().await;

    // Another uid allowed: nobody opens the 0666 socket, and the daemon refuses its uid.
    let mut d = Daemon::start(&area, &["--allow-uid", "4242", "--socket", &sock]).await;
    let out = send(b"refused\n");
    assert_permission_error(&out, &socket);
    assert!(
        out.stderr.contains("does not accept uid 65534"),
        "{}",
        out.stderr
    );
    assert_permission_error(&status(), &socket);
    d.stop().await;

    // Only the allowed run stored anything.
    let d = Daemon::start(&area, &["--socket", &sock]).await;
    let mut c = d.client().await;
    let st = crate::support::daemon::status(&mut c).await;
    assert_eq!(st.next_sequence, 2, "{st:?}");
}
