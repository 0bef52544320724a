//! Hostile and broken clients against the real server on 127.0.0.1: slowloris headers and
//! bodies, floods of bad credentials and bad signatures with large bodies, and the
//! connection cap and body budget. Honest senders must keep being answered throughout, and
//! nothing a hostile client sends may be stored or buffered without bound.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

fn sonarr_auth() -> String {
    basic("sonarr", "Pa55w0rd!")
}

/// A Sonarr `Test` event of exactly `len` bytes (padded), unique by `tag`.
fn sonarr_body(tag: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"eventType":"Test","tag":"{tag}","pad":""#);
    let tail = "\"}";
    let pad = len.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

/// A request head for `path` with these extra header lines and a declared body length.
fn head(path: &str, headers: &[(&str, &str)], content_length: usize) -> String {
    let mut h =
        format!("POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!("Content-Length: {content_length}\r\n\r\n"));
    h
}

/// Resident memory of this process (the relay runs in it), from `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

async fn metrics_text(relay: &TestRelay) -> String {
    reqwest::get(relay.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series in the Prometheus text, e.g.
/// `relayarr_rejections_total{source="sonarr",status="401",reason="unauthorized"}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn rejections(text: &str, source: &str, status: u16, reason: &str) -> f64 {
    sample(
        text,
        &format!(
            r#"relayarr_rejections_total{{source="{source}",status="{status}",reason="{reason}"}}"#
        ),
    )
}

/// Posts one honest Sonarr event and checks it is committed; a hostile client that starved
/// the server makes the request time out and the test fail.
async fn honest_post(client: &reqwest::Client, relay: &TestRelay, tag: &str) {
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .header("authorization", sonarr_auth())
        .header("content-type", "application/json")
        .body(sonarr_body(tag, 300))
        .send()
        .await
        .unwrap_or_else(|e| panic!("honest request {tag} failed: {e}"));
    assert_eq!(resp.status(), 202, "honest request {tag}");
}

fn honest_client() -> reqwest::Client {
    // A bound on each honest request, not a measurement: starving would hit it.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// How a slow client's connection ended, seen from the client.
#[derive(Debug)]
struct SlowEnd {
    /// From the first byte sent to the server answering or closing.
    after: Duration,
    /// The answer, if the server sent one before closing.
    answer: Vec<u8>,
}

/// Sends `prefix` at once, then `drip` one byte per second, until the server answers or
/// closes the connection; returns when and what it answered.
async fn slow_client(addr: SocketAddr, prefix: Vec<u8>, drip: Vec<u8>) -> SlowEnd {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        if wr.write_all(&prefix).await.is_err() {
            return;
        }
        for b in drip {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Everything sent: keep the connection open without sending more.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first: Option<Duration> = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
            Err(_) => panic!("the server neither answered nor closed a slow connection within 15s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first.get_or_insert(start.elapsed());
                answer.extend_from_slice(&buf[..n]);
            }
        }
    }
    writer.abort();
    SlowEnd {
        after: first.unwrap_or_else(|| start.elapsed()),
        answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_slowloris_headers_and_bodies_do_not_starve_honest_senders() {
    let relay = start_relay("header_read_timeout = \"2s\"\nbody_read_timeout = \"2s\"").await;
    let addr = relay.addr;

    // Slow headers: a plausible request head, one byte per second (it would take minutes).
    let slow_head = head(
        "/api/v1/webhooks/sonarr",
        &[("Authorization", &sonarr_auth())],
        300,
    );
    let mut slow = Vec::new();
    for _ in 0..24 {
        let (first, rest) = slow_head.as_bytes().split_at(5);
        slow.push(tokio::spawn(slow_client(
            addr,
            first.to_vec(),
            rest.to_vec(),
        )));
    }
    // Slow bodies: authenticated headers at once, then the body one byte per second.
    let mut slow_bodies = Vec::new();
    for i in 0..8 {
        let body = sonarr_body(&format!("slow-{i}"), 300);
        let prefix = head(
            "/api/v1/webhooks/sonarr",
            &[("Authorization", &sonarr_auth())],
            body.len(),
        );
        slow_bodies.push(tokio::spawn(slow_client(addr, prefix.into_bytes(), body)));
    }

    // Honest senders are answered while all of those are open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = honest_client();
    let started = Instant::now();
    for i in 0..10 {
        honest_post(&client, &relay, &format!("honest-{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "honest requests must be answered while the slow connections are still open (took {:?})",
        started.elapsed()
    );

    for s in slow {
        let end = s.await.expect("slow header client");
        assert!(
            end.after >= Duration::from_millis(1500) && end.after < Duration::from_secs(8),
            "a slow header connection must be closed after header_read_timeout (2s): {end:?}"
        );
        let answer = String::from_utf8_lossy(&end.answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "nothing but a 408 may answer an incomplete head: {answer}"
        );
    }
    for s in slow_bodies {
        let end = s.await.expect("slow body client");
        let answer = String::from_utf8_lossy(&end.answer);
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a slow body must get 408: {answer}"
        );
        assert!(
            answer.contains(r#""code":"body_timeout""#),
            "JSON error body: {answer}"
        );
        assert!(
            end.after >= Duration::from_millis(1500) && end.after < Duration::from_secs(8),
            "the slow body must be cut off after body_read_timeout (2s): {end:?}"
        );
    }

    // Only the honest events are stored; each cut-off body is counted.
    assert_eq!(relay.count_events().await, 10);
    let m = metrics_text(&relay).await;
    assert_eq!(rejections(&m, "sonarr", 408, "body_timeout"), 8.0, "{m}");
    // The server still serves after all that.
    honest_post(&client, &relay, "after").await;
    relay.stop().await;
}

/// A source name, the path posted to, and the (wrong) credential headers.
type Case = (&'static str, String, Vec<(&'static str, String)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bad_credentials_are_refused_before_the_body_is_read() {
    // A long body timeout: if the server waited for the body, the answer would be late.
    let relay = start_relay("body_read_timeout = \"60s\"").await;
    let big = 512 * 1024;
    let cases: Vec<Case> = vec![
        (
            "sonarr",
            "/api/v1/webhooks/sonarr".into(),
            vec![("Authorization", basic("sonarr", "wrong"))],
        ),
        (
            "radarr",
            "/api/v1/webhooks/radarr".into(),
            vec![("X-Api-Key", "wrong".into())],
        ),
        (
            "lidarr",
            "/api/v1/webhooks/lidarr".into(),
            vec![("Authorization", "Bearer wrong".into())],
        ),
        ("plex", "/api/v1/webhooks/plex?token=wrong".into(), vec![]),
        ("plex", "/api/v1/webhooks/plex".into(), vec![]),
        // HMAC needs the body, but a missing or malformed signature does not.
        ("custom", "/api/v1/webhooks/custom".into(), vec![]),
        (
            "custom",
            "/api/v1/webhooks/custom".into(),
            vec![("X-Signature", "sha256=zz".into())],
        ),
        // Aliases share the path.
        ("sonarr", "/webhooks/sonarr".into(), vec![]),
    ];
    for (source, path, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        // The head only: the 512 KiB body is never sent.
        s.write_all(head(path, &headers, big).as_bytes())
            .await
            .expect("write");
        let resp = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
            .await
            .unwrap_or_else(|_| {
                panic!("{path}: no answer without the body: the server waits for it")
            });
        assert_eq!(resp.status, 401, "{path}");
        assert_eq!(resp.json()["code"], "unauthorized", "{path}");
        assert!(resp.header("www-authenticate").is_some(), "{path}");
        // The connection is closed, not kept waiting for a body nobody will read.
        let mut rest = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "{path}: connection left open after the 401: {closed:?}"
        );
        let _ = source;
    }
    // A well-formed but wrong signature is checked against the body: 401 once it is read.
    let body = sonarr_body("signed", 1000);
    let mut raw = head(
        "/api/v1/webhooks/custom",
        &[("X-Signature", &format!("sha256={}", "00".repeat(32)))],
        body.len(),
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(send_raw(relay.addr, &raw).await.status, 401);

    assert_eq!(relay.count_events().await, 0);
    let m = metrics_text(&relay).await;
    for (source, n) in [
        ("sonarr", 2.0),
        ("radarr", 1.0),
        ("lidarr", 1.0),
        ("plex", 2.0),
        ("custom", 3.0),
    ] {
        assert_eq!(
            rejections(&m, source, 401, "unauthorized"),
            n,
            "{source}: {m}"
        );
    }
    // A right credential with the body withheld is not answered: the body is awaited.
    let mut s = TcpStream::connect(relay.addr).await.expect("connect");
    s.write_all(
        head(
            "/api/v1/webhooks/sonarr",
            &[("Authorization", &sonarr_auth())],
            300,
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let waited = tokio::time::timeout(Duration::from_millis(500), read_response(&mut s)).await;
    assert!(
        waited.is_err(),
        "answered before the body arrived: {waited:?}"
    );
    relay.stop().await;
}

/// One hostile request with a wrong credential and a 512 KiB body, over its own
/// connection: the head, then the body while reading the answer. Returns the status, or 0
/// when the connection closed without one.
async fn bad_credential_request(addr: SocketAddr, head: String, body: Bytes) -> u16 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let status = loop {
        if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            break line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => break 0,
            Err(_) => panic!("no answer to a bad credential within 10s"),
        }
    };
    writer.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_flood_of_bad_credentials_and_signatures_stores_nothing_and_keeps_memory_flat() {
    const TOTAL: usize = 10_000;
    const WORKERS: usize = 32;
    let relay = start_relay("").await;
    let addr = relay.addr;
    let big = Bytes::from(vec![b'x'; 512 * 1024]);
    // Bad credentials, each with a 512 KiB body: Basic, header secret, ?token=.
    let heads: Arc<Vec<(&str, String)>> = Arc::new(vec![
        (
            "sonarr",
            head(
                "/api/v1/webhooks/sonarr",
                &[("Authorization", &basic("sonarr", "guess"))],
                big.len(),
            ),
        ),
        (
            "radarr",
            head(
                "/api/v1/webhooks/radarr",
                &[("X-Api-Key", "guess")],
                big.len(),
            ),
        ),
        (
            "plex",
            head("/api/v1/webhooks/plex?token=guess", &[], big.len()),
        ),
    ]);
    // Bad signatures: the body must be read (1 KiB), and the signature does not match.
    let signed_body = Bytes::from(sonarr_body("forged", 1024));
    let forged = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"not-the-secret").expect("key");
        mac.update(&signed_body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };

    let flood = |range: std::ops::Range<usize>| {
        let next = Arc::new(AtomicUsize::new(range.start));
        let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
            u16,
            usize,
        >::new()));
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (next, statuses, heads, big) = (
                Arc::clone(&next),
                Arc::clone(&statuses),
                Arc::clone(&heads),
                big.clone(),
            );
            let (signed_body, forged) = (signed_body.clone(), forged.clone());
            let end = range.end;
            let url = relay.url("/api/v1/webhooks/custom");
            workers.push(tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    let status = if i % 2 == 0 {
                        let (_, h) = &heads[(i / 2) % heads.len()];
                        bad_credential_request(addr, h.clone(), big.clone()).await
                    } else {
                        client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-signature", &forged)
                            .body(signed_body.clone())
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0)
                    };
                    *statuses.lock().expect("lock").entry(status).or_default() += 1;
                }
            }));
        }
        (workers, statuses)
    };

    // Warm up (allocator arenas, buffers, the store's caches), then measure.
    let (warm, _) = flood(0..400);
    for w in warm {
        w.await.expect("worker");
    }
    let rss_before = rss_kib();

    // Honest senders keep posting during the flood; every one must be committed.
    let honest_relay_url = relay.url("/api/v1/webhooks/sonarr");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let honest = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let client = honest_client();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) || sent < 20 {
                let resp = client
                    .post(&honest_relay_url)
                    .header("authorization", sonarr_auth())
                    .header("content-type", "application/json")
                    .body(sonarr_body(&format!("honest-{sent}"), 300))
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("honest request {sent} failed during the flood: {e}")
                    });
                assert_eq!(resp.status(), 202, "honest request {sent} during the flood");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    let (workers, statuses) = flood(400..TOTAL);
    for w in workers {
        w.await.expect("worker");
    }
    stop.store(true, Ordering::Relaxed);
    let honest_sent = honest.await.expect("honest sender");
    let rss_after = rss_kib();

    let statuses = statuses.lock().expect("lock").clone();
    assert_eq!(
        statuses.get(&401).copied().unwrap_or(0),
        TOTAL - 400,
        "every hostile request gets 401: {statuses:?}"
    );
    // Nothing hostile stored: only the honest events.
    assert_eq!(relay.count_events().await, honest_sent as u64);
    // 5,000 bodies of 512 KiB are 2.5 GiB: buffering even a small share of them would show.
    // The bound leaves room for allocator noise and the history of 10,000 rejections.
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 64,
        "memory grew by {growth_mib} MiB during the flood ({rss_before} KiB → {rss_after} KiB)"
    );
    let m = metrics_text(&relay).await;
    let counted: f64 = ["sonarr", "radarr", "plex", "custom"]
        .iter()
        .map(|s| rejections(&m, s, 401, "unauthorized"))
        .sum();
    assert_eq!(counted, TOTAL as f64, "{m}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connection_cap_makes_new_connections_wait() {
    let relay = start_relay("max_connections = 4\nheader_read_timeout = \"30s\"").await;
    // Four connections that send nothing take every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(relay.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth is left in the accept queue: its request is not answered...
    let body = sonarr_body("fifth", 300);
    let mut raw = head(
        "/api/v1/webhooks/sonarr",
        &[("Authorization", &sonarr_auth())],
        body.len(),
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut fifth = TcpStream::connect(relay.addr)
        .await
        .expect("connect (accept queue)");
    fifth.write_all(&raw).await.expect("write");
    let early = tokio::time::timeout(Duration::from_millis(800), read_response(&mut fifth)).await;
    assert!(
        early.is_err(),
        "a fifth connection was served past max_connections = 4: {early:?}"
    );
    assert_eq!(relay.count_events().await, 0);
    // ...until one of the four closes.
    drop(idle.pop());
    let resp = tokio::time::timeout(Duration::from_secs(10), read_response(&mut fifth))
        .await
        .expect("served once a slot was free");
    assert_eq!(resp.status, 202);
    assert_eq!(relay.count_events().await, 1);
    drop(idle);
    drop(fifth);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_body_budget_answers_503_instead_of_buffering() {
    // Room for two 60 KB bodies at once, not three.
    let relay = start_relay("max_body_bytes = 65536\nmax_inflight_body_bytes = 131072").await;
    let len = 60_000;
    let auth = sonarr_auth();
    // Two authenticated uploads send their heads and a little body, then stall.
    let mut stalled = Vec::new();
    for i in 0..2 {
        let body = sonarr_body(&format!("stalled-{i}"), len);
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        s.write_all(head("/api/v1/webhooks/sonarr", &[("Authorization", &auth)], len).as_bytes())
            .await
            .expect("write head");
        s.write_all(&body[..1000]).await.expect("write");
        stalled.push((s, body));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third is refused from its Content-Length, before its body is sent.
    let mut third = TcpStream::connect(relay.addr).await.expect("connect");
    third
        .write_all(head("/api/v1/webhooks/sonarr", &[("Authorization", &auth)], len).as_bytes())
        .await
        .expect("write head");
    let resp = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third))
        .await
        .expect("answered without its body");
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    let v = resp.json();
    assert_eq!(v["code"], "unavailable");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("max_inflight_body_bytes"),
        "{v}"
    );
    // The two stalled uploads hold their declared lengths, and /metrics shows it.
    let m = metrics_text(&relay).await;
    assert_eq!(
        sample(&m, "relayarr_http_body_bytes_in_flight"),
        (2 * len) as f64,
        "{m}"
    );
    assert_eq!(sample(&m, "relayarr_http_body_bytes_max"), 131072.0, "{m}");

    // A chunked upload is counted as it arrives, and refused once it would go past.
    let mut chunked = TcpStream::connect(relay.addr).await.expect("connect");
    chunked
        .write_all(
            format!("POST /api/v1/webhooks/sonarr HTTP/1.1\r\nHost: relay\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write head");
    let chunk = vec![b' '; 8 * 1024];
    let writer = tokio::spawn(async move {
        let (mut rd, mut wr) = chunked.into_split();
        let w = tokio::spawn(async move {
            for _ in 0..4 {
                let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                if wr.write_all(&c).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        });
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf))
            .await
            .expect("chunked upload answered")
            .expect("read");
        w.abort();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let answer = writer.await.expect("chunked client");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // The stalled uploads finish and are stored; then there is room again.
    for (mut s, body) in stalled {
        s.write_all(&body[1000..]).await.expect("write rest");
        let resp = read_response(&mut s).await;
        assert_eq!(
            resp.status,
            202,
            "{:?}",
            String::from_utf8_lossy(&resp.body)
        );
    }
    let body = sonarr_body("third-again", len);
    let mut raw = head("/api/v1/webhooks/sonarr", &[("Authorization", &auth)], len).into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(send_raw(relay.addr, &raw).await.status, 202);

    assert_eq!(relay.count_events().await, 3);
    let m = metrics_text(&relay).await;
    assert_eq!(rejections(&m, "sonarr", 503, "body_budget"), 2.0, "{m}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_requests_are_refused_before_the_body_is_read() {
    let relay = start_relay("body_read_timeout = \"60s\"").await;
    let big = 512 * 1024;
    let wrong = "Bearer not-the-admin-token".to_string();
    // Every admin method that takes a body, with a wrong or no token: the head alone is
    // answered, the 512 KiB body is never sent.
    for (method, path, auth) in [
        ("POST", "/api/v1/admin/hooks", Some(&wrong)),
        ("POST", "/api/v1/admin/hooks", None),
        ("PATCH", "/api/v1/admin/hooks/anything", Some(&wrong)),
        ("PUT", "/api/v1/admin/targets/anything", Some(&wrong)),
        ("POST", "/api/v1/admin/hooks/anything/replay", None),
        ("POST", "/api/v1/admin/events/1/replay", Some(&wrong)),
    ] {
        let headers: Vec<(&str, &str)> = auth
            .map(|a| vec![("Authorization", a.as_str())])
            .unwrap_or_default();
        let raw = head("/", &headers, big).replacen("POST / ", &format!("{method} {path} "), 1);
        let mut s = TcpStream::connect(relay.addr).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let resp = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer without the body"));
        assert_eq!(resp.status, 401, "{method} {path}");
        assert_eq!(resp.json()["code"], "unauthorized", "{method} {path}");
        assert!(resp.header("www-authenticate").is_some(), "{method} {path}");
    }
    relay.stop().await;

    // With the right token the body is awaited, but not for ever: body_read_timeout holds
    // for admin bodies too (a handler waiting on a silent client would also block the drain).
    let relay = start_relay("body_read_timeout = \"2s\"").await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let raw = head("/api/v1/admin/hooks", &[("Authorization", &bearer)], 300);
    let mut s = TcpStream::connect(relay.addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let waited = tokio::time::timeout(Duration::from_millis(500), read_response(&mut s)).await;
    assert!(
        waited.is_err(),
        "answered before the body arrived: {waited:?}"
    );
    let resp = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("a silent admin body times out");
    assert_eq!(resp.status, 408);
    assert_eq!(resp.json()["code"], "body_timeout", "{:?}", resp.json());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_open_connections_show_in_metrics() {
    let relay = start_relay("header_read_timeout = \"30s\"").await;
    let m = metrics_text(&relay).await;
    assert_eq!(sample(&m, "relayarr_http_connections_max"), 512.0, "{m}");
    let before = sample(&m, "relayarr_http_connections_open");
    assert!(before >= 1.0, "the scrape's own connection: {m}");
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(relay.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics_text(&relay).await;
    assert_eq!(
        sample(&m, "relayarr_http_connections_open"),
        before + 5.0,
        "five idle connections more: {m}"
    );
    drop(idle);
    // Closed by the peer: the server notices and frees the slots.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics_text(&relay).await;
        let open = sample(&m, "relayarr_http_connections_open");
        if open == before {
            break;
        }
        assert!(Instant::now() < deadline, "still {open} open: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop().await;
}
