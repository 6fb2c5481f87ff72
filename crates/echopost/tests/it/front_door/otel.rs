//! OpenTelemetry end to end: the Python SDK's OTLP/gRPC exporters, configured only by
//! environment variables, export to the socket while the receiver is down; the daemon is
//! killed with SIGKILL between two exporting runs; a real OTLP receiver comes up and gets
//! every acknowledged item, in export order per signal.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use super::{report, script};
use crate::real_clients::run_client;
use crate::replay_policy::{PyServer, context, python, status_json, wait_until};
use crate::support::daemon::{Area, Daemon};

/// Items per exporting run and signal.
const PER_RUN: u64 = 5;

/// What one exporting run acknowledged, per signal, in export order.
async fn export(python: &std::ffi::OsString, socket: &std::path::Path, first: u64) -> Vec<Value> {
    let mut cmd = Command::new(python);
    cmd.arg(script("otel_export.py"))
        .arg(first.to_string())
        .arg(PER_RUN.to_string())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("unix://{}", socket.display()),
        )
        .env("OTEL_EXPORTER_OTLP_INSECURE", "true")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "20")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let run = run_client(cmd).await;
    run.expect_success("otel_export.py");
    let results = run.results();
    for r in &results {
        assert_eq!(
            r["ok"], true,
            "every export acknowledged: {r}\nstderr:\n{}",
            run.stderr
        );
    }
    results
}

/// Items per signal, in order, from `(signal, items)` documents.
fn per_signal<'a>(
    docs: impl Iterator<Item = (&'a str, &'a Value)>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (signal, items) in docs {
        let list = out.entry(signal.to_owned()).or_default();
        for i in items.as_array().unwrap() {
            list.push(i.as_str().unwrap().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_survive_a_receiver_outage_and_a_daemon_kill() {
    let test = "otlp_exports_survive_a_receiver_outage_and_a_daemon_kill";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    // The receiver's port, reserved now and free while it is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("grpc://127.0.0.1:{port}");
    let args = [
        "--upstream",
        upstream.as_str(),
        "--accept-grpc",
        "opentelemetry.proto.collector.*",
    ];
    let mut first = Daemon::start(&area, &args).await;
    let mut acknowledged = export(&python, &first.socket, 0).await;
    first.kill();
    let mut d = Daemon::start(&area, &args).await;
    acknowledged.extend(export(&python, &d.socket, PER_RUN).await);
    let sent = per_signal(
        acknowledged
            .iter()
            .map(|r| (r["signal"].as_str().unwrap(), &r["items"])),
    );
    for signal in ["traces", "logs", "metrics"] {
        let n = sent.get(signal).map_or(0, Vec::len) as u64;
        assert!(n >= 2 * PER_RUN, "{signal}: {n} items exported: {sent:#?}");
    }
    let st = status_json(&area.dir()).await;
    assert_eq!(st["delivered_records"], 0, "the receiver is down: {st:#}");

    let receiver = PyServer::start_script(
        &python,
        &script("otlp_receiver.py"),
        &["--port".into(), port.to_string()],
        area.root.path(),
    )
    .await;
    let total: usize = acknowledged.len();
    wait_until("every export at the receiver", || {
        ["traces", "logs", "metrics"]
            .iter()
            .map(|s| receiver.events_of(s).len())
            .sum::<usize>()
            >= total
    })
    .await;
    let events: Vec<(String, Value)> = ["traces", "logs", "metrics"]
        .iter()
        .flat_map(|s| {
            receiver
                .events_of(s)
                .into_iter()
                .map(move |e| (s.to_string(), e["items"].clone()))
        })
        .collect();
    let received = per_signal(events.iter().map(|(s, items)| (s.as_str(), items)));
    assert_eq!(
        received,
        sent,
        "every acknowledged item, once, in export order per signal\n{}",
        context(&d, &receiver)
    );
    let want_spans: Vec<String> = (0..2 * PER_RUN).map(|i| format!("span-{i}")).collect();
    assert_eq!(received["traces"], want_spans);
    let want_logs: Vec<String> = (0..2 * PER_RUN).map(|i| format!("log-{i}")).collect();
    assert_eq!(received["logs"], want_logs);
    d.stop().await;
    report(
        test,
        format!(
            "{} exports ({} spans, {} logs, {} metric points) acknowledged across a kill -9; \
             all arrived in export order per signal once the receiver came up",
            total,
            received["traces"].len(),
            received["logs"].len(),
            received["metrics"].len()
        ),
    );
}
