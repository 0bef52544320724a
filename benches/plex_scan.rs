//! Plex scan bench: the real relayarr service, in-process, receiving 10,000 unique Sonarr
//! `Download` events for episodes spread over 500 series folders, with a `[[plex]]` target
//! that points at the fake Plex server of the integration tests (Plex's real wire format;
//! every request recorded). The quiet period is zero by default, so coalescing comes only
//! from events that arrive while their folder's group is still being routed; raise it with
//! `RELAYARR_BENCH_QUIET=15s` to see the production default.
//!
//! Reported: events posted and acknowledged; the partial scans that reached Plex (and how
//! many distinct folders they covered; the aim is one per folder per window); the time from
//! the first event to the last scan; the TCP connections relayarr opened to Plex; the
//! process's peak RSS (server, fake Plex and load generator share the process, so it is an
//! upper bound for the server). For comparison, autopulse sends one scan per event and
//! took 100 s for this load.
//!
//! Knobs: `RELAYARR_BENCH_EVENTS` (10000), `RELAYARR_BENCH_FOLDERS` (500),
//! `RELAYARR_BENCH_CONNS` (16), `RELAYARR_BENCH_QUIET` ("0s").
//!
//! Run: `cargo bench --bench plex_scan`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relayarr::{Config, Relay};
use tokio::net::{TcpListener, TcpStream};

mod common;
#[allow(dead_code)]
#[path = "../tests/common/fake_plex.rs"]
mod fake_plex;

use common::{exchange, proc_status_kib, wait_ready, AUTHORIZATION};
use fake_plex::FakePlex;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-plex-token";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One Sonarr v4 `Download` body (shape: tests/fixtures/corpus/sonarr/Download.json, from
/// Sonarr's WebhookImportPayload.cs) for episode `episode` of series `series`.
fn body(template: &serde_json::Value, series: u64, episode: u64, n: u64) -> Vec<u8> {
    let mut v = template.clone();
    let title = format!("Bench Show {series:03}");
    let folder = format!("/tv/{title} (2020)");
    v["series"]["title"] = title.clone().into();
    v["series"]["path"] = folder.clone().into();
    v["series"]["id"] = series.into();
    v["episodes"] = serde_json::json!([{
        "id": n, "episodeNumber": episode, "seasonNumber": 1, "title": format!("Episode {episode}")
    }]);
    v["episodeFile"]["path"] =
        format!("{folder}/Season 01/{title} (2020) - S01E{episode:02}.mkv").into();
    v["episodeFile"]["relativePath"] =
        format!("Season 01/{title} (2020) - S01E{episode:02}.mkv").into();
    v["downloadId"] = format!("BENCH{n:08}").into();
    serde_json::to_vec(&v).unwrap_or_default()
}

fn config_text(data_dir: &std::path::Path, plex: &str, quiet: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{}"
[[source]]
name = "sonarr"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
[debounce]
quiet = "{quiet}"
[[plex]]
name = "bench"
url = "{plex}"
token = "{TOKEN}"
retry_base = "1s"
retry_cap = "5s"
"#,
        data_dir.display()
    )
}

async fn drive(
    addr: SocketAddr,
    conns: u64,
    events: u64,
    folders: u64,
    template: serde_json::Value,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let template = Arc::new(template);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, acked, template) =
            (Arc::clone(&next), Arc::clone(&acked), Arc::clone(&template));
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else { return };
            let mut buf = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return;
                }
                let b = body(&template, n % folders, n / folders + 1, n);
                let mut req = format!(
                    "POST /api/v1/webhooks/sonarr HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {AUTHORIZATION}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .into_bytes();
                req.extend_from_slice(&b);
                match exchange(&mut s, &req, &mut buf).await {
                    Ok(a) if a.status == 202 => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    acked.load(Ordering::Relaxed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_u64("RELAYARR_BENCH_EVENTS", 10_000);
    let folders = env_u64("RELAYARR_BENCH_FOLDERS", 500).max(1);
    let conns = env_u64("RELAYARR_BENCH_CONNS", 16).max(1);
    let quiet = std::env::var("RELAYARR_BENCH_QUIET").unwrap_or_else(|_| "0s".into());
    let template: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/fixtures/corpus/sonarr/Download.json"
    ))
    .expect("fixture parses");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let plex = FakePlex::start(TOKEN).await;
        plex.add_section("2", "show", "TV Shows", &["/tv"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::from_toml_str("plex_scan bench", &config_text(dir.path(), &plex.url(), &quiet), Vec::<(String, String)>::new())
            .map_err(|e| format!("{e:?}"))
            .expect("bench config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            Relay::builder(cfg)
                .namespace("plex-bench-")
                .run(listener, async {
                    let _ = stop_rx.await;
                })
                .await
        });
        wait_ready(addr).await.expect("relay ready");

        let started = Instant::now();
        let acked = drive(addr, conns, events, folders, template).await;
        let ingest = started.elapsed();
        // Every folder must be scanned at least once; then wait for the scans to settle.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut last_change = (plex.scans().len(), Instant::now());
        loop {
            let scans = plex.scans();
            let distinct: HashSet<&String> = scans.iter().map(|(_, p)| p).collect();
            if scans.len() != last_change.0 {
                last_change = (scans.len(), Instant::now());
            }
            let settled = last_change.1.elapsed() > Duration::from_secs(3);
            if (distinct.len() as u64 >= folders && settled) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let scans = plex.scans();
        let distinct: HashSet<&String> = scans.iter().map(|(_, p)| p).collect();
        let last_scan = plex
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/refresh"))
            .count();
        let span = last_change.1.duration_since(started);
        println!("plex_scan: {events} Download events over {folders} folders, {conns} connections, quiet = {quiet}");
        println!("  acknowledged:         {acked} ({:.0} events/s ingest)", acked as f64 / ingest.as_secs_f64());
        println!("  partial scans:        {} ({} refresh calls), {} distinct folders", scans.len(), last_scan, distinct.len());
        println!("  scans per folder:     {:.2}", scans.len() as f64 / folders as f64);
        println!("  first event → last scan: {:.2} s", span.as_secs_f64());
        println!("  plex connections:     {}", plex.connections_opened());
        println!("  plex peak in flight:  {}", plex.peak_in_flight());
        println!(
            "  peak RSS (process):   {:.1} MiB",
            proc_status_kib("VmHWM").unwrap_or(0) as f64 / 1024.0
        );
        let _ = stop_tx.send(());
        let _ = server.await;
    });
}
