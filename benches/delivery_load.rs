//! Delivery load bench: the real relayarr service, in-process, receiving unique Sonarr
//! `Download` bodies over loopback and delivering every event to `[[hook]]`s that point at
//! in-process sinks (bare axum handlers answering 200).
//!
//! Scenarios (each with a fresh relay and a fresh temp `data_dir`):
//! - `a`: one healthy hook;
//! - `b`: eight healthy hooks (`events = "*"`, `max_in_flight = 32`, no rate limit);
//! - `c`: one healthy hook next to a slow one, whose sink takes 500 ms per request
//!   (`max_in_flight = 4`: 8 requests/s, so nearly every event is still queued behind it);
//! - `d`: one healthy hook next to a dead one (connection refused; `disable_after = 0`, so
//!   it keeps failing and retrying instead of being disabled).
//!
//! Every scenario posts the same number of events the same way, so the healthy hook's lag
//! in `c` and `d` compares directly with `a`.
//!
//! Measured: ingest rate; deliveries completed at the healthy sinks per second (from the
//! first request to the last delivery); lag from the ingest 202 (read by the load
//! generator) to the delivery's arrival at a sink, matched by event id; process CPU; peak
//! RSS. Client, sinks and server share one process, so CPU and RSS cover all three.
//!
//! `[outbound] yield_to_ingest` keeps its default (10 ms) unless `RELAYARR_BENCH_YIELD` sets
//! it (`0s` turns it off, for an A/B); the report says how often deliveries yielded.
//!
//! Runtime layout, as in `ingest_load.rs` (2-core target): the server has its own
//! multi-thread runtime with 2 workers (`RELAYARR_BENCH_SERVER_THREADS`); the load
//! generator is one thread with a current-thread runtime and a hand-written keep-alive
//! HTTP/1.1 client; the sinks are another such thread. No tracing subscriber is installed
//! (`RELAYARR_BENCH_LOG` installs one while tuning).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use relayarr::{Config, Relay};

use tokio::net::{TcpListener, TcpStream};

/// The same allocator as the `relayarr` binary, so the bench measures what users run.
mod common;

use common::{
    exchange, fresh_postgres_database, metrics_text, postgres_admin_url, proc_status_kib,
    reset_peak_rss, server_in_child, wait_ready, BodyTemplate, ChildServer,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_EVENTS: u64 = 20_000;
const DEFAULT_CONNS: u64 = 16;
const DEFAULT_SERVER_THREADS: u64 = 2;
const DEFAULT_DRAIN_SECS: u64 = 120;
/// Healthy hooks' concurrency cap.
const HEALTHY_IN_FLIGHT: u32 = 32;
const SLOW_DELAY: Duration = Duration::from_millis(500);
const SLOW_IN_FLIGHT: u32 = 4;
/// An ingest request still unanswered after this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// `/proc/*/stat` counts CPU time in USER_HZ ticks: 100 on every mainstream Linux.
const USER_HZ: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Neighbour {
    None,
    /// A hook whose sink answers after `SLOW_DELAY`.
    Slow,
    /// A hook whose URL refuses connections.
    Dead,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    key: &'static str,
    label: &'static str,
    healthy: usize,
    neighbour: Neighbour,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        key: "a",
        label: "1 hook",
        healthy: 1,
        neighbour: Neighbour::None,
    },
    Scenario {
        key: "b",
        label: "8 hooks",
        healthy: 8,
        neighbour: Neighbour::None,
    },
    Scenario {
        key: "c",
        label: "1 hook + slow hook (500 ms)",
        healthy: 1,
        neighbour: Neighbour::Slow,
    },
    Scenario {
        key: "d",
        label: "1 hook + dead hook (refused)",
        healthy: 1,
        neighbour: Neighbour::Dead,
    },
];

#[derive(Clone, Debug)]
struct Settings {
    events: u64,
    conns: usize,
    /// Events per second across all connections; `None`: as fast as the server answers.
    rate: Option<u64>,
    server_threads: usize,
    drain: Duration,
    data_parent: PathBuf,
    /// `RELAYARR_BENCH_ONLY=a,c`: a subset of scenarios.
    only: Option<String>,
    /// `RELAYARR_BENCH_SERVER=process`: the relay runs as a child process.
    child: bool,
}

fn main() -> ExitCode {
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("delivery_load: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(filter) = std::env::var("RELAYARR_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let body = match BodyTemplate::load() {
        Ok(b) => Arc::new(b),
        Err(msg) => {
            eprintln!("delivery_load: {msg}");
            return ExitCode::FAILURE;
        }
    };
    // One counter for the whole run: every body this process sends is different.
    let seq = Arc::new(AtomicU64::new(0));
    print_preamble(&settings, &body);

    let mut results = Vec::new();
    for sc in SCENARIOS {
        if !settings.wants(sc.key) {
            continue;
        }
        eprintln!(
            "delivery_load: ({}) {}: {} events …",
            sc.key, sc.label, settings.events
        );
        match run_scenario(sc, &settings, &body, &seq) {
            Ok(r) => results.push(r),
            Err(msg) => {
                eprintln!("delivery_load: ({}) failed: {msg}", sc.key);
                return ExitCode::FAILURE;
            }
        }
    }
    print_report(&settings, &results);
    let complete = results
        .iter()
        .all(|r| r.load.errors.is_empty() && r.missing == 0);
    if complete {
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
    let size = |n: u64| usize::try_from(n).map_err(|e| e.to_string());
    Ok(Settings {
        events: positive("RELAYARR_BENCH_EVENTS", DEFAULT_EVENTS)?,
        conns: size(positive("RELAYARR_BENCH_CONNS", DEFAULT_CONNS)?)?,
        rate: match std::env::var("RELAYARR_BENCH_RATE") {
            Err(_) => None,
            Ok(_) => Some(positive("RELAYARR_BENCH_RATE", 1)?),
        },
        server_threads: size(positive(
            "RELAYARR_BENCH_SERVER_THREADS",
            DEFAULT_SERVER_THREADS,
        )?)?,
        drain: Duration::from_secs(positive("RELAYARR_BENCH_SECS", DEFAULT_DRAIN_SECS)?),
        data_parent: std::env::var_os("RELAYARR_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        only: std::env::var("RELAYARR_BENCH_ONLY").ok(),
        child: server_in_child(),
    })
}

impl Settings {
    fn wants(&self, key: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|k| k.trim().eq_ignore_ascii_case(key)))
    }
}

// ---------------------------------------------------------------------------------------
// Scenario: sinks, relay, load, wait for the deliveries, measure.
// ---------------------------------------------------------------------------------------

struct ScenarioResult {
    sc: Scenario,
    load: LoadResult,
    /// Healthy deliveries that arrived (first arrival per hook and event).
    delivered: u64,
    /// Healthy (hook, event) pairs that never arrived within the drain time.
    missing: u64,
    /// Healthy requests beyond the first per (hook, event).
    duplicates: u64,
    /// From the first ingest request to the last healthy delivery.
    span: Duration,
    lag: Percentiles,
    /// Requests the slow sink received, and the neighbour's pending deliveries at the end.
    neighbour_requests: u64,
    neighbour_pending: Option<u64>,
    /// How many times deliveries started yielding to ingest (`/metrics`).
    yielded: Option<u64>,
    cpu_cores: f64,
    rss_peak_kib: u64,
    peak_reset: bool,
}

fn run_scenario(
    sc: Scenario,
    settings: &Settings,
    body: &Arc<BodyTemplate>,
    seq: &Arc<AtomicU64>,
) -> Result<ScenarioResult, String> {
    let peak_reset = reset_peak_rss();
    let sinks = Sinks::start(sc.healthy)?;
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
    let dead = match sc.neighbour {
        // A port that was free a moment ago: connections to it are refused.
        Neighbour::Dead => Some(
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("dead port: {e}"))?,
        ),
        _ => None,
    };
    let mut text = relay_config_text(data_dir.path(), sc, &sinks, dead)?;
    if let Some(url) = server_rt.block_on(fresh_postgres_database())? {
        text.push_str(&format!("\n[store]\nurl = {}\n", toml::Value::String(url)));
    }
    let server = if settings.child {
        Server::Child(ChildServer::spawn(&text, data_dir.path())?)
    } else {
        let cfg = parse_config(&text)?;
        let listener = server_rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = Relay::builder(cfg).namespace(format!("delivery-bench-{}", sc.key));
        let task = server_rt.spawn(async move {
            relay
                .run(listener, async {
                    let _ = stop_rx.await;
                })
                .await
                .map_err(|e| e.to_string())
        });
        Server::InProcess {
            addr,
            task,
            stop: stop_tx,
        }
    };
    let addr = server.addr();
    server_rt
        .block_on(wait_ready(addr))
        .map_err(|e| format!("relay did not become ready: {e}"))?;

    let cpu0 = server.cpu_s();
    let load = {
        let (seq, body, settings) = (Arc::clone(seq), Arc::clone(body), settings.clone());
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || -> Result<LoadResult, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("client runtime: {e}"))?;
                Ok(rt.block_on(drive(addr, &settings, seq, body)))
            })
            .map_err(|e| format!("client thread: {e}"))?
            .join()
            .map_err(|_| "the load generator panicked".to_string())??
    };

    // Wait until every acknowledged event reached every healthy hook.
    let want = load.acks.len() as u64 * sc.healthy as u64;
    let deadline = Instant::now() + settings.drain;
    while sinks.healthy_count() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_cores = (server.cpu_s() - cpu0) / load.started.elapsed().as_secs_f64();
    let rss_peak_kib = server.peak_rss_kib();
    let neighbour_pending = match sc.neighbour {
        Neighbour::None => None,
        _ => server_rt.block_on(pending_of(addr, "neighbour")),
    };
    let neighbour_requests = sinks.slow_count();
    let yielded = server_rt.block_on(yield_engagements(addr));

    server.stop(&server_rt)?;
    server_rt.shutdown_timeout(Duration::from_secs(10));
    let arrivals = sinks.stop();
    drop(data_dir);

    // Match each delivery to its 202 by event id.
    let acked: HashMap<u128, Instant> = load.acks.iter().copied().collect();
    let mut first: HashMap<(u16, u128), Instant> = HashMap::with_capacity(arrivals.len());
    let mut duplicates = 0;
    for (hook, id, at) in &arrivals {
        match first.entry((*hook, *id)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                duplicates += 1;
                if at < e.get() {
                    e.insert(*at);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(*at);
            }
        }
    }
    let mut lags_us: Vec<u64> = first
        .iter()
        .filter_map(|((_, id), at)| {
            let acked_at = acked.get(id)?;
            // A delivery may beat the 202 to the client: routing starts at the commit.
            Some(at.saturating_duration_since(*acked_at).as_micros() as u64)
        })
        .collect();
    let delivered = lags_us.len() as u64;
    let last = first.values().max().copied().unwrap_or(load.started);
    Ok(ScenarioResult {
        sc,
        delivered,
        missing: want.saturating_sub(delivered),
        duplicates,
        span: last.saturating_duration_since(load.started),
        lag: Percentiles::of(&mut lags_us),
        load,
        neighbour_requests,
        neighbour_pending,
        yielded,
        cpu_cores,
        rss_peak_kib,
        peak_reset,
    })
}

/// The relay under test: in this process, or the `relayarr` binary as a child process.
enum Server {
    InProcess {
        addr: SocketAddr,
        task: tokio::task::JoinHandle<Result<(), String>>,
        stop: tokio::sync::oneshot::Sender<()>,
    },
    Child(ChildServer),
}

impl Server {
    fn addr(&self) -> SocketAddr {
        match self {
            Server::InProcess { addr, .. } => *addr,
            Server::Child(c) => c.addr,
        }
    }

    /// CPU seconds of the server: the whole bench process when in-process (the load
    /// generator and sinks included), the child alone otherwise.
    fn cpu_s(&self) -> f64 {
        match self {
            Server::InProcess { .. } => process_cpu_s(),
            Server::Child(c) => c.cpu_s(),
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        match self {
            Server::InProcess { .. } => proc_status_kib("VmHWM"),
            Server::Child(c) => c.status_kib("VmHWM"),
        }
        .unwrap_or(0)
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        match self {
            Server::InProcess { task, stop, .. } => {
                let _ = stop.send(());
                rt.block_on(task)
                    .map_err(|e| format!("server task: {e}"))?
                    .map_err(|e| format!("relay stopped with an error: {e}"))
            }
            Server::Child(c) => c.stop(),
        }
    }
}

fn parse_config(text: &str) -> Result<Config, String> {
    // No environment: the bench must not pick up a developer's RELAYARR_* overrides.
    Config::from_toml_str("delivery_load bench", text, std::iter::empty()).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn relay_config_text(
    data_dir: &Path,
    sc: Scenario,
    sinks: &Sinks,
    dead: Option<SocketAddr>,
) -> Result<String, String> {
    let dir = toml::Value::String(data_dir.display().to_string());
    let mut text = format!(
        r#"
[server]
data_dir = {dir}
admin_token = "{ADMIN_TOKEN}"
shutdown_grace = "2s"

[[source]]
name = "sonarr"
kind = "sonarr"
auth = {{ basic = {{ username = "sonarr", password = "Pa55w0rd!" }} }}
"#
    );
    for i in 0..sc.healthy {
        text.push_str(&format!(
            "\n[[hook]]\nname = \"healthy-{i}\"\nurl = \"http://{}/h/{i}\"\nevents = \"*\"\n\
             max_in_flight = {HEALTHY_IN_FLIGHT}\n",
            sinks.healthy
        ));
    }
    if let Ok(y) = std::env::var("RELAYARR_BENCH_YIELD") {
        text.push_str(&format!(
            "\n[outbound]\nyield_to_ingest = {}\n",
            toml::Value::String(y)
        ));
    }
    match sc.neighbour {
        Neighbour::None => {}
        Neighbour::Slow => text.push_str(&format!(
            "\n[[hook]]\nname = \"neighbour\"\nurl = \"http://{}/slow\"\nevents = \"*\"\n\
             max_in_flight = {SLOW_IN_FLIGHT}\n",
            sinks.slow
        )),
        Neighbour::Dead => text.push_str(&format!(
            "\n[[hook]]\nname = \"neighbour\"\nurl = \"http://{}/dead\"\nevents = \"*\"\n\
             disable_after = 0\n",
            dead.ok_or("no dead port")?
        )),
    }
    Ok(text)
}

/// `relayarr_delivery_yield_engaged_total` from `/metrics`.
async fn yield_engagements(addr: SocketAddr) -> Option<u64> {
    let text = metrics_text(&reqwest::Client::new(), addr, ADMIN_TOKEN).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("relayarr_delivery_yield_engaged_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The neighbour hook's pending deliveries, through the admin API.
async fn pending_of(addr: SocketAddr, hook: &str) -> Option<u64> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/admin/hooks/{hook}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["deliveries"]["pending"].as_u64()
}

// ---------------------------------------------------------------------------------------
// Sinks: bare axum handlers on their own thread, recording (hook, event id, arrival).
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct SinkLog {
    arrivals: Mutex<Vec<(u16, u128, Instant)>>,
    healthy: AtomicU64,
    slow: AtomicU64,
}

struct Sinks {
    healthy: SocketAddr,
    slow: SocketAddr,
    log: Arc<SinkLog>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The envelope's event id, parsed without building the rest of the body.
#[derive(serde::Deserialize)]
struct EnvelopeId<'a> {
    #[serde(borrow)]
    id: &'a str,
}

async fn healthy_sink(
    State(log): State<Arc<SinkLog>>,
    UrlPath(hook): UrlPath<u16>,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let Some(id) = serde_json::from_slice::<EnvelopeId<'_>>(&body)
        .ok()
        .and_then(|e| ulid::Ulid::from_string(e.id).ok())
    else {
        return StatusCode::BAD_REQUEST;
    };
    log.arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((hook, id.0, at));
    log.healthy.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn slow_sink(State(log): State<Arc<SinkLog>>) -> StatusCode {
    log.slow.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(SLOW_DELAY).await;
    StatusCode::OK
}

impl Sinks {
    fn start(healthy_hooks: usize) -> Result<Sinks, String> {
        let log = Arc::new(SinkLog {
            arrivals: Mutex::new(Vec::with_capacity(healthy_hooks * 25_000)),
            ..SinkLog::default()
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_log = Arc::clone(&log);
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
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
                    let bind = async {
                        let h = TcpListener::bind("127.0.0.1:0").await?;
                        let s = TcpListener::bind("127.0.0.1:0").await?;
                        Ok::<_, io::Error>((h.local_addr()?, s.local_addr()?, h, s))
                    };
                    let (ha, sa, h, s) = match bind.await {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("sink bind: {e}")));
                            return;
                        }
                    };
                    let _ = addr_tx.send(Ok((ha, sa)));
                    let healthy = Router::new()
                        .route("/h/{hook}", post(healthy_sink))
                        .with_state(Arc::clone(&thread_log));
                    let slow = Router::new()
                        .route("/slow", post(slow_sink))
                        .with_state(thread_log);
                    let (tx1, rx1) = tokio::sync::watch::channel(false);
                    let mut rx2 = rx1.clone();
                    let mut rx1 = rx1;
                    let a = axum::serve(h, healthy).with_graceful_shutdown(async move {
                        let _ = rx1.wait_for(|s| *s).await;
                    });
                    let b = axum::serve(s, slow).with_graceful_shutdown(async move {
                        let _ = rx2.wait_for(|s| *s).await;
                    });
                    let stopper = async move {
                        let _ = stop_rx.await;
                        let _ = tx1.send(true);
                    };
                    let _ = tokio::join!(a, b, stopper);
                });
            })
            .map_err(|e| format!("sink thread: {e}"))?;
        let (healthy, slow) = addr_rx
            .recv()
            .map_err(|_| "the sink thread died".to_string())??;
        Ok(Sinks {
            healthy,
            slow,
            log,
            stop,
            thread,
        })
    }

    fn healthy_count(&self) -> u64 {
        self.log.healthy.load(Ordering::Relaxed)
    }

    fn slow_count(&self) -> u64 {
        self.log.slow.load(Ordering::Relaxed)
    }

    /// Stops the sinks (after the relay, so no client is left) and returns the arrivals.
    fn stop(self) -> Vec<(u16, u128, Instant)> {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        std::mem::take(&mut *self.log.arrivals.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

// ---------------------------------------------------------------------------------------
// Load generator: one task per connection, one request in flight per connection.
// ---------------------------------------------------------------------------------------

struct LoadResult {
    started: Instant,
    /// Until the last ingest answer.
    ingest_time: Duration,
    /// (event id, when its 202 was read).
    acks: Vec<(u128, Instant)>,
    ingest_latency: Percentiles,
    errors: BTreeMap<String, (u64, String)>,
}

#[derive(Default)]
struct ConnStats {
    acks: Vec<(u128, Instant)>,
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, (u64, String)>,
}

impl ConnStats {
    fn error(&mut self, key: String, sample: &str) {
        let e = self
            .errors
            .entry(key)
            .or_insert_with(|| (0, sample.chars().take(200).collect()));
        e.0 += 1;
    }
}

async fn drive(
    addr: SocketAddr,
    settings: &Settings,
    seq: Arc<AtomicU64>,
    body: Arc<BodyTemplate>,
) -> LoadResult {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let pace = settings
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let tasks: Vec<_> = (0..settings.conns)
        .map(|_| {
            tokio::spawn(connection(
                addr,
                settings.events,
                Arc::clone(&next),
                Arc::clone(&seq),
                Arc::clone(&body),
                pace.map(|p| (started, p)),
            ))
        })
        .collect();
    let mut all = ConnStats::default();
    for t in tasks {
        let Ok(mut c) = t.await else {
            all.error("load task panicked".into(), "");
            continue;
        };
        all.acks.append(&mut c.acks);
        all.latencies_us.append(&mut c.latencies_us);
        for (k, (n, sample)) in c.errors {
            all.errors.entry(k).or_insert((0, sample)).0 += n;
        }
    }
    LoadResult {
        started,
        ingest_time: started.elapsed(),
        acks: all.acks,
        ingest_latency: Percentiles::of(&mut all.latencies_us),
        errors: all.errors,
    }
}

async fn connection(
    addr: SocketAddr,
    total: u64,
    next: Arc<AtomicU64>,
    seq: Arc<AtomicU64>,
    body: Arc<BodyTemplate>,
    pace: Option<(Instant, Duration)>,
) -> ConnStats {
    let host = addr.to_string();
    let mut st = ConnStats::default();
    let mut conn: Option<TcpStream> = None;
    let mut req = Vec::with_capacity(4096);
    let mut resp = Vec::with_capacity(1024);
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            break;
        }
        if let Some((start, every)) = pace {
            tokio::time::sleep_until((start + every.mul_f64(k as f64)).into()).await;
        }
        let stream = match &mut conn {
            Some(s) => s,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn.insert(s)
                }
                Err(e) => {
                    st.error(format!("connect: {}", e.kind()), &e.to_string());
                    continue;
                }
            },
        };
        body.request(seq.fetch_add(1, Ordering::Relaxed), &host, &mut req);
        let sent = Instant::now();
        let res = tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, &req, &mut resp)).await;
        let done = Instant::now();
        match res {
            Ok(Ok(a)) if a.status == 202 => match event_id(&resp[a.body_start..]) {
                Some(id) => {
                    st.acks.push((id, done));
                    st.latencies_us.push((done - sent).as_micros() as u64);
                }
                None => st.error(
                    "202 without an id".into(),
                    &String::from_utf8_lossy(&resp[a.body_start..]),
                ),
            },
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

/// The `id` of relayarr's `{"id": "…", "duplicate": false}` answer.
fn event_id(body: &[u8]) -> Option<u128> {
    let e: EnvelopeId<'_> = serde_json::from_slice(body).ok()?;
    ulid::Ulid::from_string(e.id).ok().map(|u| u.0)
}

// ---------------------------------------------------------------------------------------
// Measurements.
// ---------------------------------------------------------------------------------------

/// Nearest-rank percentiles of microsecond samples.
#[derive(Clone, Copy, Debug, Default)]
struct Percentiles {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl Percentiles {
    fn of(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let pct = |p: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Percentiles {
            p50_us: pct(50.0),
            p99_us: pct(99.0),
            max_us: samples.last().copied().unwrap_or(0),
        }
    }
}

/// utime + stime of the whole process, in seconds.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised name start at field 3; utime and stime are 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / USER_HZ
}

// ---------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn print_preamble(settings: &Settings, body: &BodyTemplate) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("## relayarr delivery load bench");
    println!();
    println!("`cargo bench --bench delivery_load` (knobs: RELAYARR_BENCH_EVENTS, _CONNS, _RATE, _SECS, _ONLY, _DIR, _SERVER_THREADS, _SERVER=process, _YIELD)");
    println!();
    println!("- machine: {cores} CPUs available, Linux {}", kernel.trim());
    println!(
        "- load: {} unique Sonarr `Download` bodies ({} bytes, the shared fixture with its \
         downloadId varied) per scenario, {} keep-alive connections, {}",
        settings.events,
        body.len(),
        settings.conns,
        match settings.rate {
            Some(r) => format!("paced at {r} events/s"),
            None => "as fast as the relay answers".into(),
        }
    );
    println!(
        "- store: {}",
        match postgres_admin_url() {
            Some(_) =>
                "PostgreSQL (RELAYARR_BENCH_POSTGRES; a fresh database per scenario, on \
                        the same machine)",
            None => "SQLite in a temporary data dir (the default)",
        }
    );
    if settings.child {
        println!(
            "- server: the `relayarr` binary as a child process (`RELAYARR_BENCH_SERVER=process`, \
             its default runtime, `RELAYARR_LOG=warn`); load generator and sinks: one thread each \
             in the bench process"
        );
    } else {
        println!(
            "- server: its own tokio runtime with {} workers; load generator and sinks: one \
             thread each (current-thread runtimes), all in one process",
            settings.server_threads
        );
    }
    println!(
        "- hooks: `events = \"*\"`, relayarr format, no signing, no rate limit, \
         max_in_flight {HEALTHY_IN_FLIGHT}; slow neighbour: {} ms per request, max_in_flight \
         {SLOW_IN_FLIGHT}; dead neighbour: connection refused, default retries, \
         disable_after = 0",
        SLOW_DELAY.as_millis()
    );
    println!(
        "- lag: from the load generator reading the 202 to the delivery's arrival at the sink \
         (0 when the delivery arrived first), over the healthy hooks"
    );
    println!();
}

fn print_report(settings: &Settings, results: &[ScenarioResult]) {
    println!(
        "| scenario | events | ingest ev/s | deliveries | deliveries/s | lag p50 ms | lag p99 ms \
         | lag max ms | CPU cores | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let ingest = r.load.acks.len() as f64 / r.load.ingest_time.as_secs_f64();
        let rate = r.delivered as f64 / r.span.as_secs_f64().max(f64::EPSILON);
        println!(
            "| ({}) {} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {:.2} | {:.1}{} |",
            r.sc.key,
            r.sc.label,
            r.load.acks.len(),
            ingest,
            r.delivered,
            rate,
            ms(r.lag.p50_us),
            ms(r.lag.p99_us),
            ms(r.lag.max_us),
            r.cpu_cores,
            r.rss_peak_kib as f64 / 1024.0,
            if r.peak_reset { "" } else { " (not reset)" },
        );
    }
    println!();
    let alone = results.iter().find(|r| r.sc.key == "a");
    let beside: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.sc.neighbour != Neighbour::None)
        .collect();
    if !beside.is_empty() {
        println!("| healthy hook | lag p50 ms | lag p99 ms | lag max ms | neighbour: requests received / deliveries still pending |");
        println!("|---|---:|---:|---:|---:|");
        if let Some(a) = alone {
            println!(
                "| alone (a) | {} | {} | {} | – |",
                ms(a.lag.p50_us),
                ms(a.lag.p99_us),
                ms(a.lag.max_us)
            );
        }
        for r in beside {
            let received = match r.sc.neighbour {
                Neighbour::Slow => r.neighbour_requests.to_string(),
                _ => "0 (refused)".into(),
            };
            let pending = r
                .neighbour_pending
                .map_or_else(|| "?".into(), |p| p.to_string());
            println!(
                "| next to a {} neighbour ({}) | {} | {} | {} | {received} / {pending} |",
                match r.sc.neighbour {
                    Neighbour::Slow => "slow",
                    _ => "dead",
                },
                r.sc.key,
                ms(r.lag.p50_us),
                ms(r.lag.p99_us),
                ms(r.lag.max_us)
            );
        }
        println!();
    }
    println!(
        "Deliveries/s: healthy deliveries divided by the time from the first ingest request to \
         the last healthy delivery. With the load at full speed, lag includes the time an \
         event waits behind the backlog; `RELAYARR_BENCH_RATE` paces the load to see pipeline \
         latency alone. {}",
        if settings.child {
            "The relay ran as a child process (`RELAYARR_BENCH_SERVER=process`, logging at \
             `warn`): CPU and peak RSS are the server's alone."
        } else {
            "CPU is the whole process (relay, load generator and sinks) over the same time, in \
             cores, and so is the peak RSS; `RELAYARR_BENCH_SERVER=process` measures the \
             server apart."
        }
    );
    println!();
    for r in results {
        println!(
            "- ({}) ingest latency p50/p99/max {}/{}/{} ms over {:.1} s; {} duplicate \
             deliveries; {} missing after {} s; deliveries yielded to ingest {} time(s)",
            r.sc.key,
            ms(r.load.ingest_latency.p50_us),
            ms(r.load.ingest_latency.p99_us),
            ms(r.load.ingest_latency.max_us),
            r.load.ingest_time.as_secs_f64(),
            r.duplicates,
            r.missing,
            settings.drain.as_secs(),
            r.yielded.map_or_else(|| "?".to_owned(), |n| n.to_string())
        );
        for (kind, (n, sample)) in &r.load.errors {
            println!(
                "- ({}) ingest errors: {n} × {kind}, e.g. {sample:?}",
                r.sc.key
            );
        }
    }
}
