//! What `bench` prints: the report, as JSON (`--json`) or as text.
//!
//! The report is one serialisable value, [`BenchReport`], built by the driver from the
//! phases' results, so that the JSON and the text can never disagree and scripts that
//! track figures over time get a stable shape. Type names here carry a `Report`
//! suffix where a bare name would clash with the daemon's own types (`server::Ingest`,
//! `replay::Progress`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::probe::Machine;
use crate::commands::{fmt_bytes, fmt_count, fmt_duration};

/// The load that was generated.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSettings {
    pub producers: u32,
    /// Connections the producers share; 0 = one each.
    pub connections: u32,
    pub batch_records: u32,
    pub record_bytes: u64,
    pub window: u32,
    /// Unary calls to an application method through the front door (`--front-door`)
    /// instead of `Append`.
    pub front_door: bool,
    pub duration_seconds: Option<f64>,
    pub total_bytes: Option<u64>,
}

/// Append latency in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// The ingest phase.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub records: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    pub appends: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Payload, in 10^6 bytes per second.
    pub mb_per_second: f64,
    /// From sending an append to its (durable) acknowledgement.
    pub latency: Latency,
    pub peak_rss_bytes: Option<u64>,
}

/// The drain phase.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Payload (`records × record_bytes`), in 10^6 bytes per second.
    pub mb_per_second: f64,
    /// As received by the no-op sink (encoded `DeliverRequest`s); `null` with --socket.
    pub wire_mb_per_second: Option<f64>,
    /// From the sink turning SERVING to the first `Deliver` (the replayer's probe backoff).
    pub wait_for_first_delivery_seconds: Option<f64>,
    /// Requests the sink received (`Deliver` calls, or verbatim HTTP requests); `null`
    /// with --socket.
    pub requests: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// The built-in sink and the daemon's window; `null` with --socket.
    pub sink: Option<DrainSink>,
}

/// What the drain replayed to.
#[derive(Debug, Clone, Serialize)]
pub struct DrainSink {
    /// `deliver` (gRPC `Sink/Deliver` batches) or `http` (verbatim HTTP requests).
    pub kind: String,
    /// `--sink-latency`: how long the sink held each answer.
    pub latency_seconds: f64,
    /// The daemon's `--in-flight`.
    pub in_flight: u32,
}

/// The daemon that was measured.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub dir: String,
    pub sync_policy: String,
    pub started_by_bench: bool,
    /// Exit code after the bench stopped it (started daemons only).
    pub exit_code: Option<i32>,
}

/// Everything `bench` prints, in the shape of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub load: LoadSettings,
    pub daemon: DaemonInfo,
    pub ingest: IngestReport,
    pub drain: Option<DrainReport>,
    /// Why there is no drain figure, when there is none.
    pub drain_skipped: Option<String>,
    /// True when Ctrl-C cut the run short.
    pub interrupted: bool,
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds, in microseconds. Each is the
    /// highest value of its bucket (so never below the true one), at most the maximum.
    pub fn from_nanos(hist: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        let max = hist.max();
        let at = |q: f64| us(hist.value_at_quantile(q).min(max));
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: us(max),
            mean_us: hist.mean() / 1000.0,
        }
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_rss(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".to_owned(), fmt_bytes)
}

/// The text form of the report.
pub fn human(r: &BenchReport) -> String {
    let mut o = String::new();
    let m = &r.machine;
    o.push_str("echopost bench\n");
    o.push_str(&format!(
        "  machine     {} CPU(s){}, {}{}\n",
        m.cpus,
        m.cpu_model
            .as_ref()
            .map_or(String::new(), |c| format!(" ({c})")),
        m.os,
        m.memory_bytes
            .map_or(String::new(), |b| format!(", {} RAM", fmt_bytes(b)))
    ));
    let d = &r.daemon;
    o.push_str(&format!(
        "  daemon      echopost {}, pid {}, {}, sync {}{}\n",
        d.version,
        d.pid,
        if d.started_by_bench {
            "started by the bench"
        } else {
            "given by --socket"
        },
        d.sync_policy,
        r.machine
            .storage_fs
            .as_ref()
            .map_or(String::new(), |f| format!(", directory on {f}"))
    ));
    let l = &r.load;
    let mut limit = Vec::new();
    if let Some(s) = l.duration_seconds {
        limit.push(format!("for {}", fmt_duration(Duration::from_secs_f64(s))));
    }
    if let Some(b) = l.total_bytes {
        limit.push(format!("up to {} of payload", fmt_bytes(b)));
    }
    o.push_str(&format!(
        "  load        {} producer(s){}, batches of {} record(s) of {} B, {}, {}\n",
        l.producers,
        if l.connections == 0 {
            String::new()
        } else {
            format!(" sharing {} connection(s)", l.connections.min(l.producers))
        },
        fmt_count(u64::from(l.batch_records)),
        l.record_bytes,
        if l.front_door {
            "one call in flight each (unary /bench.v1.Bench/Send through the front door, --accept-grpc)".to_owned()
        } else if l.window <= 1 {
            "one append in flight each (unary Append)".to_owned()
        } else {
            format!("{} appends in flight each (AppendStream)", l.window)
        },
        limit.join(" or ")
    ));
    let i = &r.ingest;
    o.push_str("\ningest\n");
    o.push_str(&format!(
        "  stored      {} records in {} appends, {:.2} s\n",
        fmt_count(i.records),
        fmt_count(i.appends),
        i.seconds
    ));
    o.push_str(&format!(
        "  throughput  {} records/s, {:.1} MB/s of payload\n",
        fmt_count(i.records_per_second as u64),
        i.mb_per_second
    ));
    o.push_str(&format!(
        "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (per append, send to durable ack)\n",
        fmt_us(i.latency.p50_us),
        fmt_us(i.latency.p90_us),
        fmt_us(i.latency.p99_us),
        fmt_us(i.latency.p999_us),
        fmt_us(i.latency.max_us)
    ));
    o.push_str(&format!(
        "  daemon RSS  peak {} while ingesting\n",
        fmt_rss(i.peak_rss_bytes)
    ));
    match (&r.drain, &r.drain_skipped) {
        (Some(dr), _) => {
            match &dr.sink {
                Some(s) => o.push_str(&format!(
                    "\ndrain (to the no-op {} sink, answering after {}, --in-flight {})\n",
                    if s.kind == "http" {
                        "verbatim-HTTP"
                    } else {
                        "Sink/Deliver"
                    },
                    fmt_duration(Duration::from_secs_f64(s.latency_seconds)),
                    s.in_flight
                )),
                None => o.push_str("\ndrain\n"),
            }
            o.push_str(&format!(
                "  replayed    {} records in {:.2} s{}\n",
                fmt_count(dr.records),
                dr.seconds,
                dr.wait_for_first_delivery_seconds
                    .map_or(String::new(), |w| format!(
                        " (first delivery {:.2} s after the sink turned healthy)",
                        w
                    ))
            ));
            o.push_str(&format!(
                "  throughput  {} records/s, {:.1} MB/s of payload{}\n",
                fmt_count(dr.records_per_second as u64),
                dr.mb_per_second,
                dr.wire_mb_per_second
                    .map_or(String::new(), |w| format!(" ({w:.1} MB/s on the wire)"))
            ));
            if let Some(n) = dr.requests {
                o.push_str(&format!(
                    "  requests    {} ({:.1} records each)\n",
                    fmt_count(n),
                    dr.records as f64 / n.max(1) as f64
                ));
            }
            o.push_str(&format!(
                "  daemon RSS  peak {} while replaying\n",
                fmt_rss(dr.peak_rss_bytes)
            ));
        }
        (None, Some(why)) => o.push_str(&format!("\ndrain: skipped ({why})\n")),
        (None, None) => {}
    }
    if r.interrupted {
        o.push_str("\ninterrupted: the figures cover the run until Ctrl-C\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_have_bounded_error() {
        let mut h = Histogram::<u64>::new_with_bounds(1, u64::MAX, 2).unwrap();
        let empty = Latency::from_nanos(&h);
        assert_eq!((empty.p50_us, empty.max_us, empty.mean_us), (0.0, 0.0, 0.0));
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::from_nanos(&h);
        assert!((500.0..=504.0).contains(&l.p50_us), "{l:?}");
        assert!((900.0..=908.0).contains(&l.p90_us), "{l:?}");
        assert!((990.0..=998.0).contains(&l.p99_us), "{l:?}");
        assert!((999.0..=1008.0).contains(&l.p999_us), "{l:?}");
        assert!((1000.0..=1008.0).contains(&l.max_us), "{l:?}");
        assert!(l.p999_us <= l.max_us);
        assert!((l.mean_us - 500.5).abs() < 4.0, "{l:?}");

        // Small values are exact.
        let mut h = Histogram::<u64>::new_with_bounds(1, u64::MAX, 2).unwrap();
        for v in [3u64, 3, 7, 200] {
            h.record(v).unwrap();
        }
        let l = Latency::from_nanos(&h);
        assert_eq!((l.p50_us, l.max_us), (0.003, 0.2));
    }
}
