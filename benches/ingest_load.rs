//! Load bench: the real relayarr service, in-process, against a bare axum handler, over
//! loopback with keep-alive HTTP/1.1 and unique Sonarr `Download` bodies.
//!
//! Runtime sizing. The target machine has 2 cores, and server and load generator share them:
//! - The server under test gets its own multi-thread tokio runtime with 2 workers (override:
//!   `RELAYARR_BENCH_SERVER_THREADS`), which is what `relayarr run` (`#[tokio::main]`) uses on a 2-core host.
//!   relayarr also runs its SQLite writer thread and the blocking pool outside those workers.
//! - The load generator runs on one OS thread with a current-thread runtime, so it can never
//!   use more than one core, and its cost is the same for both targets. It is a hand-written
//!   HTTP/1.1 writer/reader over `TcpStream` (one connection per task, one request in flight
//!   per connection, pre-rendered headers), far cheaper per request than a general client.
//!   Its CPU use is measured and printed, so you can see how much it took from the server.
//!
//! Both targets run with exactly this layout, so the ratio compares the servers, not the
//! set-up. No tracing subscriber is installed: every `tracing` call is a cheap no-op, so
//! logging does not skew the numbers (and warnings would not be shown; errors are counted
//! from the HTTP statuses instead).
//!
//! Every scenario gets a fresh relay (fresh temp `data_dir`), because identical bodies are
//! deduplicated and the store should start empty; after the relay has shut down, the bench
//! reopens the SQLite file and checks that it holds exactly one event per 202 received.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use relayarr::actors::store::StoreConfig;
use relayarr::{Config, Relay};

use tokio::net::{TcpListener, TcpStream};

/// The same allocator as the `relayarr` binary, so the bench measures what users run.
mod common;

use common::{
    exchange, fresh_postgres_database, postgres_admin_url, proc_status_kib, reset_peak_rss,
    server_in_child, wait_ready, ChildServer, AUTHORIZATION,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 2] = [16, 64];
const WARMUP: Duration = Duration::from_secs(2);
const DEFAULT_SECS: u64 = 10;
const DEFAULT_SERVER_THREADS: usize = 2;
/// A request still unanswered after this is counted as an error and its connection dropped.
/// Longer than relayarr's default `ingest_timeout` (30 s), so relayarr's own 503 shows first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// `/proc/*/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 for userspace on
/// every mainstream architecture (asking `sysconf` would need `unsafe`, forbidden here).
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Relayarr,
    Bare,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Relayarr => "relayarr",
            Target::Bare => "bare axum",
        }
    }
}

#[derive(Clone, Debug)]
struct Settings {
    secs: u64,
    server_threads: usize,
    /// Parent of each scenario's temp `data_dir` (`RELAYARR_BENCH_DIR`, else the system temp
    /// dir): fsync cost depends entirely on this file system.
    data_parent: PathBuf,
    /// `RELAYARR_BENCH_ONLY`: a subset of scenarios, for tuning.
    only: Option<String>,
    /// `RELAYARR_BENCH_SERVER=process`: relayarr runs as a child process (RSS apart).
    child: bool,
}

fn main() -> ExitCode {
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("ingest_load: {msg}");
            return ExitCode::FAILURE;
        }
    };
    // Off by default (logging would skew the numbers); `RELAYARR_BENCH_LOG=relayarr_actors=info`
    // shows the store writer's batch statistics while tuning.
    if let Ok(filter) = std::env::var("RELAYARR_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    // One counter for the whole run: every body sent by this process is different.
    let seq = Arc::new(AtomicU64::new(0));
    print_preamble(&settings);

    let mut results = Vec::new();
    for conns in CONCURRENCY {
        for target in [Target::Relayarr, Target::Bare] {
            if !settings.wants(target, conns) {
                continue;
            }
            eprintln!(
                "ingest_load: {} × {conns} connections: {} s warm-up + {} s …",
                target.label(),
                WARMUP.as_secs(),
                settings.secs
            );
            match run_scenario(target, conns, &settings, &seq) {
                Ok(r) => results.push(r),
                Err(msg) => {
                    eprintln!("ingest_load: {} × {conns} failed: {msg}", target.label());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    print_report(&settings, &results);
    let store_ok = results
        .iter()
        .all(|r| r.stored.is_none_or(|n| n == r.load.ok_total));
    let clean = results.iter().all(|r| r.load.errors.is_empty());
    if store_ok && clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn settings_from_env() -> Result<Settings, String> {
    fn positive(var: &str, default: u64) -> Result<u64, String> {
        match std::env::var(var) {
            Err(_) => Ok(default),
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{var}={v:?} is not a positive whole number")),
        }
    }
    let server_threads = positive(
        "RELAYARR_BENCH_SERVER_THREADS",
        DEFAULT_SERVER_THREADS as u64,
    )?;
    Ok(Settings {
        secs: positive("RELAYARR_BENCH_SECS", DEFAULT_SECS)?,
        server_threads: usize::try_from(server_threads).map_err(|e| e.to_string())?,
        data_parent: std::env::var_os("RELAYARR_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        only: std::env::var("RELAYARR_BENCH_ONLY").ok(),
        child: server_in_child(),
    })
}

impl Settings {
    /// `RELAYARR_BENCH_ONLY=relayarr:64` (or `bare`, or `:16`) runs a subset while tuning.
    fn wants(&self, target: Target, conns: usize) -> bool {
        let Some(only) = self.only.as_deref() else {
            return true;
        };
        let (t, c) = only.split_once(':').unwrap_or((only, ""));
        (t.is_empty() || target.label().starts_with(&t.to_ascii_lowercase()))
            && (c.is_empty() || c == conns.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Scenario: start a server, drive it, stop it, measure.
// ---------------------------------------------------------------------------------------

struct ScenarioResult {
    target: Target,
    conns: usize,
    load: LoadResult,
    /// Events in the store after shutdown (relayarr only).
    stored: Option<u64>,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    /// Whether `VmHWM` could be reset before the scenario; if not, the peak is the process's.
    peak_reset: bool,
}

fn run_scenario(
    target: Target,
    conns: usize,
    settings: &Settings,
    seq: &Arc<AtomicU64>,
) -> Result<ScenarioResult, String> {
    let peak_reset = reset_peak_rss();
    let rss_before_kib = proc_status_kib("VmRSS").unwrap_or(0);

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.server_threads)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .map_err(|e| format!("server runtime: {e}"))?;
    let data_dir = tempfile::Builder::new()
        .prefix("relayarr-bench-")
        .tempdir_in(&settings.data_parent)
        .map_err(|e| format!("temp dir in {}: {e}", settings.data_parent.display()))?;
    let listener = server_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    };

    let mut child = None;
    let (server, db_path, addr) = match target {
        Target::Relayarr if settings.child => {
            drop(listener);
            let mut text = relay_config_text(data_dir.path());
            let mut store_cfg = StoreConfig::default();
            if let Some(url) = server_rt.block_on(fresh_postgres_database())? {
                text.push_str(&format!(
                    "\n[store]\nurl = {}\n",
                    toml::Value::String(url.clone())
                ));
                store_cfg.url = Some(url);
            }
            let c = ChildServer::spawn(&text, data_dir.path())?;
            let addr = c.addr;
            child = Some(c);
            let task = server_rt.spawn(async move {
                stop.await;
                Ok(())
            });
            let db = data_dir.path().join("relayarr.db");
            (task, Some((db, store_cfg)), addr)
        }
        Target::Relayarr => {
            let mut cfg = relay_config(data_dir.path())?;
            if let Some(url) = server_rt.block_on(fresh_postgres_database())? {
                cfg.store.url = Some(url);
            }
            let db = (cfg.db_path(), cfg.store.clone());
            let relay = Relay::builder(cfg).namespace(format!("bench{conns}"));
            let task = server_rt
                .spawn(async move { relay.run(listener, stop).await.map_err(|e| e.to_string()) });
            (task, Some(db), addr)
        }
        Target::Bare => {
            let task = server_rt.spawn(async move {
                axum::serve(listener, bare_router())
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(|e| e.to_string())
            });
            (task, None, addr)
        }
    };
    server_rt
        .block_on(wait_ready(addr))
        .map_err(|e| format!("server did not become ready: {e}"))?;
    let rss_before_kib = match &child {
        Some(c) => c.status_kib("VmRSS").unwrap_or(0),
        None => rss_before_kib,
    };

    let load = {
        let seq = Arc::clone(seq);
        let secs = Duration::from_secs(settings.secs);
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || -> Result<LoadResult, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("client runtime: {e}"))?;
                Ok(rt.block_on(drive(addr, conns, secs, seq)))
            })
            .map_err(|e| format!("client thread: {e}"))?
            .join()
            .map_err(|_| "the load generator panicked".to_string())??
    };
    let (rss_after_kib, rss_peak_kib) = match &child {
        Some(c) => (
            c.status_kib("VmRSS").unwrap_or(0),
            c.status_kib("VmHWM").unwrap_or(0),
        ),
        None => (
            proc_status_kib("VmRSS").unwrap_or(0),
            proc_status_kib("VmHWM").unwrap_or(0),
        ),
    };
    if let Some(c) = child {
        c.stop()?;
    }

    // The load generator's connections are closed (its runtime is gone), so the graceful
    // stop does not wait on idle keep-alive connections.
    let _ = stop_tx.send(());
    server_rt
        .block_on(server)
        .map_err(|e| format!("server task: {e}"))?
        .map_err(|e| format!("server stopped with an error: {e}"))?;
    // The relay has flushed and closed its store; count through a fresh handle.
    let stored = match db_path {
        Some((db, store_cfg)) => Some(server_rt.block_on(async move {
            let store_cfg = StoreConfig {
                url: store_cfg.url,
                ..StoreConfig::default()
            };
            let store = relayarr::actors::store::open(&store_cfg, &db)
                .await
                .map_err(|e| e.to_string())?;
            let n = store.count_events().await.map_err(|e| e.to_string())?;
            store.close().await.map_err(|e| e.to_string())?;
            Ok::<u64, String>(n)
        })?),
        None => None,
    };
    server_rt.shutdown_timeout(Duration::from_secs(10));
    drop(data_dir);
    Ok(ScenarioResult {
        target,
        conns,
        load,
        stored,
        rss_before_kib,
        rss_peak_kib,
        rss_after_kib,
        peak_reset,
    })
}

fn relay_config(data_dir: &Path) -> Result<Config, String> {
    let text = relay_config_text(data_dir);
    // No environment: the bench must not pick up a developer's RELAYARR_* overrides.
    Config::from_toml_str("ingest_load bench", &text, std::iter::empty()).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn relay_config_text(data_dir: &Path) -> String {
    let dir = toml::Value::String(data_dir.display().to_string());
    format!(
        r#"
[server]
data_dir = {dir}
shutdown_grace = "5s"

[[source]]
name = "sonarr"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
"#
    )
}

/// The comparison target: routing, body read and JSON parse, nothing stored.
fn bare_router() -> Router {
    async fn ingest(body: Bytes) -> Response {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(_) => (
                StatusCode::ACCEPTED,
                // Same shape and size as relayarr's answer (a ULID id).
                Json(serde_json::json!({"id": "01JZ8B3N5Q7RBX2V4W6Y8A0C2E", "duplicate": false})),
            )
                .into_response(),
            Err(e) => (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e.to_string()})),
            )
                .into_response(),
        }
    }
    Router::new()
        .route("/api/v1/webhooks/{name}", post(ingest))
        .route("/api/v1/health", get(|| async { "ok" }))
}

// ---------------------------------------------------------------------------------------
// Load generator: one task per connection, one request in flight per connection.
// ---------------------------------------------------------------------------------------

struct LoadResult {
    /// Measured window length (the warm-up excluded).
    window: Duration,
    /// 202 answers completed inside the window.
    ok_window: u64,
    /// 202 answers over the whole run (warm-up and the tail included): what the store holds.
    ok_total: u64,
    /// Latency of the window's 202 answers, in microseconds.
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
    /// Everything that was not a 202, over the whole run: count and a sample answer.
    errors: BTreeMap<String, (u64, String)>,
    /// CPU seconds used inside the window by the whole process and by the load generator.
    cpu_process_s: f64,
    cpu_client_s: f64,
    cpu_elapsed: Duration,
    /// CPU seconds inside the window per thread name (tokio names its workers and blocking
    /// threads after the runtime; the kernel keeps the first 15 bytes of a name).
    cpu_by_thread: Vec<(String, f64)>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.ok_window as f64 / self.window.as_secs_f64()
    }
}

#[derive(Default)]
struct WorkerStats {
    ok_window: u64,
    ok_total: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, (u64, String)>,
}

impl WorkerStats {
    fn error(&mut self, key: String, sample: &str) {
        let e = self
            .errors
            .entry(key)
            .or_insert_with(|| (0, sample.chars().take(200).collect()));
        e.0 += 1;
    }
}

async fn drive(addr: SocketAddr, conns: usize, secs: Duration, seq: Arc<AtomicU64>) -> LoadResult {
    let start = Instant::now();
    let warm_end = start + WARMUP;
    let end = warm_end + secs;
    // Runs on this (the client's) thread, so `thread-self` is the load generator.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(warm_end.into()).await;
        let (p0, c0, th0, t0) = (
            process_cpu_s(),
            thread_cpu_s(),
            threads_cpu_s(),
            Instant::now(),
        );
        tokio::time::sleep_until(end.into()).await;
        let (p1, c1, th1) = (process_cpu_s(), thread_cpu_s(), threads_cpu_s());
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, cpu)) in th1 {
            let before = th0.get(&tid).map_or(0.0, |(_, c)| *c);
            *by_name.entry(name).or_default() += cpu - before;
        }
        let mut by_name: Vec<(String, f64)> = by_name.into_iter().collect();
        by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
        (p1 - p0, c1 - c0, t0.elapsed(), by_name)
    });
    let workers: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(addr, warm_end, end, Arc::clone(&seq))))
        .collect();

    let mut all = WorkerStats::default();
    for w in workers {
        let Ok(mut w) = w.await else {
            all.error("load task panicked".into(), "");
            continue;
        };
        all.ok_window += w.ok_window;
        all.ok_total += w.ok_total;
        all.latencies_us.append(&mut w.latencies_us);
        for (k, (n, sample)) in w.errors {
            all.errors.entry(k).or_insert((0, sample)).0 += n;
        }
    }
    let (cpu_process_s, cpu_client_s, cpu_elapsed, cpu_by_thread) = cpu.await.unwrap_or_default();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return 0;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    LoadResult {
        window: secs,
        ok_window: all.ok_window,
        ok_total: all.ok_total,
        p50_us: pct(50.0),
        p99_us: pct(99.0),
        max_us: all.latencies_us.last().copied().unwrap_or(0),
        errors: all.errors,
        cpu_process_s,
        cpu_client_s,
        cpu_elapsed,
        cpu_by_thread,
    }
}

async fn worker(
    addr: SocketAddr,
    warm_end: Instant,
    end: Instant,
    seq: Arc<AtomicU64>,
) -> WorkerStats {
    let host = addr.to_string();
    let mut st = WorkerStats::default();
    let mut conn: Option<TcpStream> = None;
    let mut body = String::with_capacity(4096);
    let mut req = String::with_capacity(4096);
    let mut resp = Vec::with_capacity(4096);
    while Instant::now() < end {
        let stream = match &mut conn {
            Some(s) => s,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    // One write per request already; this only keeps Nagle out of the picture.
                    let _ = s.set_nodelay(true);
                    conn.insert(s)
                }
                Err(e) => {
                    st.error(format!("connect: {}", e.kind()), &e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        render_request(
            seq.fetch_add(1, Ordering::Relaxed),
            &host,
            &mut body,
            &mut req,
        );
        let sent = Instant::now();
        let res =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, req.as_bytes(), &mut resp))
                .await;
        let done = Instant::now();
        match res {
            Ok(Ok(a)) if a.status == 202 => {
                st.ok_total += 1;
                if done >= warm_end && done < end {
                    st.ok_window += 1;
                    let us = (done - sent).as_micros();
                    st.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(Ok(a)) => {
                let sample = String::from_utf8_lossy(&resp[a.body_start..]);
                st.error(format!("HTTP {}", a.status), &sample);
            }
            Ok(Err(e)) => {
                conn = None;
                st.error(format!("io: {}", e.kind()), &e.to_string());
            }
            Err(_) => {
                conn = None;
                st.error("timeout".into(), "no answer within the request timeout");
            }
        }
    }
    st
}

fn render_request(n: u64, host: &str, body: &mut String, req: &mut String) {
    body.clear();
    sonarr_download(n, body);
    req.clear();
    write!(
        req,
        "POST /api/v1/webhooks/sonarr HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: Sonarr/4.0.19.2979 (alpine 3.21.3)\r\n\
         Authorization: {AUTHORIZATION}\r\n\
         Accept: application/json\r\n\
         Accept-Encoding: gzip, br\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("writing to a String cannot fail");
    req.push_str(body);
}

// ---------------------------------------------------------------------------------------
// Sonarr `Download` bodies: the shape of the shared fixture `sonarr/Download.http`,
// Newtonsoft-indented (2 spaces, `"key": value`), with per-request values so each is unique.
// ---------------------------------------------------------------------------------------

/// Title, slug, year, TVDB id, IMDb id, two genres.
type Series = (
    &'static str,
    &'static str,
    u32,
    u32,
    &'static str,
    [&'static str; 2],
);

#[rustfmt::skip]
const SERIES: &[Series] = &[
    ("The Expanse", "the-expanse", 2015, 280619, "tt3230854", ["Drama", "Science Fiction"]),
    ("Severance", "severance", 2022, 371980, "tt11280740", ["Drama", "Mystery"]),
    ("Slow Horses", "slow-horses", 2022, 386776, "tt5875444", ["Drama", "Thriller"]),
    ("For All Mankind", "for-all-mankind", 2019, 356202, "tt7772588", ["Drama", "Science Fiction"]),
    ("Shōgun", "shogun-2024", 2024, 392573, "tt2788316", ["Adventure", "Drama"]),
    ("The Bear", "the-bear", 2022, 403245, "tt14452776", ["Comedy", "Drama"]),
    ("Andor", "andor", 2022, 393189, "tt9253284", ["Action", "Science Fiction"]),
    ("What We Do in the Shadows", "what-we-do-in-the-shadows", 2019, 354629, "tt7908628", ["Comedy", "Fantasy"]),
    ("Dark", "dark", 2017, 334824, "tt5753856", ["Crime", "Mystery"]),
    ("Mr. Robot", "mr-robot", 2015, 289590, "tt4158110", ["Crime", "Drama"]),
    ("Silo", "silo", 2023, 403674, "tt14688458", ["Drama", "Science Fiction"]),
    ("Reservation Dogs", "reservation-dogs", 2021, 397424, "tt13623580", ["Comedy", "Drama"]),
];

const EPISODE_TITLES: &[&str] = &[
    "Triple Point",
    "Half Loop",
    "Hello, Ms. Cobel",
    "Failure's Contagious",
    "A Stranger Comes to Town",
    "Review",
    "One Way Out",
    "The Grey Area",
    "Nobody Knows",
    "Fixing the Leak",
    "The Long Night",
    "Homecoming",
];

const QUALITIES: &[(&str, &str, u32, u32)] = &[
    ("WEBDL-1080p", "AMZN.WEB-DL.DDP5.1.H.264", 1920, 1080),
    ("WEBDL-2160p", "ATVP.WEB-DL.DDP5.1.DV.H.265", 3840, 2160),
    ("Bluray-1080p", "BluRay.DTS-HD.MA.5.1.x264", 1920, 1080),
    ("HDTV-720p", "HDTV.x264", 1280, 720),
];

const GROUPS: &[&str] = &["NTb", "FLUX", "CMRG", "NOSiVID", "EDITH", "SuccessfulCrab"];

/// SplitMix64: cheap, well-mixed per-request values (ids, hashes, sizes).
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends request `n`'s body. Unique per `n` (episode and file ids, download id).
fn sonarr_download(n: u64, out: &mut String) {
    let h = mix(n);
    let (title, slug, year, tvdb, imdb, [g0, g1]) = SERIES[(n % SERIES.len() as u64) as usize];
    let sid = 10 + (n % SERIES.len() as u64);
    let season = 1 + (h % 8);
    let episode = 1 + ((h >> 8) % 22);
    let ep_title = EPISODE_TITLES[((h >> 16) % EPISODE_TITLES.len() as u64) as usize];
    let (quality, source, width, height) = QUALITIES[((h >> 24) % QUALITIES.len() as u64) as usize];
    let group = GROUPS[((h >> 32) % GROUPS.len() as u64) as usize];
    let size = 900_000_000 + (h % 3_000_000_000);
    let dotted = title.replace(' ', ".");
    let scene = format!(
        "{dotted}.S{season:02}E{episode:02}.{}.{source}-{group}",
        height_tag(height)
    );
    let file = format!(
        "Season {season:02}/{t} - S{season:02}E{episode:02} - {ep_title} [{quality}]-{group}.mkv",
        t = title
    );
    write!(
        out,
        r#"{{
  "series": {{
    "id": {sid},
    "title": "{title}",
    "titleSlug": "{slug}",
    "path": "/tv/{title} ({year})",
    "tvdbId": {tvdb},
    "tvMazeId": {tvmaze},
    "tmdbId": {tmdb},
    "imdbId": "{imdb}",
    "type": "standard",
    "year": {year},
    "genres": [
      "{g0}",
      "{g1}"
    ],
    "images": [
      {{
        "coverType": "poster",
        "url": "/MediaCover/{sid}/poster.jpg?lastWrite={lw}",
        "remoteUrl": "https://artworks.thetvdb.com/banners/posters/{tvdb}-7.jpg"
      }},
      {{
        "coverType": "fanart",
        "url": "/MediaCover/{sid}/fanart.jpg?lastWrite={lw}",
        "remoteUrl": "https://artworks.thetvdb.com/banners/fanart/original/{tvdb}-18.jpg"
      }}
    ],
    "tags": [
      "hd"
    ],
    "originalLanguage": {{
      "id": 1,
      "name": "English"
    }}
  }},
  "episodes": [
    {{
      "id": {epid},
      "episodeNumber": {episode},
      "seasonNumber": {season},
      "title": "{ep_title}",
      "overview": "Nothing goes to plan.",
      "airDate": "{air_y}-0{air_m}-1{air_d}",
      "airDateUtc": "{air_y}-0{air_m}-1{air_d}T01:00:00Z",
      "seriesId": {sid},
      "tvdbId": {ep_tvdb}
    }}
  ],
  "episodeFile": {{
    "id": {fid},
    "relativePath": "{file}",
    "path": "/tv/{title} ({year})/{file}",
    "quality": "{quality}",
    "qualityVersion": 1,
    "releaseGroup": "{group}",
    "sceneName": "{scene}",
    "size": {size},
    "dateAdded": "2025-06-14T18:{min:02}:{sec:02}.{frac:07}Z",
    "languages": [
      {{
        "id": 1,
        "name": "English"
      }}
    ],
    "mediaInfo": {{
      "audioChannels": 5.1,
      "audioCodec": "EAC3",
      "audioLanguages": [
        "eng"
      ],
      "height": {height},
      "width": {width},
      "subtitles": [
        "eng"
      ],
      "videoCodec": "h264",
      "videoDynamicRange": "",
      "videoDynamicRangeType": ""
    }},
    "sourcePath": "/downloads/complete/tv/{scene}/{scene}.mkv"
  }},
  "isUpgrade": {upgrade},
  "downloadClient": "qBittorrent",
  "downloadClientType": "qBittorrent",
  "downloadId": "{dl:016X}{dl2:024X}",
  "customFormatInfo": {{
    "customFormats": [
      {{
        "id": 4,
        "name": "AMZN"
      }}
    ],
    "customFormatScore": {score}
  }},
  "release": {{
    "releaseTitle": "{scene}",
    "indexer": "IPTorrents (Prowlarr)",
    "size": {rsize},
    "releaseType": "singleEpisode"
  }},
  "eventType": "Download",
  "instanceName": "Sonarr",
  "applicationUrl": ""
}}"#,
        tvmaze = 1000 + tvdb % 50_000,
        tmdb = 60_000 + tvdb % 40_000,
        lw = 638_540_412_981_234_567u64 + (h % 1_000_000),
        epid = 100_000 + n,
        ep_tvdb = 6_000_000 + (h % 1_000_000),
        air_y = 2015 + (h % 10),
        air_m = 1 + (h >> 40) % 9,
        air_d = (h >> 44) % 10,
        fid = 500_000 + n,
        min = (n / 60) % 60,
        sec = n % 60,
        frac = h % 10_000_000,
        upgrade = (h >> 48).is_multiple_of(5),
        dl = n,
        dl2 = h >> 32,
        score = ((h >> 52) % 40) * 50,
        rsize = size + (h >> 56),
    )
    .expect("writing to a String cannot fail");
}

fn height_tag(height: u32) -> &'static str {
    match height {
        2160 => "2160p",
        1080 => "1080p",
        _ => "720p",
    }
}

// ---------------------------------------------------------------------------------------
// Process measurements (Linux /proc).
// ---------------------------------------------------------------------------------------

/// The name and utime + stime (in seconds) of a `/proc/…/stat` file.
fn stat_cpu(path: &Path) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name (field 2) sits in parentheses and may contain spaces; the fields after it
    // start with field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("", |(_, n)| n).to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((name, (ticks(11) + ticks(12)) as f64 / USER_HZ))
}

fn stat_cpu_s(path: &str) -> f64 {
    stat_cpu(Path::new(path)).map_or(0.0, |(_, cpu)| cpu)
}

/// Every live thread of this process: id → (name, CPU seconds).
fn threads_cpu_s() -> BTreeMap<u64, (String, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return BTreeMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            Some((tid, stat_cpu(&t.path().join("stat"))?))
        })
        .collect()
}

/// The whole process, dead threads included.
fn process_cpu_s() -> f64 {
    stat_cpu_s("/proc/self/stat")
}

/// The calling thread only.
fn thread_cpu_s() -> f64 {
    stat_cpu_s("/proc/thread-self/stat")
}

/// The file system type holding `path` (longest mount-point prefix in `/proc/mounts`).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------

fn print_preamble(settings: &Settings) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (mut lo, mut hi, mut sum) = (usize::MAX, 0, 0);
    let mut body = String::new();
    let samples = 1000u64;
    for n in 0..samples {
        body.clear();
        // Spread over the sequence numbers a run reaches (ids grow a digit or two).
        sonarr_download(n * 997, &mut body);
        lo = lo.min(body.len());
        hi = hi.max(body.len());
        sum += body.len();
    }
    println!("## relayarr ingest load bench");
    println!();
    println!("- machine: {cores} CPUs available, Linux {}", kernel.trim());
    println!(
        "- server: its own multi-thread tokio runtime, {} workers; load generator: 1 thread \
         (current-thread runtime), raw HTTP/1.1 keep-alive, one connection per task, one \
         request in flight per connection",
        settings.server_threads
    );
    println!(
        "- each scenario: {} s warm-up + {} s measured (RELAYARR_BENCH_SECS); a fresh server \
         per scenario",
        WARMUP.as_secs(),
        settings.secs
    );
    println!(
        "- bodies: Sonarr `Download`, Newtonsoft-indented, {lo}–{hi} bytes (mean {}), every \
         one unique",
        sum / samples as usize
    );
    match postgres_admin_url() {
        None => println!(
            "- relayarr: POST /api/v1/webhooks/sonarr with Basic auth; 202 only after the \
             SQLite commit and the WAL fsync, in {} ({})",
            settings.data_parent.display(),
            fs_type(&settings.data_parent)
        ),
        Some(_) => println!(
            "- relayarr: POST /api/v1/webhooks/sonarr with Basic auth; 202 only after the \
             PostgreSQL COMMIT (RELAYARR_BENCH_POSTGRES; a fresh database per scenario, on the \
             same machine)"
        ),
    }
    println!(
        "- bare axum: same route, reads the body as Bytes, serde_json::Value parse, answers 202 \
         with a small JSON, stores nothing"
    );
    println!(
        "- logging: no tracing subscriber is installed, so relayarr's log calls are no-ops; \
         every non-202 answer is counted as an error instead"
    );
    if settings.child {
        println!(
            "- RSS: relayarr runs as a child process (RELAYARR_BENCH_SERVER=process, the real \
             binary, its default runtime, RELAYARR_LOG=warn), so its RSS figures are its own; \
             the bare handler's still include the load generator"
        );
    } else {
        println!(
            "- RSS: client and server run in one process, so every RSS figure covers both; the \
             peak (VmHWM) is reset before each scenario (RELAYARR_BENCH_SERVER=process runs \
             relayarr apart)"
        );
    }
    println!();
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(us: u32) -> String {
    format!("{:.2}", f64::from(us) / 1000.0)
}

fn print_report(settings: &Settings, results: &[ScenarioResult]) {
    println!(
        "| target | conns | accepted req/s | errors | p50 ms | p99 ms | max ms | CPU cores used \
         (all / load gen) | RSS MiB before / peak / after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let l = &r.load;
        let errors: u64 = l.errors.values().map(|(n, _)| n).sum();
        let secs = l.cpu_elapsed.as_secs_f64().max(f64::EPSILON);
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} / {:.2} | {} / {} / {}{} |",
            r.target.label(),
            r.conns,
            l.rate(),
            errors,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.cpu_process_s / secs,
            l.cpu_client_s / secs,
            mib(r.rss_before_kib),
            mib(r.rss_peak_kib),
            mib(r.rss_after_kib),
            if r.peak_reset {
                ""
            } else {
                " (peak not reset)"
            },
        );
    }
    println!();
    println!("| conns | req/s relayarr/bare | p50 relayarr/bare | p99 relayarr/bare | peak RSS relayarr/bare |");
    println!("|---:|---:|---:|---:|---:|");
    for conns in CONCURRENCY {
        let find = |t| results.iter().find(|r| r.target == t && r.conns == conns);
        let (Some(relay), Some(bare)) = (find(Target::Relayarr), find(Target::Bare)) else {
            continue;
        };
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "n/a".into()
            }
        };
        println!(
            "| {conns} | {} | {} | {} | {} |",
            ratio(relay.load.rate(), bare.load.rate()),
            ratio(f64::from(relay.load.p50_us), f64::from(bare.load.p50_us)),
            ratio(f64::from(relay.load.p99_us), f64::from(bare.load.p99_us)),
            ratio(relay.rss_peak_kib as f64, bare.rss_peak_kib as f64),
        );
    }
    println!();
    println!(
        "Accepted = 202 answers completed inside the {} s window; latency is per request, from \
         its write to the end of its response, over those answers; CPU is over the window, in \
         cores (2.00 = both cores busy).",
        settings.secs
    );
    println!();
    for r in results {
        if let Some(stored) = r.stored {
            let verdict = if stored == r.load.ok_total {
                "matches"
            } else {
                "MISMATCH"
            };
            println!(
                "- store check, {} × {}: {stored} events in the store after shutdown, {} × 202 \
                 received over the whole run (warm-up included): {verdict}",
                r.target.label(),
                r.conns,
                r.load.ok_total
            );
        }
        let secs = r.load.cpu_elapsed.as_secs_f64().max(f64::EPSILON);
        let threads: Vec<String> = r
            .load
            .cpu_by_thread
            .iter()
            .filter(|(_, cpu)| *cpu / secs >= 0.005)
            .map(|(name, cpu)| format!("{name} {:.2}", cpu / secs))
            .collect();
        println!(
            "- CPU cores by thread, {} × {}: {}",
            r.target.label(),
            r.conns,
            threads.join(", ")
        );
        for (kind, (n, sample)) in &r.load.errors {
            println!(
                "- errors, {} × {}: {n} × {kind}, e.g. {sample:?}",
                r.target.label(),
                r.conns
            );
        }
    }
}
