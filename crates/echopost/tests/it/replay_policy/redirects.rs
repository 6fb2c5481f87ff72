//! HTTP redirects and `Retry-After` on health probes, against `py/http_server.py`:
//!
//! * a 307 or 308 to the same origin is followed with the method, headers and body kept,
//!   so a main server that moved its route keeps receiving everything, in order;
//! * a redirect that is not followed (301/302/303, or any redirect to another origin) is a
//!   server-level failure: replay pauses, nothing is dead-lettered, nothing (credentials
//!   included) is sent to the other origin, and `status` says to fix `--upstream`;
//! * a health probe answered 503 with `Retry-After` is not repeated before then, and an
//!   HTTP-date is measured against the response's `Date`, not the local clock.

use std::time::Instant;

use super::*;
use crate::support::daemon::Area;

/// Records buffered for each test.
const RECORDS: u64 = 200;

/// The accepted requests (2xx) on `path`: `(order number, method, authorization)`.
fn accepted_on(server: &PyServer, path: &str) -> Vec<(u64, String, String)> {
    server
        .events_of("req")
        .iter()
        .filter(|e| {
            e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter(|e| e["path"] == path)
        .map(|e| {
            (
                order_number(e["body"].as_str().unwrap_or_default()).expect("an order"),
                e["method"].as_str().unwrap_or_default().to_owned(),
                e["headers"]["authorization"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// `http_server.py` flags: `/orders…` answered `status` with `Location: location…`.
fn redirect_args(status: u16, location: &str) -> Vec<String> {
    [
        "--redirect-from",
        "/orders",
        "--redirect-to",
        location,
        "--redirect-status",
        &status.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `POST /orders` answered `status` with `Location: /v2/orders`: every record arrives at
/// `/v2/orders`, as a POST with its body and the operator's credentials, in order, once.
async fn same_origin_redirect_is_followed(test: &str, status: u16) {
    let Some(python) = python(test) else {
        return;
    };
    let (area, server, mut d) = http_setup(
        &python,
        &redirect_args(status, "/v2/orders"),
        &["--upstream-header", "Authorization: Bearer op"],
    )
    .await;
    append(&d, (1..=RECORDS).map(order).collect()).await;
    wait_until("every order accepted at /v2/orders", || {
        accepted_on(&server, "/v2/orders").len() >= RECORDS as usize
    })
    .await;
    let accepted = accepted_on(&server, "/v2/orders");
    let numbers: Vec<u64> = accepted.iter().map(|a| a.0).collect();
    assert_eq!(
        numbers,
        (1..=RECORDS).collect::<Vec<_>>(),
        "every record, in order, once; {}",
        context(&d, &server)
    );
    for (n, method, auth) in &accepted {
        assert_eq!(method, "POST", "order {n}: the method is kept");
        assert_eq!(
            auth, "Bearer op",
            "order {n}: same origin, credentials kept"
        );
    }
    let redirected = server
        .events_of("req")
        .iter()
        .filter(|e| e["status"] == status)
        .count();
    assert_eq!(
        redirected, RECORDS as usize,
        "each record first went to /orders"
    );
    d.stop().await;
    let letters = dead_letters(&area.dir()).await;
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    report(
        test,
        format!(
            "HTTP {status} to the same origin: delivered {} of {RECORDS} at /v2/orders in order, \
             {redirected} redirects followed, dead-lettered {}, duplicates {}",
            numbers.len(),
            letters.len(),
            duplicates(&numbers)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_308_to_the_same_origin_is_followed() {
    same_origin_redirect_is_followed("http_308_to_the_same_origin_is_followed", 308).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_307_to_the_same_origin_is_followed() {
    same_origin_redirect_is_followed("http_307_to_the_same_origin_is_followed", 307).await;
}

/// A redirect EchoPost must not follow: replay pauses with a reason naming the target
/// and `--upstream`; the other origin (`other`, when given) never sees a request; once the
/// server stops redirecting, everything is delivered in order.
async fn unfollowed_redirect_pauses(test: &str, status: u16, cross_origin: bool) {
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    // The origin a cross-origin redirect points to: a server of its own that counts what
    // reaches it.
    let other = if cross_origin {
        Some(PyServer::start(&python, "http_server.py", &[], area.root.path()).await)
    } else {
        None
    };
    let location = match &other {
        Some(o) => format!("http://localhost:{}/orders", o.port),
        None => "/v2/orders".to_owned(),
    };
    let (mut server, mut d) = http_setup_in(
        &python,
        &area,
        &redirect_args(status, &location),
        &["--upstream-header", "Authorization: Bearer op"],
    )
    .await;
    append(&d, (1..=RECORDS).map(order).collect()).await;
    let dir = area.dir();
    wait_until(&format!("three deliveries answered {status}"), || {
        server
            .events_of("req")
            .iter()
            .filter(|e| e["status"] == status)
            .count()
            >= 3
    })
    .await;
    let mut during = status_json(&dir).await;
    for _ in 0..250 {
        if during["failing"]["class"] == "server" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        during = status_json(&dir).await;
    }
    let detail = during["upstream_detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("server failure")
            && detail.contains(&format!("HTTP {status}"))
            && detail.contains(&location)
            && detail.contains("fix --upstream"),
        "status names the redirect and what to fix: {during:#}"
    );
    assert_eq!(during["dead_lettered_records"], 0, "{during:#}");
    assert_eq!(during["delivered_records"], 0, "{during:#}");

    server.command("redirect off").await;
    wait_until("every order accepted at /orders", || {
        accepted_on(&server, "/orders").len() >= RECORDS as usize
    })
    .await;
    let numbers: Vec<u64> = accepted_on(&server, "/orders")
        .iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(
        numbers,
        (1..=RECORDS).collect::<Vec<_>>(),
        "every record, in order, once; {}",
        context(&d, &server)
    );
    let elsewhere = other.as_ref().map_or(0, |o| o.events_of("req").len());
    assert_eq!(
        elsewhere, 0,
        "nothing, credentials included, went to the other origin"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    report(
        test,
        format!(
            "HTTP {status} to {location}: paused ({} refusals), dead-lettered {}, requests to \
             the other origin {elsewhere}, then delivered {} of {RECORDS} in order, duplicates \
             {}; status during the pause: {detail:?}",
            server
                .events_of("req")
                .iter()
                .filter(|e| e["status"] == status)
                .count(),
            letters.len(),
            numbers.len(),
            duplicates(&numbers)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_308_to_another_origin_pauses_and_sends_nothing_there() {
    unfollowed_redirect_pauses(
        "http_308_to_another_origin_pauses_and_sends_nothing_there",
        308,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_301_pauses_instead_of_turning_a_post_into_a_get() {
    unfollowed_redirect_pauses(
        "http_301_pauses_instead_of_turning_a_post_into_a_get",
        301,
        false,
    )
    .await;
}

/// The health probe answers 503 with `Retry-After` (`retry_after`, with `date` as the
/// response's `Date` when given) for `window`: at most `window / wait + 1` probes.
async fn probes_wait_for_retry_after(test: &str, retry_after: &str, date: Option<&str>) {
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let mut args = vec![
        "--health-status".to_owned(),
        "503".to_owned(),
        "--health-retry-after".to_owned(),
        retry_after.to_owned(),
    ];
    if let Some(date) = date {
        args.extend(["--date".to_owned(), date.to_owned()]);
    }
    let (mut server, mut d) = http_setup_in(&python, &area, &args, &[]).await;
    append(&d, (1..=10).map(order).collect()).await;
    wait_until("a first health probe", || {
        !server.events_of("health").is_empty()
    })
    .await;
    let first = Instant::now();
    // The server asks for 2 s: over 3 s, the first probe and at most one more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = server.events_of("health").len();
    let watched = first.elapsed();
    assert!(
        probes <= 2,
        "{probes} probes in {watched:?} although the server asked for 2 s between them; {}",
        context(&d, &server)
    );
    let st = status_json(&area.dir()).await;
    assert_eq!(st["failing"]["class"], "unhealthy", "{st:#}");
    assert_eq!(st["failing"]["stuck_sequence"], 1, "{st:#}");

    server.command("health-retry-after off").await;
    server.command("health 200").await;
    wait_until("every order accepted", || {
        accepted_on(&server, "/orders").len() >= 10
    })
    .await;
    d.stop().await;
    report(
        test,
        format!(
            "health 503 with Retry-After {retry_after:?} (Date {date:?}): {probes} probes in \
             {:.1}s, then delivered {} of 10",
            watched.as_secs_f64(),
            accepted_on(&server, "/orders").len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_honours_retry_after_seconds() {
    probes_wait_for_retry_after("health_probe_honours_retry_after_seconds", "2", None).await;
}

/// The server's clock is decades behind: the date is 2 s after the response's `Date`, so
/// the wait is 2 s (measured against the local clock it would be none at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_measures_a_retry_after_date_against_the_response_date() {
    probes_wait_for_retry_after(
        "health_probe_measures_a_retry_after_date_against_the_response_date",
        "Sun, 06 Nov 1994 08:49:39 GMT",
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
    )
    .await;
}
