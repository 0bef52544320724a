//! Soak bench (issue 9 §7): the real `relayarr` binary, as a child process, under a steady
//! open-loop load of unique Sonarr `Download` events for a long time (default 30 minutes at
//! 500 events/s), delivering every event to 8 hooks whose receivers run in this process.
//! Hook 8 flaps: it alternates between answering 200 and answering 503 (half-period
//! `RELAYARR_SOAK_FLAP`), so its deliveries go through the retry path.
//!
//! Every `RELAYARR_SOAK_SAMPLE` seconds it samples the server (RSS and open fds from
//! `/proc/PID`, the SQLite file plus its WAL, queue depth per hook from `/metrics`) and
//! the window's ingest latency and delivery lag, prints a progress line and appends a row to
//! `target/soak/soak.csv`. After the load it waits (bounded) for the queues to drain, stops
//! the server with SIGTERM, draws `target/soak/soak.png`, and prints verdicts:
//! - no event lost: every hook's receiver got every acknowledged event id (at least once);
//! - RSS, open fds and database size flat: the mean and the peak of the load phase's last
//!   third are within a stated tolerance of its second third's;
//! - healthy hooks' delivery lag p99 under 100 ms, over the whole run and in every window;
//! - every send was answered 202.
//!
//! The process exits non-zero if any verdict fails.
//!
//! Why a child process: RSS and fds are then the server's alone, not the load generator's
//! or the receivers' (which keep every event id they see). Layout: the load generator is one
//! thread with a current-thread runtime (open loop: send `k` is due at `start + k / rate`,
//! whatever happened to the earlier ones; each due send takes an idle keep-alive connection
//! or opens one, up to `MAX_CONNS`); the 8 receivers are another such thread; the main thread
//! samples, matches arrivals to acknowledgements by event id and keeps the books.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{exchange, metrics_text, wait_ready, BodyTemplate, ChildServer};

const DEFAULT_RATE: u64 = 500;
const DEFAULT_SECS: u64 = 1800;
const DEFAULT_SAMPLE_SECS: u64 = 5;
const DEFAULT_FLAP_SECS: u64 = 60;
const DEFAULT_DRAIN_SECS: u64 = 180;
/// Hooks in all; the last one flaps.
const HOOKS: usize = 8;
const FLAPPING: usize = HOOKS - 1;
/// Healthy hooks' concurrency cap (the default is 4; at 500 events/s a receiver on the same
/// two cores sometimes needs more).
const HEALTHY_IN_FLIGHT: u32 = 16;
/// The load generator's connection cap: a send due while this many are in flight waits, and
/// is counted late.
const MAX_CONNS: usize = 256;
/// A send that starts more than this after its due time counts as late.
const LATE_AFTER: Duration = Duration::from_millis(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle keep-alive connection older than this is dropped rather than reused: the server
/// closes connections idle for `header_read_timeout` (10 s), and a send on one it is closing
/// fails with EOF (a browser or *arr client would silently retry; this one must not).
const MAX_IDLE: Duration = Duration::from_secs(5);
/// The issue's bound on the healthy hooks' p99 delivery lag.
const LAG_P99_LIMIT_MS: f64 = 100.0;
/// The lag plot's floor (log scale): a delivery that beat its 202 has lag 0.
const LAG_FLOOR_MS: f64 = 0.1;
/// Flatness tolerances: last third's mean against the second third's.
const RSS_TOLERANCE: f64 = 0.10;
const DB_TOLERANCE: f64 = 0.10;
const FDS_TOLERANCE: f64 = 0.10;
/// Fds jitter with the connections open at the moment; below this many, a rise is noise.
const FDS_SLACK: f64 = 8.0;
/// Blocking-pool threads come and go; below this many, a rise is noise.
const THREADS_SLACK: f64 = 4.0;
const ADMIN_TOKEN: &str = "soak-admin-token-0123456789";

#[derive(Clone, Debug)]
struct Settings {
    rate: u64,
    secs: u64,
    sample: Duration,
    /// Half-period of the flapping hook: this long answering 200, then this long 503.
    flap: Duration,
    drain: Duration,
    data_parent: PathBuf,
    out_dir: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(msg) => {
            eprintln!("soak: {msg}");
            ExitCode::FAILURE
        }
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
    let secs = positive("RELAYARR_SOAK_SECS", DEFAULT_SECS)?;
    // A short check still sees the flapping hook go down and come back at least once.
    let flap_default = DEFAULT_FLAP_SECS.min((secs / 4).max(1));
    Ok(Settings {
        rate: positive("RELAYARR_SOAK_RATE", DEFAULT_RATE)?,
        secs,
        sample: Duration::from_secs(positive("RELAYARR_SOAK_SAMPLE", DEFAULT_SAMPLE_SECS)?),
        flap: Duration::from_secs(positive("RELAYARR_SOAK_FLAP", flap_default)?),
        drain: Duration::from_secs(positive("RELAYARR_SOAK_DRAIN", DEFAULT_DRAIN_SECS)?),
        data_parent: std::env::var_os("RELAYARR_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        out_dir: std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("soak"),
    })
}

fn run() -> Result<bool, String> {
    let settings = settings_from_env()?;
    let body = Arc::new(BodyTemplate::load()?);
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|e| format!("create {}: {e}", settings.out_dir.display()))?;
    let csv_path = settings.out_dir.join("soak.csv");
    let png_path = settings.out_dir.join("soak.png");

    let (arrival_tx, arrival_rx) = std::sync::mpsc::channel();
    let sinks = Sinks::start(arrival_tx, settings.flap)?;
    let data_dir = tempfile::Builder::new()
        .prefix("relayarr-soak-")
        .tempdir_in(&settings.data_parent)
        .map_err(|e| format!("temp dir in {}: {e}", settings.data_parent.display()))?;
    let config = relay_config_text(data_dir.path(), &sinks.addrs);
    // The caller's config overrides (`RELAYARR_HISTORY__RETENTION=10m`, …) apply to the
    // server under test, as they do to the binary.
    let mut overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RELAYARR_") && k.contains("__"))
        .collect();
    // The server logs at `warn` unless `RELAYARR_SOAK_LOG` sets its filter.
    if let Ok(filter) = std::env::var("RELAYARR_SOAK_LOG") {
        overrides.push(("RELAYARR_LOG".into(), filter));
    }
    let server = ChildServer::spawn_with_env(&config, data_dir.path(), overrides.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(wait_ready(server.addr))
        .map_err(|e| format!("relay did not become ready: {e}"))?;
    let http = reqwest::Client::new();

    print_preamble(
        &settings,
        &body,
        &server,
        data_dir.path(),
        &overrides,
        &csv_path,
    );
    let mut csv = std::fs::File::create(&csv_path)
        .map_err(|e| format!("create {}: {e}", csv_path.display()))?;
    writeln!(csv, "{}", Sample::CSV_HEADER).map_err(|e| format!("write csv: {e}"))?;

    // Load.
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    let gen_stats = Arc::new(GenStats::default());
    let load_start = Instant::now() + Duration::from_millis(200);
    sinks.shared.set_start(load_start);
    let generator = {
        let (body, stats, settings) = (Arc::clone(&body), Arc::clone(&gen_stats), settings.clone());
        let addr = server.addr;
        std::thread::Builder::new()
            .name("soak-load".into())
            .spawn(move || -> Result<(), String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("load runtime: {e}"))?;
                rt.block_on(generate(addr, &settings, load_start, body, ack_tx, stats));
                Ok(())
            })
            .map_err(|e| format!("load thread: {e}"))?
    };

    let mut books = Books::new();
    let mut samples: Vec<Sample> = Vec::new();
    let db = data_dir.path().join("relayarr.db");
    let mut cpu_prev = (Instant::now(), server.cpu_s());
    let mut next = load_start + settings.sample;
    let mut load_done_at: Option<Instant> = None;
    let mut drained = false;
    // Consecutive samples after the load with every queue empty.
    let mut empty_streak = 0;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += settings.sample;
        // Read before the window is taken: once the generator is done, every 202 it got is
        // already in the channel, so the window below holds all of them.
        let load_over = generator.is_finished();
        let window = books.take_window(&ack_rx, &arrival_rx);
        let now = Instant::now();
        let cpu = server.cpu_s();
        let cpu_cores = (cpu - cpu_prev.1) / now.duration_since(cpu_prev.0).as_secs_f64();
        cpu_prev = (now, cpu);
        let queues = rt.block_on(queue_depths(&http, server.addr));
        let phase = if load_done_at.is_some() {
            Phase::Drain
        } else {
            Phase::Load
        };
        let s = Sample {
            t_s: now.duration_since(load_start).as_secs_f64(),
            phase,
            sent: gen_stats.sent.load(Ordering::Relaxed),
            acked: books.acked_count(),
            late: gen_stats.late.load(Ordering::Relaxed),
            errors: gen_stats.errors.load(Ordering::Relaxed),
            ingest_p99_ms: pct_ms(&mut window.ingest_us.clone(), 99.0),
            rss_mib: server.status_kib("VmRSS").unwrap_or(0) as f64 / 1024.0,
            fds: server.open_fds().unwrap_or(0),
            threads: server.status_count("Threads").unwrap_or(0),
            db_mib: file_mib(&db),
            wal_mib: file_mib(&db.with_extension("db-wal")),
            queue_healthy: queues.map(|q| q.healthy),
            queue_flapping: queues.map(|q| q.flapping),
            healthy_lag_p50_ms: pct_ms(&mut window.healthy_lag_us.clone(), 50.0),
            healthy_lag_p99_ms: pct_ms(&mut window.healthy_lag_us.clone(), 99.0),
            healthy_lag_max_ms: window
                .healthy_lag_us
                .iter()
                .max()
                .map(|m| *m as f64 / 1000.0),
            flapping_lag_p50_ms: pct_ms(&mut window.flapping_lag_us.clone(), 50.0),
            flapping_lag_p99_ms: pct_ms(&mut window.flapping_lag_us.clone(), 99.0),
            healthy_delivered: window.healthy_lag_us.len() as u64,
            flapping_delivered: window.flapping_lag_us.len() as u64,
            flapping_down: sinks.shared.is_down(now),
            cpu_cores,
        };
        writeln!(csv, "{}", s.csv_row()).map_err(|e| format!("write csv: {e}"))?;
        eprintln!("{}", s.progress_line(settings.secs));
        let queues_empty = queues.is_some_and(|q| q.healthy + q.flapping == 0);
        samples.push(s);

        if load_done_at.is_none() && load_over {
            load_done_at = Some(Instant::now());
            eprintln!(
                "soak: load finished; waiting up to {} s for the queues to drain",
                settings.drain.as_secs()
            );
        }
        if let Some(done) = load_done_at {
            // Everything the generator sent is answered once the thread is done.
            if books.all_delivered() && queues_empty {
                drained = true;
                break;
            }
            empty_streak = if queues_empty { empty_streak + 1 } else { 0 };
            // Nothing pending for three samples and still missing deliveries: the relay
            // gave up on them (dead), so waiting longer shows nothing new.
            if empty_streak >= 3 || done.elapsed() > settings.drain {
                break;
            }
        }
    }
    generator
        .join()
        .map_err(|_| "the load generator panicked".to_string())??;
    // What arrived after the last sample.
    let _ = books.take_window(&ack_rx, &arrival_rx);
    let stop = server.stop();
    let flapping_503 = sinks.shared.refused.load(Ordering::Relaxed);
    sinks.stop();
    // The server's log outlives its data dir (warnings, and the store writer's totals at
    // the drain when `RELAYARR_SOAK_LOG` asks for `info`).
    let log_path = settings.out_dir.join("server.log");
    if let Err(e) = std::fs::copy(data_dir.path().join("relayarr-bench.log"), &log_path) {
        eprintln!("soak: server log not kept: {e}");
    }
    drop(data_dir);

    if let Err(msg) = plot(&png_path, &samples, &settings) {
        eprintln!("soak: no plot: {msg}");
    } else {
        println!("- plot: {}", png_path.display());
    }
    println!("- samples: {}", csv_path.display());
    println!();
    let errors = gen_stats.errors_by_kind();
    Ok(report(&Report {
        settings: &settings,
        samples: &samples,
        books: &books,
        gen: &gen_stats,
        errors: &errors,
        drained,
        stop,
        flapping_503,
    }))
}

fn relay_config_text(data_dir: &Path, sinks: &[SocketAddr]) -> String {
    let dir = toml::Value::String(data_dir.display().to_string());
    let mut text = format!(
        r#"
[server]
data_dir = {dir}
admin_token = "{ADMIN_TOKEN}"
shutdown_grace = "5s"

[[source]]
name = "sonarr"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
"#
    );
    for (i, addr) in sinks.iter().enumerate() {
        if i == FLAPPING {
            // Retries 1 s, 2 s, 4 s … capped at 20 s (±20 % jitter): an event that first
            // fails at the start of a 60 s outage is retried about 31, 51 and 71 s later, so
            // it gets through in the next healthy half. disable_after = 0: the hook must keep
            // trying, not be disabled.
            text.push_str(&format!(
                "\n[[hook]]\nname = \"flapping\"\nurl = \"http://{addr}/\"\nevents = \"*\"\n\
                 max_in_flight = {HEALTHY_IN_FLIGHT}\nretry = \"exponential:12\"\n\
                 retry_base = \"1s\"\nretry_cap = \"20s\"\ndisable_after = 0\n"
            ));
        } else {
            text.push_str(&format!(
                "\n[[hook]]\nname = \"healthy-{}\"\nurl = \"http://{addr}/\"\nevents = \"*\"\n\
                 max_in_flight = {HEALTHY_IN_FLIGHT}\n",
                i + 1
            ));
        }
    }
    text
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
}

#[derive(Clone, Copy, Debug)]
struct QueueDepths {
    healthy: u64,
    flapping: u64,
}

/// Pending deliveries per hook, from the `relayarr_queue_depth{target="…"}` gauges of
/// `/metrics` (read from the store at each scrape).
async fn queue_depths(http: &reqwest::Client, addr: SocketAddr) -> Option<QueueDepths> {
    let text = metrics_text(http, addr, ADMIN_TOKEN).await?;
    let mut q = QueueDepths {
        healthy: 0,
        flapping: 0,
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("relayarr_queue_depth{") else {
            continue;
        };
        let (labels, value) = rest.split_once('}')?;
        let n = value.trim().parse::<f64>().ok()? as u64;
        let target = labels
            .split_once("target=\"")
            .and_then(|(_, t)| t.split_once('"'))
            .map(|(t, _)| t.trim_start_matches("hook:"))?;
        if target == "flapping" {
            q.flapping += n;
        } else if target.starts_with("healthy-") {
            q.healthy += n;
        }
    }
    Some(q)
}

// ---------------------------------------------------------------------------------------
// Receivers: one listener per hook on one thread; hook 8 flaps between 200 and 503.
// ---------------------------------------------------------------------------------------

/// One delivery as a receiver saw it: (hook index, event id, arrival).
type Arrival = (usize, u128, Instant);

struct SinkShared {
    arrivals: Mutex<Sender<Arrival>>,
    /// When the load starts; the flap clock counts from it.
    start: Mutex<Option<Instant>>,
    flap: Duration,
    /// Requests the flapping receiver answered 503.
    refused: AtomicU64,
}

impl SinkShared {
    fn set_start(&self, at: Instant) {
        *self.start.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Whether the flapping hook is in its 503 half at `now`: up for the first half-period,
    /// then down, then up, …
    fn is_down(&self, now: Instant) -> bool {
        let Some(start) = *self.start.lock().unwrap_or_else(|e| e.into_inner()) else {
            return false;
        };
        let half = self.flap.as_millis().max(1);
        (now.saturating_duration_since(start).as_millis() / half) % 2 == 1
    }
}

struct SinkState {
    hook: usize,
    shared: Arc<SinkShared>,
}

/// The envelope's event id, parsed without building the rest of the body.
#[derive(serde::Deserialize)]
struct EnvelopeId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

fn ulid_of(body: &[u8]) -> Option<u128> {
    let e: EnvelopeId<'_> = serde_json::from_slice(body).ok()?;
    ulid::Ulid::from_string(e.id).ok().map(|u| u.0)
}

async fn sink(State(st): State<Arc<SinkState>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    if st.hook == FLAPPING && st.shared.is_down(at) {
        st.shared.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(id) = ulid_of(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let _ = st
        .shared
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((st.hook, id, at));
    StatusCode::OK
}

struct Sinks {
    addrs: Vec<SocketAddr>,
    shared: Arc<SinkShared>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sinks {
    fn start(arrivals: Sender<Arrival>, flap: Duration) -> Result<Sinks, String> {
        let shared = Arc::new(SinkShared {
            arrivals: Mutex::new(arrivals),
            start: Mutex::new(None),
            flap,
            refused: AtomicU64::new(0),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("soak-sinks".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("sink runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut servers = Vec::new();
                    let mut addrs = Vec::new();
                    for hook in 0..HOOKS {
                        let l = match TcpListener::bind("127.0.0.1:0").await {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = addr_tx.send(Err(format!("sink bind: {e}")));
                                return;
                            }
                        };
                        addrs.push(l.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()));
                        let app =
                            Router::new()
                                .route("/", post(sink))
                                .with_state(Arc::new(SinkState {
                                    hook,
                                    shared: Arc::clone(&thread_shared),
                                }));
                        let mut rx = stop_rx.clone();
                        servers.push(tokio::spawn(async move {
                            let _ = axum::serve(l, app)
                                .with_graceful_shutdown(async move {
                                    let _ = rx.wait_for(|s| *s).await;
                                })
                                .await;
                        }));
                    }
                    let _ = addr_tx.send(Ok(addrs));
                    for s in servers {
                        let _ = s.await;
                    }
                });
            })
            .map_err(|e| format!("sink thread: {e}"))?;
        let addrs = addr_rx
            .recv()
            .map_err(|_| "the sink thread died".to_string())??;
        Ok(Sinks {
            addrs,
            shared,
            stop,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

// ---------------------------------------------------------------------------------------
// Load generator: open loop on a fixed clock.
// ---------------------------------------------------------------------------------------

/// An acknowledged event: (id, when its send was due, when its 202 was read).
type Ack = (u128, Instant, Instant);

#[derive(Default)]
struct GenStats {
    /// Sends started.
    sent: AtomicU64,
    /// Sends that started more than `LATE_AFTER` after their due time.
    late: AtomicU64,
    /// The latest start, in microseconds after the due time.
    max_late_us: AtomicU64,
    /// Sends not answered 202 (any status, I/O error or timeout).
    errors: AtomicU64,
    /// Error kind → (count, a sample).
    by_kind: Mutex<BTreeMap<String, (u64, String)>>,
}

impl GenStats {
    fn error(&self, kind: String, sample: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut m = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(kind)
            .or_insert_with(|| (0, sample.chars().take(200).collect()))
            .0 += 1;
    }

    fn errors_by_kind(&self) -> BTreeMap<String, (u64, String)> {
        self.by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

async fn generate(
    addr: SocketAddr,
    settings: &Settings,
    start: Instant,
    body: Arc<BodyTemplate>,
    acks: Sender<Ack>,
    stats: Arc<GenStats>,
) {
    let total = settings.rate * settings.secs;
    let every = Duration::from_secs_f64(1.0 / settings.rate as f64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    // Idle keep-alive connections, each with the moment it became idle; last in, first out.
    let idle: Arc<Mutex<Vec<(TcpStream, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let host = addr.to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = start + every.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (body, stats, idle, acks, host) = (
            Arc::clone(&body),
            Arc::clone(&stats),
            Arc::clone(&idle),
            acks.clone(),
            host.clone(),
        );
        tasks.spawn(async move {
            let _slot = slot;
            let pooled = {
                let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                // Pushed in time order, so the stale ones are a prefix.
                let fresh = idle
                    .iter()
                    .position(|(_, at)| at.elapsed() < MAX_IDLE)
                    .unwrap_or(idle.len());
                idle.drain(..fresh);
                idle.pop().map(|(s, _)| s)
            };
            let mut stream = match pooled {
                Some(s) => s,
                None => match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        s
                    }
                    Err(e) => {
                        stats.error(format!("connect: {}", e.kind()), &e.to_string());
                        return;
                    }
                },
            };
            let mut req = Vec::with_capacity(4096);
            let mut resp = Vec::with_capacity(1024);
            body.request(k, &host, &mut req);
            let began = Instant::now();
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let late = began.saturating_duration_since(due);
            if late > LATE_AFTER {
                stats.late.fetch_add(1, Ordering::Relaxed);
            }
            stats
                .max_late_us
                .fetch_max(late.as_micros() as u64, Ordering::Relaxed);
            let res =
                tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut stream, &req, &mut resp)).await;
            let done = Instant::now();
            match res {
                Ok(Ok(a)) if a.status == 202 => {
                    idle.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((stream, Instant::now()));
                    match ulid_of(&resp[a.body_start..]) {
                        Some(id) => {
                            let _ = acks.send((id, due, done));
                        }
                        None => stats.error(
                            "202 without an id".into(),
                            &String::from_utf8_lossy(&resp[a.body_start..]),
                        ),
                    }
                }
                Ok(Ok(a)) => {
                    idle.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((stream, Instant::now()));
                    let sample = String::from_utf8_lossy(&resp[a.body_start..]).into_owned();
                    stats.error(format!("HTTP {}", a.status), &sample);
                }
                Ok(Err(e)) => stats.error(format!("io: {}", e.kind()), &e.to_string()),
                Err(_) => stats.error("timeout".into(), "no answer within 30 s"),
            }
        });
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

// ---------------------------------------------------------------------------------------
// Books: acknowledgements, arrivals, lags.
// ---------------------------------------------------------------------------------------

/// One sample window's raw measurements, in microseconds.
#[derive(Default)]
struct Window {
    /// From each send's due time to its 202 (the open-loop latency, waits included).
    ingest_us: Vec<u64>,
    /// First arrivals at healthy hooks: arrival minus the 202 (0 if the delivery came first).
    healthy_lag_us: Vec<u64>,
    flapping_lag_us: Vec<u64>,
}

struct Books {
    /// Event id → index into `ack_at`.
    index: HashMap<u128, u32>,
    ack_at: Vec<Instant>,
    /// Per hook, one bit per acknowledged event: delivered at least once.
    seen: Vec<Vec<u64>>,
    delivered: [u64; HOOKS],
    duplicates: [u64; HOOKS],
    /// Arrivals whose 202 the generator had not reported yet.
    unmatched: Vec<Arrival>,
    /// Every healthy first arrival's lag over the run, for the whole-run percentiles.
    healthy_lag_us: Vec<u32>,
    flapping_lag_us: Vec<u32>,
}

impl Books {
    fn new() -> Books {
        Books {
            index: HashMap::new(),
            ack_at: Vec::new(),
            seen: vec![Vec::new(); HOOKS],
            delivered: [0; HOOKS],
            duplicates: [0; HOOKS],
            unmatched: Vec::new(),
            healthy_lag_us: Vec::new(),
            flapping_lag_us: Vec::new(),
        }
    }

    fn acked_count(&self) -> u64 {
        self.ack_at.len() as u64
    }

    fn take_window(&mut self, acks: &Receiver<Ack>, arrivals: &Receiver<Arrival>) -> Window {
        let mut w = Window::default();
        for (id, due, acked) in acks.try_iter() {
            let i = self.ack_at.len() as u32;
            self.index.insert(id, i);
            self.ack_at.push(acked);
            w.ingest_us
                .push(acked.saturating_duration_since(due).as_micros() as u64);
        }
        let mut pending = std::mem::take(&mut self.unmatched);
        pending.extend(arrivals.try_iter());
        for (hook, id, at) in pending {
            let Some(&i) = self.index.get(&id) else {
                self.unmatched.push((hook, id, at));
                continue;
            };
            let bits = &mut self.seen[hook];
            let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
            if bits.len() <= word {
                bits.resize(word + 1, 0);
            }
            if bits[word] & bit != 0 {
                self.duplicates[hook] += 1;
                continue;
            }
            bits[word] |= bit;
            self.delivered[hook] += 1;
            let lag = at
                .saturating_duration_since(self.ack_at[i as usize])
                .as_micros() as u64;
            let lag32 = u32::try_from(lag).unwrap_or(u32::MAX);
            if hook == FLAPPING {
                w.flapping_lag_us.push(lag);
                self.flapping_lag_us.push(lag32);
            } else {
                w.healthy_lag_us.push(lag);
                self.healthy_lag_us.push(lag32);
            }
        }
        w
    }

    /// Acknowledged events a hook has not received (yet).
    fn missing(&self, hook: usize) -> u64 {
        self.acked_count().saturating_sub(self.delivered[hook])
    }

    fn all_delivered(&self) -> bool {
        (0..HOOKS).all(|h| self.missing(h) == 0)
    }
}

/// Nearest-rank percentile of microsecond samples, in milliseconds; `None` when empty.
fn pct_ms<T: Copy + Ord + Into<u64>>(samples: &mut [T], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1].into() as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------
// Samples: CSV, progress, plot.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Load,
    Drain,
}

#[derive(Clone, Debug)]
struct Sample {
    t_s: f64,
    phase: Phase,
    sent: u64,
    acked: u64,
    late: u64,
    errors: u64,
    ingest_p99_ms: Option<f64>,
    rss_mib: f64,
    fds: u64,
    /// The server's OS threads (`Threads` in `/proc/PID/status`).
    threads: u64,
    db_mib: f64,
    wal_mib: f64,
    queue_healthy: Option<u64>,
    queue_flapping: Option<u64>,
    healthy_lag_p50_ms: Option<f64>,
    healthy_lag_p99_ms: Option<f64>,
    healthy_lag_max_ms: Option<f64>,
    flapping_lag_p50_ms: Option<f64>,
    flapping_lag_p99_ms: Option<f64>,
    healthy_delivered: u64,
    flapping_delivered: u64,
    flapping_down: bool,
    cpu_cores: f64,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.2}"))
}

impl Sample {
    const CSV_HEADER: &'static str = "t_s,phase,sent,acked,late,errors,ingest_p99_ms,rss_mib,\
         fds,db_mib,wal_mib,queue_healthy,queue_flapping,healthy_lag_p50_ms,healthy_lag_p99_ms,\
         healthy_lag_max_ms,flapping_lag_p50_ms,flapping_lag_p99_ms,healthy_delivered,\
         flapping_delivered,flapping_down,cpu_cores,threads";

    fn csv_row(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{:.2},{},{:.2},{:.2},{},{},{},{},{},{},{},{},{},{},{:.3},{}",
            self.t_s,
            match self.phase {
                Phase::Load => "load",
                Phase::Drain => "drain",
            },
            self.sent,
            self.acked,
            self.late,
            self.errors,
            opt_ms(self.ingest_p99_ms),
            self.rss_mib,
            self.fds,
            self.db_mib,
            self.wal_mib,
            opt(self.queue_healthy),
            opt(self.queue_flapping),
            opt_ms(self.healthy_lag_p50_ms),
            opt_ms(self.healthy_lag_p99_ms),
            opt_ms(self.healthy_lag_max_ms),
            opt_ms(self.flapping_lag_p50_ms),
            opt_ms(self.flapping_lag_p99_ms),
            self.healthy_delivered,
            self.flapping_delivered,
            u8::from(self.flapping_down),
            self.cpu_cores,
            self.threads,
        )
    }

    fn progress_line(&self, secs: u64) -> String {
        format!(
            "soak: {:>6.0}/{secs} s {:5} sent {} acked {} late {} errors {} | ingest p99 {} ms \
             | RSS {:.1} MiB, fds {}, threads {}, db {:.1}+{:.1} MiB, CPU {:.2} | queue healthy {} \
             flapping {}{} | lag healthy p50/p99 {}/{} ms, flapping p99 {} ms",
            self.t_s,
            match self.phase {
                Phase::Load => "load",
                Phase::Drain => "drain",
            },
            self.sent,
            self.acked,
            self.late,
            self.errors,
            opt_ms(self.ingest_p99_ms),
            self.rss_mib,
            self.fds,
            self.threads,
            self.db_mib,
            self.wal_mib,
            self.cpu_cores,
            opt(self.queue_healthy),
            opt(self.queue_flapping),
            if self.flapping_down { " (down)" } else { "" },
            opt_ms(self.healthy_lag_p50_ms),
            opt_ms(self.healthy_lag_p99_ms),
            opt_ms(self.flapping_lag_p99_ms),
        )
    }
}

/// Where the plot's font comes from: plotters draws text with ab_glyph from font bytes we
/// hand it, so the bench needs no system font library.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Four stacked panels over time: memory and database size, open fds, healthy hooks' lag,
/// queue depth.
fn plot(path: &Path, samples: &[Sample], settings: &Settings) -> Result<(), String> {
    use plotters::prelude::*;

    let font = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| format!("no font found (looked for {})", FONT_PATHS.join(", ")))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Vec::leak(font))
        .map_err(|_| "the font file is not a usable TrueType font".to_string())?;
    if samples.is_empty() {
        return Err("no samples".into());
    }
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let root = BitMapBackend::new(path, (1400, 1600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let root = root
        .titled(
            &format!(
                "relayarr soak: {} events/s for {} s, 8 hooks (hook 8: {f} s up, {f} s 503), \
                 sampled every {} s",
                settings.rate,
                settings.secs,
                settings.sample.as_secs(),
                f = settings.flap.as_secs(),
            ),
            ("sans-serif", 26),
        )
        .map_err(e)?;
    let panels = root.split_evenly((4, 1));
    let legend = |x: i32, y: i32, c: RGBColor| {
        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
    };
    let max_of =
        |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).fold(0.0_f64, f64::max).max(1e-3) * 1.15;

    // 1: RSS and database size.
    {
        let y_max = max_of(&|s| s.rss_mib.max(s.db_mib + s.wal_mib));
        let mut c = ChartBuilder::on(&panels[0])
            .caption("Server memory and database size", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("time since load start (s)")
            .y_desc("MiB")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        c.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.rss_mib)),
            RED.stroke_width(2),
        ))
        .map_err(e)?
        .label("server RSS (MiB)")
        .legend(move |(x, y)| legend(x, y, RED));
        c.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.db_mib + s.wal_mib)),
            BLUE.stroke_width(2),
        ))
        .map_err(e)?
        .label("relayarr.db + -wal (MiB)")
        .legend(move |(x, y)| legend(x, y, BLUE));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    // 2: open file descriptors.
    {
        let y_max = max_of(&|s| s.fds as f64);
        let mut c = ChartBuilder::on(&panels[1])
            .caption("Server open file descriptors", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("time since load start (s)")
            .y_desc("open fds")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        c.draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.fds as f64)),
            MAGENTA.stroke_width(2),
        ))
        .map_err(e)?
        .label("entries in /proc/PID/fd")
        .legend(move |(x, y)| legend(x, y, MAGENTA));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    // 3: healthy hooks' delivery lag.
    {
        // Log scale: the 100 ms line stays readable whether the run is at 5 ms or at 20 s.
        let y_max = max_of(&|s| s.healthy_lag_p99_ms.unwrap_or(0.0)).max(LAG_P99_LIMIT_MS * 2.0);
        let mut c = ChartBuilder::on(&panels[2])
            .caption(
                "Delivery lag, healthy hooks 1-7 (202 to arrival at the receiver), per window",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, (LAG_FLOOR_MS..y_max).log_scale())
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("time since load start (s)")
            .y_desc("lag (ms, log scale)")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        let line = |f: fn(&Sample) -> Option<f64>| {
            samples
                .iter()
                .filter_map(move |s| f(s).map(|v| (s.t_s, v.max(LAG_FLOOR_MS))))
                .collect::<Vec<_>>()
        };
        c.draw_series(LineSeries::new(
            line(|s| s.healthy_lag_p99_ms),
            RED.stroke_width(2),
        ))
        .map_err(e)?
        .label("p99")
        .legend(move |(x, y)| legend(x, y, RED));
        c.draw_series(LineSeries::new(
            line(|s| s.healthy_lag_p50_ms),
            GREEN.stroke_width(2),
        ))
        .map_err(e)?
        .label("p50")
        .legend(move |(x, y)| legend(x, y, GREEN));
        c.draw_series(LineSeries::new(
            [(0.0, LAG_P99_LIMIT_MS), (t_max, LAG_P99_LIMIT_MS)],
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label("p99 limit (100 ms)")
        .legend(move |(x, y)| legend(x, y, BLACK));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    // 4: queue depth.
    {
        let y_max = max_of(&|s| {
            s.queue_healthy
                .unwrap_or(0)
                .max(s.queue_flapping.unwrap_or(0)) as f64
        });
        let mut c = ChartBuilder::on(&panels[3])
            .caption(
                "Queue depth (pending deliveries in the store, from /metrics)",
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(e)?;
        c.configure_mesh()
            .x_desc("time since load start (s)")
            .y_desc("deliveries")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e)?;
        let half = settings.flap.as_secs_f64().max(1.0);
        c.draw_series(
            (0..)
                .map(|i| (2 * i + 1) as f64 * half)
                .take_while(|start| *start < t_max)
                .map(|start| {
                    Rectangle::new(
                        [(start, 0.0), ((start + half).min(t_max), y_max)],
                        RED.mix(0.08).filled(),
                    )
                }),
        )
        .map_err(e)?
        .label("hook 8 answering 503")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], RED.mix(0.2).filled()));
        c.draw_series(LineSeries::new(
            samples
                .iter()
                .filter_map(|s| s.queue_healthy.map(|q| (s.t_s, q as f64))),
            GREEN.stroke_width(2),
        ))
        .map_err(e)?
        .label("healthy hooks 1-7, total")
        .legend(move |(x, y)| legend(x, y, GREEN));
        c.draw_series(LineSeries::new(
            samples
                .iter()
                .filter_map(|s| s.queue_flapping.map(|q| (s.t_s, q as f64))),
            RED.stroke_width(2),
        ))
        .map_err(e)?
        .label("flapping hook 8")
        .legend(move |(x, y)| legend(x, y, RED));
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report and verdicts.
// ---------------------------------------------------------------------------------------

fn print_preamble(
    settings: &Settings,
    body: &BodyTemplate,
    server: &ChildServer,
    data_dir: &Path,
    overrides: &[(String, String)],
    csv: &Path,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("## relayarr soak");
    println!();
    println!(
        "`RELAYARR_SOAK_SECS={} RELAYARR_SOAK_RATE={} cargo bench --bench soak`",
        settings.secs, settings.rate
    );
    println!();
    println!("- machine: {cores} CPUs available, Linux {}", kernel.trim());
    println!(
        "- server: the `relayarr` binary, child process {} on {}, data dir {} \
         (SQLite), logging at `warn`{}",
        server.pid(),
        server.addr,
        data_dir.display(),
        if overrides.is_empty() {
            String::new()
        } else {
            format!(
                ", with {}",
                overrides
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
    println!(
        "- load: open loop, {} unique Sonarr `Download` events/s ({} bytes each) for {} s, \
         up to {MAX_CONNS} keep-alive connections; a send starting over {} ms after its due \
         time counts as late",
        settings.rate,
        body.len(),
        settings.secs,
        LATE_AFTER.as_millis()
    );
    println!(
        "- hooks: 8, `events = \"*\"`, relayarr format, max_in_flight {HEALTHY_IN_FLIGHT}; hook 8 \
         (`flapping`) answers 200 for {f} s, then 503 for {f} s, and so on (retry \
         exponential:12 from 1 s, capped at 20 s; disable_after = 0)",
        f = settings.flap.as_secs()
    );
    println!(
        "- sampling every {} s into {}",
        settings.sample.as_secs(),
        csv.display()
    );
    println!();
}

struct Report<'a> {
    settings: &'a Settings,
    samples: &'a [Sample],
    books: &'a Books,
    gen: &'a GenStats,
    errors: &'a BTreeMap<String, (u64, String)>,
    drained: bool,
    stop: Result<(), String>,
    flapping_503: u64,
}

/// One flatness verdict: a sampled value may rise by `tol` (a fraction) or by `slack`
/// (absolute), whichever is larger, from the second third of the load to the last.
struct FlatCheck {
    what: &'static str,
    unit: &'static str,
    tol: f64,
    slack: f64,
    value: fn(&Sample) -> f64,
}

/// Mean and peak of `f` over the second and the last third of the load-phase samples, with
/// min and max over the whole load phase. Both the means and the peaks must hold: a value
/// that collapses and recovers can keep its mean while its peak grows.
struct Flatness {
    second: f64,
    last: f64,
    second_peak: f64,
    last_peak: f64,
    min: f64,
    max: f64,
}

fn flatness(load: &[&Sample], f: impl Fn(&Sample) -> f64) -> Option<Flatness> {
    if load.len() < 3 {
        return None;
    }
    let third = load.len() / 3;
    let mean = |xs: &[&Sample]| xs.iter().map(|s| f(s)).sum::<f64>() / xs.len() as f64;
    let peak = |xs: &[&Sample]| xs.iter().map(|s| f(s)).fold(f64::NEG_INFINITY, f64::max);
    let values = load.iter().map(|s| f(s));
    Some(Flatness {
        second: mean(&load[third..2 * third]),
        last: mean(&load[load.len() - third..]),
        second_peak: peak(&load[third..2 * third]),
        last_peak: peak(&load[load.len() - third..]),
        min: values.clone().fold(f64::INFINITY, f64::min),
        max: values.fold(f64::NEG_INFINITY, f64::max),
    })
}

fn report(r: &Report<'_>) -> bool {
    let mut ok = true;
    let mut verdict = |pass: bool, what: String| {
        ok &= pass;
        println!("- {} {what}", if pass { "PASS" } else { "FAIL" });
    };
    println!("### Verdicts");
    println!();

    // Ingest.
    let sent = r.gen.sent.load(Ordering::Relaxed);
    let expected = r.settings.rate * r.settings.secs;
    verdict(
        r.gen.errors.load(Ordering::Relaxed) == 0 && sent == expected,
        format!(
            "ingest: {} of {expected} sends answered 202, {} errors; {} late (> {} ms after \
             their due time, {:.2} %), the latest {:.1} ms late",
            r.books.acked_count(),
            r.gen.errors.load(Ordering::Relaxed),
            r.gen.late.load(Ordering::Relaxed),
            LATE_AFTER.as_millis(),
            100.0 * r.gen.late.load(Ordering::Relaxed) as f64 / sent.max(1) as f64,
            r.gen.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0
        ),
    );
    for (kind, (n, sample)) in r.errors {
        println!("  - {n} × {kind}, e.g. {sample:?}");
    }

    // Loss.
    for hook in 0..HOOKS {
        let name = if hook == FLAPPING {
            "hook 8 (flapping)".to_string()
        } else {
            format!("hook {} (healthy)", hook + 1)
        };
        verdict(
            r.books.missing(hook) == 0,
            format!(
                "no event lost at {name}: {} of {} acknowledged events received, {} missing, \
                 {} duplicate deliveries",
                r.books.delivered[hook],
                r.books.acked_count(),
                r.books.missing(hook),
                r.books.duplicates[hook]
            ),
        );
    }
    if !r.books.unmatched.is_empty() {
        println!(
            "  - {} deliveries carried an event id the load generator never got a 202 for",
            r.books.unmatched.len()
        );
    }
    println!(
        "  - the flapping receiver answered 503 {} times; queues {} after the load{}",
        r.flapping_503,
        if r.drained {
            "drained and every delivery arrived"
        } else {
            "did NOT drain: deliveries were still missing"
        },
        match &r.stop {
            Ok(()) => "; the server stopped cleanly on SIGTERM".to_string(),
            Err(e) => format!("; server stop: {e}"),
        }
    );

    // Flatness.
    let load: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|s| s.phase == Phase::Load)
        .collect();
    let checks = [
        FlatCheck {
            what: "RSS",
            unit: "MiB",
            tol: RSS_TOLERANCE,
            slack: 0.0,
            value: |s| s.rss_mib,
        },
        FlatCheck {
            what: "open fds",
            unit: "",
            tol: FDS_TOLERANCE,
            slack: FDS_SLACK,
            value: |s| s.fds as f64,
        },
        FlatCheck {
            what: "threads",
            unit: "",
            tol: FDS_TOLERANCE,
            slack: THREADS_SLACK,
            value: |s| s.threads as f64,
        },
        FlatCheck {
            what: "database (db + wal)",
            unit: "MiB",
            tol: DB_TOLERANCE,
            slack: 0.0,
            value: |s| s.db_mib + s.wal_mib,
        },
    ];
    for FlatCheck {
        what,
        unit,
        tol,
        slack,
        value: f,
    } in checks
    {
        match flatness(&load, f) {
            Some(fl) => {
                let allowed = (fl.second * tol).max(slack);
                let allowed_peak = (fl.second_peak * tol).max(slack);
                verdict(
                    fl.last - fl.second <= allowed && fl.last_peak - fl.second_peak <= allowed_peak,
                    format!(
                        "{what} flat: mean {:.1} {unit} in the last third vs {:.1} {unit} in the \
                         second ({:+.1} %), peak {:.1} vs {:.1} ({:+.1} %), allowed +{:.0} %{}; \
                         min {:.1}, max {:.1} {unit} over the load",
                        fl.last,
                        fl.second,
                        100.0 * (fl.last - fl.second) / fl.second.max(f64::EPSILON),
                        fl.last_peak,
                        fl.second_peak,
                        100.0 * (fl.last_peak - fl.second_peak) / fl.second_peak.max(f64::EPSILON),
                        tol * 100.0,
                        if slack > 0.0 {
                            format!(" or +{slack:.0}")
                        } else {
                            String::new()
                        },
                        fl.min,
                        fl.max
                    ),
                );
            }
            None => verdict(
                false,
                format!("{what} flat: fewer than 3 samples under load"),
            ),
        }
    }

    // Lag.
    let mut healthy = r.books.healthy_lag_us.clone();
    let mut flapping = r.books.flapping_lag_us.clone();
    let whole_p99 = pct_ms(&mut healthy, 99.0);
    verdict(
        whole_p99.is_some_and(|p| p < LAG_P99_LIMIT_MS),
        format!(
            "healthy hooks' lag p99 over the whole run {} ms (< {LAG_P99_LIMIT_MS} ms); \
             p50 {} ms, max {} ms over {} deliveries",
            opt_ms(whole_p99),
            opt_ms(pct_ms(&mut healthy, 50.0)),
            opt_ms(healthy.last().map(|m| *m as f64 / 1000.0)),
            healthy.len()
        ),
    );
    let windows: Vec<&Sample> = r
        .samples
        .iter()
        .filter(|s| s.healthy_lag_p99_ms.is_some())
        .collect();
    let over: Vec<&&Sample> = windows
        .iter()
        .filter(|s| s.healthy_lag_p99_ms.is_some_and(|p| p >= LAG_P99_LIMIT_MS))
        .collect();
    verdict(
        over.is_empty() && !windows.is_empty(),
        format!(
            "healthy hooks' lag p99 < {LAG_P99_LIMIT_MS} ms in every window: {} of {} windows \
             over{}; worst window {} ms",
            over.len(),
            windows.len(),
            over.iter()
                .take(5)
                .map(|s| format!(" (t={:.0} s: {} ms)", s.t_s, opt_ms(s.healthy_lag_p99_ms)))
                .collect::<String>(),
            opt_ms(
                windows
                    .iter()
                    .filter_map(|s| s.healthy_lag_p99_ms)
                    .reduce(f64::max)
            )
        ),
    );
    println!(
        "  - flapping hook's lag (not judged: it includes the outages): p50 {} ms, p99 {} ms, \
         max {} ms",
        opt_ms(pct_ms(&mut flapping, 50.0)),
        opt_ms(pct_ms(&mut flapping, 99.0)),
        opt_ms(flapping.last().map(|m| *m as f64 / 1000.0)),
    );
    let ingest: Vec<f64> = load.iter().filter_map(|s| s.ingest_p99_ms).collect();
    let cpu: Vec<f64> = load.iter().map(|s| s.cpu_cores).collect();
    println!(
        "  - ingest p99 per window (from the due time to the 202): worst {} ms, median window \
         {} ms; server CPU {:.2} cores on average under load",
        opt_ms(ingest.iter().copied().reduce(f64::max)),
        opt_ms(median(&ingest)),
        cpu.iter().sum::<f64>() / cpu.len().max(1) as f64
    );
    println!();
    println!("{}", if ok { "SOAK PASSED" } else { "SOAK FAILED" });
    ok
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}
