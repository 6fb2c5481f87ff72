//! Node's @grpc/grpc-js, with @grpc/proto-loader loading the repository's proto at run
//! time, stock options, on `unix:ABS`.

use std::collections::HashMap;
use std::process::Command;

use super::{H2_DEBUG, REPLACED_LINE, fixture, h2_warnings, node, proto_root, run_client, say};
use crate::support::daemon::{Area, Daemon, read_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_stock_client_unix_absolute_path() {
    let test = "real_clients::grpc_js::grpc_js_stock_client_unix_absolute_path";
    let Some(node) = node(test) else {
        return;
    };
    let area = Area::new();
    let mut d = Daemon::start(&area, H2_DEBUG).await;
    let target = format!("unix:{}", area.socket().display());
    let tag = "grpc-js";
    let mut cmd = Command::new(&node);
    cmd.arg(fixture("node/client.js"))
        .arg("--target")
        .arg(&target)
        .arg("--proto-root")
        .arg(proto_root())
        .arg("--tag")
        .arg(tag)
        .current_dir(area.root.path());
    let run = run_client(cmd).await;
    run.expect_success("node/client.js");
    let r = run.result();
    let ctx = format!("target {target}; client output:\n{}", run.stdout);

    assert_eq!(r["append"]["first_sequence"], 1, "{ctx}");
    assert_eq!(r["append"]["last_sequence"], 2, "{ctx}");
    let st = &r["status"];
    assert_eq!(st["first_sequence"], 1, "{ctx}");
    assert_eq!(st["next_sequence"], 3, "{ctx}");
    assert_eq!(st["backlog_records"], 2, "{ctx}");
    assert!(st["backlog_bytes"].as_u64().unwrap() > 0, "{ctx}");
    assert_eq!(st["pid"], d.pid(), "{ctx}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"), "{ctx}");
    assert_eq!(st["upstream_state"], "UPSTREAM_STATE_NONE", "{ctx}");

    // The records are stored as client.js sent them (its `records()`).
    let mut c = d.client().await;
    let (stored, _) = read_all(&mut c, 1, 0).await;
    drop(c);
    assert_eq!(stored.len(), 2);
    let first = stored[0].record.as_ref().unwrap();
    assert_eq!(stored[0].sequence, 1);
    assert_eq!(
        (
            first.id.as_str(),
            first.stream.as_str(),
            first.route.as_str()
        ),
        ("grpc-js-1", tag, "POST /events")
    );
    assert_eq!(first.payload, br#"{"event": "signup", "user": 7}"#);
    assert_eq!(
        first.headers,
        HashMap::from([
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-client".to_owned(), "grpc-js".to_owned()),
        ])
    );
    let second = stored[1].record.as_ref().unwrap();
    assert_eq!(stored[1].sequence, 2);
    assert_eq!(
        (second.id.as_str(), second.route.as_str()),
        ("grpc-js-2", "PUT /raw")
    );
    assert_eq!(second.payload, vec![0, 1, 2, 255]);
    assert!(second.headers.is_empty());
    assert!(first.timestamp_unix_nanos > 0 && second.timestamp_unix_nanos > 0);

    let logs = d.session_logs();
    let warnings = h2_warnings(&logs);
    assert!(warnings.is_empty(), "{warnings:#?}");
    // grpc-js names a UNIX target `localhost`; say whether that is still so.
    let replaced = if logs.contains(REPLACED_LINE) {
        "replaced"
    } else {
        "usable as sent"
    };
    d.stop().await;
    say(format!(
        "{test}: @grpc/grpc-js {} on {target:?}, insecure credentials, no options: Append -> \
         sequences 1..2; Status next_sequence 3, backlog 2 records, pid of this daemon, \
         upstream NONE; the daemon stored both records as sent; :authority {replaced}; no \
         HTTP/2 warning ({:.1} s)",
        r["grpc_js"].as_str().unwrap_or("?"),
        run.elapsed.as_secs_f64()
    ));
}
