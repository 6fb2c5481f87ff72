//! An application that posts events to its main server over HTTP and, when the server is
//! unreachable, hands them to EchoPost instead. EchoPost later replays each one verbatim
//! (`--sink forward`) as the same `POST /events` request, once the server is healthy.
//!
//! ```sh
//! cargo build --release -p echopost
//! ECHOPOST_BIN=target/release/echopost \
//!   cargo run -p echopost-client --example fallback_app -- 127.0.0.1:8080 /tmp/echopost-demo
//! ```
//!
//! With nothing listening on 127.0.0.1:8080 every event goes to EchoPost; start a server
//! there and the daemon replays the backlog to it, then exits.

use std::time::Duration;

use echopost_client::{DaemonSettings, Fallback, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one event the normal way. A minimal HTTP/1.1 POST keeps the example free of an
/// HTTP client dependency; a real application uses its usual client.
async fn post_to_main_server(addr: &str, body: &[u8]) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await??;
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let ok = resp.starts_with(b"HTTP/1.1 2") || resp.starts_with(b"HTTP/1.0 2");
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other("main server answered with an error"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let main_server = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let dir = args.next().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("echopost-demo")
            .display()
            .to_string()
    });

    let mut settings = DaemonSettings::new(&dir);
    settings.upstream = Some(format!("http://{main_server}"));
    let fallback = Fallback::new(settings);

    for i in 0..10u32 {
        let body = format!("{{\"event\":{i}}}").into_bytes();
        match post_to_main_server(&main_server, &body).await {
            Ok(()) => println!("event {i}: delivered to the main server"),
            Err(e) => {
                let ack = fallback
                    .append(vec![Record {
                        id: format!("event-{i}"),
                        stream: "events".into(),
                        payload: body,
                        headers: [("content-type".to_owned(), "application/json".to_owned())]
                            .into(),
                        route: "POST /events".into(),
                        timestamp_unix_nanos: 0,
                    }])
                    .await?;
                println!(
                    "event {i}: main server unavailable ({e}); kept by EchoPost as sequence {}",
                    ack.first_sequence
                );
            }
        }
    }
    Ok(())
}
