//! The operator commands of the real binary on real directories: `status` (online and
//! offline), `inspect`, `verify` (intact and corrupted), `send`, `bench`, `dead-letters`,
//! and their `--help`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use echopost_proto::v1::{AppendRequest, Record};

use crate::real_clients::say;
use crate::support::daemon::{self, Area, Daemon, append, echopost, read_all, status};

fn dir_args(area: &Area) -> Vec<String> {
    vec!["--dir".to_owned(), area.dir().display().to_string()]
}

fn with<'a>(cmd: &'a str, area: &Area, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = cmd.split(' ').map(str::to_owned).collect();
    v.extend(dir_args(area));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String], stdin: Option<&[u8]>) -> daemon::CliOutput {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    echopost(&refs, stdin)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn status_online_and_offline_in_text_and_json() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"one", b"two", b"three"]).await.unwrap();

    let out = run(&with("status", &area, &[]), None).expect_code(0);
    assert!(out.stdout.contains("is running (pid"), "{}", out.stdout);
    assert!(out.stdout.contains("3 records"), "{}", out.stdout);
    assert!(out.stdout.contains("sequences 1 to 3"), "{}", out.stdout);
    assert!(out.stdout.contains("oldest"), "{}", out.stdout);
    assert!(
        out.stdout.contains("upstream   none configured"),
        "{}",
        out.stdout
    );

    let j = run(&with("status", &area, &["--json"]), None)
        .expect_code(0)
        .json();
    assert_eq!(j["mode"], "online");
    assert_eq!(j["pid"], d.pid());
    assert_eq!(j["backlog_records"], 3);
    assert_eq!(j["next_sequence"], 4);
    assert_eq!(j["upstream_state"], "none");
    assert_eq!(j["sync_policy"], "always");
    assert!(j["oldest_record_age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(j["delivery_records_per_second"].is_number());
    drop(c);
    d.stop().await;

    // Offline: the same figures from the directory, and it says so.
    let files_before = std::fs::read_dir(area.dir()).unwrap().count();
    let out = run(&with("status", &area, &[]), None).expect_code(0);
    assert!(out.stdout.starts_with("offline:"), "{}", out.stdout);
    assert!(out.stdout.contains("3 records"), "{}", out.stdout);
    assert!(out.stdout.contains("n/a (offline)"), "{}", out.stdout);
    let j = run(&with("status", &area, &["--json"]), None)
        .expect_code(0)
        .json();
    assert_eq!(j["mode"], "offline");
    assert_eq!(j["backlog_records"], 3);
    assert_eq!(j["first_sequence"], 1);
    assert_eq!(j["upstream_state"], "unknown");
    assert!(j["delivery_records_per_second"].is_null());
    assert!(j["oldest_record_unix_nanos"].as_i64().unwrap() > 0);
    assert_eq!(
        std::fs::read_dir(area.dir()).unwrap().count(),
        files_before,
        "offline status must not add files"
    );

    // A daemon holding the directory without answering: exit 3, naming the socket.
    let held = echopost_log::Log::open(area.dir(), echopost_log::LogOptions::default()).unwrap();
    let out = run(&with("status", &area, &[]), None).expect_code(3);
    assert!(out.stderr.contains("not answering on"), "{}", out.stderr);
    assert!(out.stderr.contains("echopost.sock"), "{}", out.stderr);
    drop(held);

    // Nothing there at all: exit 2 with a message naming both.
    let missing = area.root.path().join("nope");
    let out = echopost(&["status", "--dir", missing.to_str().unwrap()], None).expect_code(2);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(
        out.stderr.contains("no daemon answers on"),
        "{}",
        out.stderr
    );
    assert!(!missing.exists(), "status must not create the directory");

    // The env twins work like --dir.
    let mut cmd = daemon::cli_command(&["status", "--json"]);
    cmd.env("ECHOPOST_DIR", area.dir());
    let j = daemon::run_command_output(cmd, None).expect_code(0).json();
    assert_eq!(j["backlog_records"], 3);
}

#[tokio::test]
async fn inspect_prints_json_lines_with_utf8_and_base64_payloads() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let binary = vec![0xff, 0x00, 0xfe, 0x10];
    c.append(AppendRequest {
        records: vec![
            Record {
                id: "order-1".into(),
                stream: "orders".into(),
                payload: "héllo wörld".as_bytes().to_vec(),
                headers: [("content-type".to_owned(), "text/plain".to_owned())].into(),
                route: "POST /orders".into(),
                timestamp_unix_nanos: 1_767_323_045_123_000_000,
            },
            Record {
                id: "blob".into(),
                payload: binary.clone(),
                ..Record::default()
            },
        ],
        ..AppendRequest::default()
    })
    .await
    .unwrap();
    append(&mut c, &[b"third", b"fourth"]).await.unwrap();

    let out = run(&with("inspect", &area, &[]), None).expect_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0]["sequence"], 1);
    assert_eq!(lines[0]["id"], "order-1");
    assert_eq!(lines[0]["stream"], "orders");
    assert_eq!(lines[0]["route"], "POST /orders");
    assert_eq!(lines[0]["headers"]["content-type"], "text/plain");
    assert_eq!(lines[0]["payload_encoding"], "utf8");
    assert_eq!(lines[0]["payload"], "héllo wörld");
    assert_eq!(lines[0]["timestamp"], "2026-01-02T03:04:05.123Z");
    assert_eq!(lines[1]["payload_encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(lines[1]["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, binary);
    assert!(
        out.stderr
            .contains("4 record(s), sequences 1 to 4, read from the running daemon"),
        "{}",
        out.stderr
    );

    // --from / --limit, and --json without the summary.
    let out = run(
        &with("inspect", &area, &["--from", "2", "--limit", "2", "--json"]),
        None,
    )
    .expect_code(0);
    let seqs: Vec<u64> = out
        .json_lines()
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let out = run(&with("inspect", &area, &["--from", "9"]), None).expect_code(0);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("no records from sequence 9"),
        "{}",
        out.stderr
    );

    let online = run(&with("inspect", &area, &["--limit", "0"]), None)
        .expect_code(0)
        .stdout;
    drop(c);
    d.stop().await;

    // Offline: byte-for-byte the same lines, and the summary says offline.
    let out = run(&with("inspect", &area, &["--limit", "0"]), None).expect_code(0);
    assert_eq!(out.stdout, online);
    assert!(out.stderr.contains("offline"), "{}", out.stderr);
    let out = run(
        &with("inspect", &area, &["--from", "4", "--limit", "1"]),
        None,
    )
    .expect_code(0);
    assert_eq!(out.json_lines()[0]["payload"], "fourth");
}

#[tokio::test]
async fn inspect_pages_through_more_records_than_one_read() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let payloads: Vec<Vec<u8>> = (0..2500).map(|i| format!("r{i}").into_bytes()).collect();
    for chunk in payloads.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        append(&mut c, &refs).await.unwrap();
    }
    let lines = run(&with("inspect", &area, &["--limit", "0", "--json"]), None)
        .expect_code(0)
        .json_lines();
    assert_eq!(lines.len(), 2500);
    assert_eq!(lines[2499]["payload"], "r2499");
    assert_eq!(lines[2499]["sequence"], 2500);
    let lines = run(
        &with("inspect", &area, &["--limit", "1500", "--from", "700"]),
        None,
    )
    .expect_code(0)
    .json_lines();
    assert_eq!(lines.len(), 1500);
    assert_eq!(lines[0]["sequence"], 700);
    drop(c);
    d.stop().await;
}

#[tokio::test]
async fn verify_reports_intact_then_names_file_offset_and_next_steps() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"first frame"]).await.unwrap();
    append(&mut c, &[b"second", b"frame"]).await.unwrap();
    // Verify takes no lock: it runs beside a live daemon.
    let out = run(&with("verify", &area, &[]), None).expect_code(0);
    assert!(out.stdout.starts_with("intact:"), "{}", out.stdout);
    drop(c);
    d.stop().await;

    let out = run(&with("verify", &area, &[]), None).expect_code(0);
    assert!(out.stdout.contains("3 stored"), "{}", out.stdout);
    assert!(out.stdout.contains("backlog 3 record(s)"), "{}", out.stdout);
    let j = run(&with("verify", &area, &["--json"]), None)
        .expect_code(0)
        .json();
    assert_eq!(j["intact"], true);
    assert_eq!(j["log"]["records"], 3);
    assert_eq!(j["log"]["frames"], 2);

    // Flip one byte inside the first frame's body: the second frame is intact, so this
    // is damage, not a torn write.
    let seg = segments(&area.dir()).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = echopost_log::format::SEGMENT_HEADER_LEN as usize
        + echopost_log::format::FRAME_HEADER_LEN
        + 3;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();

    let out = run(&with("verify", &area, &[]), None).expect_code(4);
    let text = &out.stdout;
    assert!(text.starts_with("DAMAGED"), "{text}");
    assert!(
        text.contains(&format!("file    {}", seg.display())),
        "{text}"
    );
    assert!(text.contains("offset  byte "), "{text}");
    assert!(text.contains("reason  "), "{text}");
    assert!(text.contains("What you can do"), "{text}");
    assert!(
        text.contains(&format!("mv {}", area.dir().display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "`echopost salvage --dir {}`",
            area.dir().display()
        )),
        "verify recommends salvage with the exact command: {text}"
    );

    let out = run(&with("verify", &area, &["--json"]), None).expect_code(4);
    let j = out.json();
    assert_eq!(j["intact"], false);
    assert_eq!(j["damage"]["file"], seg.display().to_string());
    assert!(j["damage"]["offset"].is_u64());
    assert!(!j["damage"]["reason"].as_str().unwrap().is_empty());
    assert!(j["next_steps"].as_array().unwrap().len() >= 3);

    // The other commands refuse the damaged directory with the same exit code, pointing
    // at verify, and change nothing.
    let out = run(&with("status", &area, &[]), None).expect_code(4);
    assert!(
        out.stderr.contains("echopost verify --dir"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);

    // Nothing to verify.
    let missing = area.root.path().join("missing");
    echopost(&["verify", "--dir", missing.to_str().unwrap()], None).expect_code(2);
}

#[tokio::test]
async fn send_appends_lines_from_stdin_and_from_a_file() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let out = run(
        &with(
            "send",
            &area,
            &[
                "--stream",
                "s",
                "--id-prefix",
                "p-",
                "--header",
                "k=v=w",
                "--route",
                "POST /x",
                "--batch",
                "2",
            ],
        ),
        Some(b"alpha\nbeta\r\n\ngamma"),
    )
    .expect_code(0);
    assert_eq!(
        out.stdout,
        "stored 4 record(s) in 2 append(s) as sequences 1 to 4\n"
    );

    let file = area.root.path().join("lines.txt");
    std::fs::write(&file, "f1\nf2\nf3\n").unwrap();
    let j = run(
        &with("send", &area, &["--file", file.to_str().unwrap(), "--json"]),
        None,
    )
    .expect_code(0)
    .json();
    assert_eq!(j["records"], 3);
    assert_eq!(j["appends"], 1);
    assert_eq!(j["ranges"], serde_json::json!([[5, 7]]));

    let mut c = d.client().await;
    let (records, _) = read_all(&mut c, 1, 0).await;
    let got: Vec<(u64, String, String)> = records
        .iter()
        .map(|s| {
            let r = s.record.as_ref().unwrap();
            (
                s.sequence,
                r.id.clone(),
                String::from_utf8(r.payload.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "p-1".into(), "alpha".into()),
            (2, "p-2".into(), "beta".into()),
            (3, "p-3".into(), String::new()),
            (4, "p-4".into(), "gamma".into()),
            (5, String::new(), "f1".into()),
            (6, String::new(), "f2".into()),
            (7, String::new(), "f3".into()),
        ]
    );
    let r = records[0].record.as_ref().unwrap();
    assert_eq!(r.stream, "s");
    assert_eq!(r.route, "POST /x");
    assert_eq!(r.headers.get("k").map(String::as_str), Some("v=w"));

    // Empty input stores nothing.
    let out = run(&with("send", &area, &[]), Some(b"")).expect_code(0);
    assert!(out.stdout.contains("nothing sent"), "{}", out.stdout);
    assert_eq!(status(&mut c).await.next_sequence, 8);

    // A refused batch: exit 5, saying which lines were stored and which were not.
    let big = vec![b'x'; 5 << 20];
    let mut input = b"small\n".to_vec();
    input.extend_from_slice(&big);
    let out = run(&with("send", &area, &["--batch", "1"]), Some(&input)).expect_code(5);
    assert!(
        out.stderr.contains("lines 2 to 2 were not stored"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("sequences 8"), "{}", out.stderr);
    assert!(out.stderr.contains("--max-record-bytes"), "{}", out.stderr);
    drop(c);
    d.stop().await;

    // No daemon: exit 2 with the way out.
    let out = run(&with("send", &area, &[]), Some(b"x\n")).expect_code(2);
    assert!(out.stderr.contains("--start-daemon"), "{}", out.stderr);
    let out = run(
        &with("send", &area, &["--", "--linger", "1s"]),
        Some(b"x\n"),
    )
    .expect_code(2);
    assert!(
        out.stderr.contains("only apply with --start-daemon"),
        "{}",
        out.stderr
    );
    let out = run(
        &with("send", &area, &["--start-daemon", "--", "--linger", "soon"]),
        Some(b"x\n"),
    )
    .expect_code(2);
    assert!(
        out.stderr.contains("invalid `echopost run` flags"),
        "{}",
        out.stderr
    );
}

/// The bench drains its directory into a sink that discards everything, so a directory
/// that holds anything (an operator's real one, through `ECHOPOST_DIR`) is refused and
/// left as it was.
#[test]
fn bench_refuses_a_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("real");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("00000000000000000001.seg"), b"someone's records").unwrap();
    let dir_s = dir.to_str().unwrap();
    let out = echopost(&["bench", "--dir", dir_s, "--duration", "1s"], None).expect_code(2);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "the bench changed the directory");
    assert_eq!(
        std::fs::read(dir.join("00000000000000000001.seg")).unwrap(),
        b"someone's records"
    );
    // An empty one is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    echopost(
        &[
            "bench",
            "--dir",
            empty.to_str().unwrap(),
            "--duration",
            "1s",
        ],
        None,
    )
    .expect_code(0);
}

#[tokio::test]
async fn bench_reports_throughput_percentiles_drain_and_memory() {
    // Human output: a tiny duration-bound run with two producers.
    let out = echopost(
        &[
            "bench",
            "--duration",
            "1s",
            "--producers",
            "2",
            "--batch",
            "50",
        ],
        None,
    )
    .expect_code(0);
    let t = &out.stdout;
    for needle in [
        "machine",
        "2 producer(s)",
        "ingest",
        "records/s",
        "MB/s",
        "p50 ",
        "p90 ",
        "p99 ",
        "p99.9 ",
        "drain (to the no-op Sink/Deliver sink, answering after 0 ms, --in-flight 1)",
        "replayed",
        "peak",
    ] {
        assert!(t.contains(needle), "{needle:?} missing:\n{t}");
    }

    // JSON: a byte-bound run, pipelined.
    let j = echopost(
        &[
            "bench",
            "--total-bytes",
            "256KiB",
            "--batch",
            "64",
            "--window",
            "4",
            "--json",
        ],
        None,
    )
    .expect_code(0)
    .json();
    let ingest = &j["ingest"];
    let records = ingest["records"].as_u64().unwrap();
    assert!(records >= 1024, "{j}");
    assert!(ingest["bytes"].as_u64().unwrap() >= 256 << 10);
    assert!(ingest["records_per_second"].as_f64().unwrap() > 0.0);
    assert!(ingest["mb_per_second"].as_f64().unwrap() > 0.0);
    let lat = &ingest["latency"];
    let p50 = lat["p50_us"].as_f64().unwrap();
    let p999 = lat["p999_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p999, "{lat}");
    assert_eq!(j["drain"]["records"], records, "{j}");
    assert!(j["drain"]["records_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(j["daemon"]["started_by_bench"], true);
    assert_eq!(j["daemon"]["exit_code"], 0);
    assert!(j["machine"]["cpus"].as_u64().unwrap() >= 1);
    if cfg!(target_os = "linux") {
        assert!(ingest["peak_rss_bytes"].as_u64().unwrap() > 0, "{j}");
        assert!(j["drain"]["peak_rss_bytes"].as_u64().unwrap() > 0, "{j}");
    }
    // The temporary directory is gone (its path is in the report).
    let dir = j["daemon"]["dir"].as_str().unwrap();
    assert!(!Path::new(dir).exists(), "{dir} was left behind");
}

/// `--sink http`: the records are replayed verbatim, one request each, to the bench's HTTP
/// server, which holds each answer `--sink-latency`, with the daemon's `--in-flight`.
#[test]
fn bench_drains_verbatim_http_through_a_window() {
    let j = echopost(
        &[
            "bench",
            "--sink",
            "http",
            "--sink-latency",
            "5ms",
            "--in-flight",
            "8",
            "--total-bytes",
            "64KiB",
            "--batch",
            "64",
            "--json",
        ],
        None,
    )
    .expect_code(0)
    .json();
    let records = j["ingest"]["records"].as_u64().unwrap();
    assert!(records >= 256, "{j}");
    let drain = &j["drain"];
    assert_eq!(drain["records"], records, "{j}");
    assert_eq!(
        drain["requests"], records,
        "one verbatim request per record: {j}"
    );
    assert_eq!(drain["sink"]["kind"], "http", "{j}");
    assert_eq!(drain["sink"]["in_flight"], 8, "{j}");
    assert_eq!(drain["sink"]["latency_seconds"], 0.005, "{j}");
    assert!(drain["records_per_second"].as_f64().unwrap() > 0.0, "{j}");
    assert_eq!(j["daemon"]["exit_code"], 0, "{j}");
    say(format!(
        "cli_commands::bench_drains_verbatim_http_through_a_window: {records} records in {} requests, {:.0} records/s at 5 ms with --in-flight 8",
        drain["requests"],
        drain["records_per_second"].as_f64().unwrap()
    ));
}

/// `--front-door`: the producers make unary calls to an application method the daemon
/// captures with `--accept-grpc`; every call is one stored record, and all of them drain.
#[test]
fn bench_ingests_through_the_front_door() {
    let j = echopost(
        &[
            "bench",
            "--front-door",
            "--batch",
            "1",
            "--producers",
            "2",
            "--sync",
            "never",
            "--total-bytes",
            "64KiB",
            "--json",
        ],
        None,
    )
    .expect_code(0)
    .json();
    assert_eq!(j["load"]["front_door"], true, "{j}");
    let records = j["ingest"]["records"].as_u64().unwrap();
    assert_eq!(records, 256, "64 KiB of 256-byte calls: {j}");
    assert_eq!(j["ingest"]["appends"], records, "one call per record: {j}");
    assert_eq!(j["drain"]["records"], records, "{j}");
    assert_eq!(j["daemon"]["exit_code"], 0, "{j}");
    // Other load shapes are refused with a reason.
    let out = echopost(&["bench", "--front-door", "--batch", "10"], None).expect_code(2);
    assert!(out.stderr.contains("--batch 1"), "{}", out.stderr);
}

#[tokio::test]
async fn bench_against_a_running_daemon_skips_the_drain_without_an_upstream() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let sock = area.socket().display().to_string();
    let j = echopost(
        &[
            "bench",
            "--socket",
            &sock,
            "--duration",
            "300ms",
            "--batch",
            "10",
            "--producers",
            "3",
            "--connections",
            "2",
            "--json",
        ],
        None,
    )
    .expect_code(0)
    .json();
    assert_eq!(j["daemon"]["pid"], d.pid());
    assert_eq!(j["daemon"]["started_by_bench"], false);
    assert!(j["drain"].is_null());
    assert!(
        j["drain_skipped"].as_str().unwrap().contains("no upstream"),
        "{j}"
    );
    let mut c = d.client().await;
    assert_eq!(
        status(&mut c).await.backlog_records,
        j["ingest"]["records"].as_u64().unwrap()
    );
    drop(c);
    d.stop().await;
}

#[tokio::test]
async fn dead_letters_list_and_requeue() {
    use echopost::replay::dead_letters;
    use prost::Message;
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"kept"]).await.unwrap();

    let out = run(&with("dead-letters list", &area, &[]), None).expect_code(0);
    assert!(out.stdout.contains("no dead letters"), "{}", out.stdout);

    // A record the main server rejected, as the replayer writes it.
    let rejected = Record {
        id: "bad-1".into(),
        payload: b"{\"broken\":".to_vec(),
        route: "POST /orders".into(),
        timestamp_unix_nanos: 7,
        ..Record::default()
    };
    let mut w = dead_letters::Writer::new(&area.dir());
    let letter =
        dead_letters::make_dead_letter(42, &rejected.encode_to_vec(), "400 Bad Request: bad JSON")
            .unwrap();
    w.write(&letter, 0).unwrap();
    w.close().unwrap();

    let out = run(&with("dead-letters list", &area, &[]), None).expect_code(0);
    assert!(out.stdout.contains("sequence 42"), "{}", out.stdout);
    assert!(
        out.stdout.contains("400 Bad Request: bad JSON"),
        "{}",
        out.stdout
    );
    let lines = run(&with("dead-letters list", &area, &["--json"]), None)
        .expect_code(0)
        .json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "bad-1");
    assert_eq!(lines[0]["sequence"], 42);
    assert_eq!(lines[0]["reason"], "400 Bad Request: bad JSON");
    assert_eq!(lines[0]["payload"], "{\"broken\":");

    // Requeue while the daemon runs: through its Append, at the end of the backlog.
    let j = run(&with("dead-letters requeue", &area, &["--json"]), None)
        .expect_code(0)
        .json();
    assert_eq!(j["requeued"], 1);
    let out = run(&with("dead-letters list", &area, &[]), None).expect_code(0);
    assert!(out.stdout.contains("no dead letters"), "{}", out.stdout);
    let lines = run(&with("inspect", &area, &["--json"]), None)
        .expect_code(0)
        .json_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], "bad-1");
    assert_eq!(lines[1]["sequence"], 2, "requeued at the end, new sequence");
    assert_eq!(
        lines[1]["headers"]["echopost-original-sequence"], "42",
        "the first sequence travels with it: {}",
        lines[1]
    );

    // And with the daemon stopped: straight into the log.
    let mut w = dead_letters::Writer::new(&area.dir());
    w.write(
        &dead_letters::make_dead_letter(43, &rejected.encode_to_vec(), "again").unwrap(),
        0,
    )
    .unwrap();
    w.close().unwrap();
    drop(c);
    d.stop().await;
    let j = run(&with("dead-letters requeue", &area, &["--json"]), None)
        .expect_code(0)
        .json();
    assert_eq!(j["requeued"], 1);
    let lines = run(&with("inspect", &area, &["--json"]), None)
        .expect_code(0)
        .json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["sequence"], 3);
    assert_eq!(lines[2]["headers"]["echopost-original-sequence"], "43");
}

#[test]
fn every_command_has_help_with_dir_socket_env_twins_and_exit_codes() {
    for cmd in [
        &["status"][..],
        &["inspect"],
        &["verify"],
        &["salvage"],
        &["send"],
        &["bench"],
        &["dead-letters", "list"],
        &["dead-letters", "requeue"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = echopost(&args, None).expect_code(0);
        let h = &out.stdout;
        for needle in [
            "--dir",
            "ECHOPOST_DIR",
            "--socket",
            "ECHOPOST_SOCKET",
            "--json",
            "Exit codes",
        ] {
            assert!(h.contains(needle), "{cmd:?} --help lacks {needle:?}:\n{h}");
        }
    }
    let out = echopost(&["--help"], None).expect_code(0);
    for c in [
        "status",
        "inspect",
        "verify",
        "salvage",
        "send",
        "bench",
        "dead-letters",
    ] {
        assert!(out.stdout.contains(c), "{}", out.stdout);
    }
    echopost(&["status", "--no-such-flag"], None).expect_code(2);
}
