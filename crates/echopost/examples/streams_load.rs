//! Fills a running daemon's stream and producer tables, to measure its memory with many
//! of both (issue 14): `STREAMS` distinct streams (batches of 1000 records, one stream
//! each) and `PRODUCERS` idempotent producers (one batch of one record each), then prints
//! how long the appends took and what `ListStreams` counts. Read the daemon's RSS from
//! `/proc/PID/status` (`VmRSS`, `VmHWM`) before and after.
//!
//! `cargo run --example streams_load -- SOCKET [STREAMS] [PRODUCERS]` (defaults 100000, 10000)

use std::time::Instant;

use echopost_client::{Client, Record};
use echopost_proto::v1::AppendRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: streams_load SOCKET [STREAMS] [PRODUCERS]")?;
    let streams: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let producers: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let client = Client::connect(&socket).await?;
    let started = Instant::now();
    for chunk in (0..streams).collect::<Vec<_>>().chunks(1000) {
        let records = chunk
            .iter()
            .map(|i| Record {
                stream: format!("stream-{i:06}"),
                payload: vec![b'x'; 64],
                ..Record::default()
            })
            .collect();
        client.append(records).await?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let c = client.clone();
        tasks.spawn(async move {
            c.append_request(AppendRequest {
                records: vec![Record {
                    payload: vec![b'y'; 64],
                    ..Record::default()
                }],
                producer_id: format!("producer-{p:05}"),
                producer_sequence: 1,
                expected_stream_version: None,
            })
            .await
        });
        if tasks.len() >= 64 {
            tasks.join_next().await.ok_or("no task")???;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let appended = started.elapsed();
    let t = Instant::now();
    let listed = client.list_streams().await?;
    println!(
        "appended {streams} streams and {producers} producers in {:.1} s; ListStreams: {} streams in {:.2} s",
        appended.as_secs_f64(),
        listed.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
