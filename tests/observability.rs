//! Operating relayarr (issue 7 §1-2): `/healthz`, `/readyz`, `/metrics`, the actor tree with
//! restart counts and last failures, and supervision events as structured log lines.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::receiver::*;
use common::*;
use ractor::ActorRef;
use relayarr::actors::delivery::worker::WorkerMsg;
use relayarr::actors::store::{SqliteStore, Store, StoreConfig};
use relayarr::actors::supervisor::SupervisorMsg;
use relayarr::{Config, Relay};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn get(relay: &TestRelay, path: &str) -> (u16, String) {
    let resp = reqwest::get(relay.url(path)).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn get_json(relay: &TestRelay, path: &str) -> (u16, serde_json::Value) {
    let (status, text) = get(relay, path).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, v)
}

/// The value of one sample line (`name{labels} value`) of a metrics exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_healthz_and_readyz_need_no_token() {
    let relay = start_relay("").await;
    let (status, v) = get_json(&relay, "/healthz").await;
    assert_eq!((status, v), (200, serde_json::json!({ "status": "ok" })));
    let (status, v) = get_json(&relay, "/readyz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["store"]["ok"], true);
    assert_eq!(v["checks"]["tree"]["ok"], true);
    // The old endpoint stays.
    assert_eq!(get(&relay, "/api/v1/health").await.0, 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_readyz_fails_when_the_store_is_closed() {
    // The relay runs on a store we hold, so we can close it under it.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::from_toml_str(
        "test",
        &test_config_text(dir.path(), ""),
        std::iter::empty(),
    )
    .expect("config");
    let store = SqliteStore::open(dir.path().join("relayarr.db"), StoreConfig::default())
        .expect("open store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = Arc::clone(&store) as Arc<dyn Store>;
    let relay = tokio::spawn(async move {
        Relay::builder(cfg)
            .namespace(format!("readyz-store-{}/", std::process::id()))
            .store(handle)
            .run(listener, async {
                let _ = rx.await;
            })
            .await
    });
    let url = |p: &str| format!("http://{addr}{p}");
    eventually(Duration::from_secs(10), || async {
        reqwest::get(url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    store.close().await.expect("close");
    let resp = reqwest::get(url("/readyz")).await.expect("GET");
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["status"], "not_ready", "{v}");
    assert_eq!(v["checks"]["store"]["ok"], false, "{v}");
    assert!(
        v["checks"]["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("closed")),
        "{v}"
    );
    assert_eq!(
        v["checks"]["tree"]["ok"], true,
        "only the store failed: {v}"
    );
    // Still alive, though.
    assert_eq!(
        reqwest::get(url("/healthz")).await.expect("GET").status(),
        200
    );

    let _ = tx.send(());
    let _ = relay.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_readyz_fails_while_a_supervisor_is_down() {
    // A long backoff keeps the stopped supervisor down long enough to look.
    let relay = start_relay(
        "[supervision]\nrestart_base = \"3s\"\nrestart_max = \"3s\"\nmax_restarts = 5\n",
    )
    .await;
    let hooks = format!("{}hooks", relay.namespace);
    ActorRef::<SupervisorMsg>::where_is(hooks.clone())
        .expect("hooks supervisor")
        .stop(Some("test: gone".into()));

    // The stop is asynchronous: wait until it has landed.
    eventually(Duration::from_secs(3), || async {
        get(&relay, "/readyz").await.0 == 503
    })
    .await;
    let (status, v) = get_json(&relay, "/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["store"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["tree"]["ok"], false, "{v}");
    assert!(
        v["checks"]["tree"]["not_running"]
            .as_array()
            .is_some_and(|a| a
                .iter()
                .any(|d| d["actor"] == "relayarr/hooks" && d["status"] == "restarting")),
        "{v}"
    );
    // The root restarts it after the backoff, and the relay is ready again.
    eventually(Duration::from_secs(10), || async {
        get(&relay, "/readyz").await.0 == 200
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_metrics_count_known_traffic() {
    const N: usize = 5;
    let good = Receiver::start().await;
    let bad = Receiver::start_with(Reply::status(500)).await;
    let extra = format!(
        "{}{}{}",
        hook_toml("good", &good.hook_url(), ""),
        hook_toml(
            "bad",
            &bad.hook_url(),
            "retry = \"exponential:1\"\nretry_base = \"20ms\"\ndisable_after = 0"
        ),
        hook_toml("off", &good.url("/off"), "enabled = false"),
    );
    let relay = start_relay(&extra).await;
    post_many(&relay, "metrics", 0..N).await;
    // One request with a wrong password.
    let refused = reqwest::Client::new()
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("wrong"))
        .header("content-type", "application/json")
        .body(sonarr_download("metrics", 99))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);

    good.wait_for(N, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), || async {
        let (g, b) = (
            hook_view(&relay, "good").await,
            hook_view(&relay, "bad").await,
        );
        g["deliveries"]["succeeded"] == N && b["deliveries"]["failed"] == N
    })
    .await;

    let resp = reqwest::get(relay.url("/metrics")).await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.expect("body");
    for (family, kind) in [
        ("relayarr_events_received_total", "counter"),
        ("relayarr_rejections_total", "counter"),
        ("relayarr_deliveries_total", "counter"),
        ("relayarr_delivery_attempt_duration_seconds", "histogram"),
        ("relayarr_queue_depth", "gauge"),
        ("relayarr_queue_oldest_age_seconds", "gauge"),
        ("relayarr_actor_restarts_total", "counter"),
        ("relayarr_debounce_events_total", "counter"),
        ("relayarr_debounce_coalesced_total", "counter"),
        ("relayarr_debounce_groups_fired_total", "counter"),
        ("relayarr_plex_scans_total", "counter"),
        ("relayarr_plex_card_uploads_total", "counter"),
        ("relayarr_events_pruned_total", "counter"),
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no TYPE {kind} for {family}:\n{text}"
        );
    }
    let n = N as f64;
    let expect = [
        (
            r#"relayarr_events_received_total{source="sonarr",kind="import"}"#,
            n,
        ),
        (
            r#"relayarr_rejections_total{source="sonarr",status="401",reason="unauthorized"}"#,
            1.0,
        ),
        (
            r#"relayarr_deliveries_total{target="good",outcome="succeeded"}"#,
            n,
        ),
        (
            r#"relayarr_deliveries_total{target="bad",outcome="retried"}"#,
            n,
        ),
        (
            r#"relayarr_deliveries_total{target="bad",outcome="failed"}"#,
            n,
        ),
        (
            r#"relayarr_delivery_attempt_duration_seconds_count{target="good"}"#,
            n,
        ),
        (
            r#"relayarr_delivery_attempt_duration_seconds_count{target="bad"}"#,
            2.0 * n,
        ),
        (r#"relayarr_queue_depth{target="good"}"#, 0.0),
        (r#"relayarr_queue_depth{target="bad"}"#, 0.0),
        // A disabled hook keeps its deliveries pending.
        (r#"relayarr_queue_depth{target="off"}"#, n),
        (
            r#"relayarr_actor_restarts_total{actor="relayarr/hooks/hook:good"}"#,
            0.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    assert!(
        sample(&text, r#"relayarr_queue_oldest_age_seconds{target="off"}"#)
            .is_some_and(|age| age > 0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"relayarr_deliveries_total{target="good",outcome="failed"}"#
        )
        .is_none(),
        "{text}"
    );
    relay.stop().await;
}

/// Log lines of this test binary, as JSON objects (one subscriber for the whole process:
/// ractor's actors run on tasks that no per-test subscriber would reach).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("relayarr_actors::supervisor=info")
            .with_writer(move || BufWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
    .clone()
}

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines(buf: &Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
    let bytes = buf.lock().expect("log buffer").clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_a_restart_shows_in_the_tree_and_the_log() {
    let logs = captured_logs();
    let rx = Receiver::start().await;
    // `panicky` is this test's own hook: no other test here restarts an actor of that path.
    let relay = start_relay(&format!(
        "{}[supervision]\nrestart_base = \"50ms\"\n",
        hook_toml("panicky", &rx.hook_url(), "")
    ))
    .await;
    let name = format!("{}hook:panicky", relay.namespace);
    let old = ActorRef::<WorkerMsg>::where_is(name.clone()).expect("worker");
    let old_id = old.get_id();
    old.cast(WorkerMsg::InjectPanic).expect("cast");
    eventually(Duration::from_secs(10), || async {
        ActorRef::<WorkerMsg>::where_is(name.clone()).is_some_and(|w| w.get_id() != old_id)
    })
    .await;

    let tree: serde_json::Value = relay
        .admin_get("/api/v1/actors")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(tree["path"], "relayarr", "{tree:#}");
    let hooks = tree["children"]
        .as_array()
        .and_then(|c| c.iter().find(|n| n["path"] == "relayarr/hooks"))
        .unwrap_or_else(|| panic!("hooks in the tree: {tree:#}"));
    let worker = &hooks["children"][0];
    assert_eq!(worker["path"], "relayarr/hooks/hook:panicky", "{tree:#}");
    assert_eq!(worker["name"], name.as_str(), "{tree:#}");
    assert_eq!(worker["status"], "running", "{tree:#}");
    assert_eq!(worker["restarts"], 1, "{tree:#}");
    assert!(
        worker["last_failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("panic")),
        "{tree:#}"
    );
    assert!(worker["last_failure"]["at"].is_string(), "{tree:#}");
    assert_eq!(hooks["restarts"], 0, "{tree:#}");

    // One line per event: failed, restarting (with the backoff), started again.
    let ours = |event: &str| {
        log_lines(&logs)
            .into_iter()
            .find(|l| l["actor"] == "relayarr/hooks/hook:panicky" && l["event"] == event)
    };
    eventually(Duration::from_secs(5), || async {
        ours("started").is_some()
    })
    .await;
    let failed = ours("failed").expect("a `failed` line");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("panic")),
        "{failed}"
    );
    assert_eq!(failed["level"], "ERROR", "{failed}");
    let restarting = ours("restarting").expect("a `restarting` line");
    assert_eq!(restarting["restarts"], 1, "{restarting}");
    assert!(
        restarting["next_backoff_ms"]
            .as_u64()
            .is_some_and(|ms| (25..=50).contains(&ms)),
        "equal jitter of 50ms: {restarting}"
    );
    assert!(restarting["reason"].is_string(), "{restarting}");
    let started: Vec<serde_json::Value> = log_lines(&logs)
        .into_iter()
        .filter(|l| l["actor"] == "relayarr/hooks/hook:panicky" && l["event"] == "started")
        .collect();
    assert!(
        started.iter().any(|l| l["restarts"] == 1),
        "the restarted worker's start line: {started:?}"
    );
    relay.stop().await;
}

/// Runs `relayarr run --log-format json` with `env`, until it logs that it listens; returns
/// the lines up to then.
async fn run_binary_json(config: &std::path::Path, env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_relayarr"));
    cmd.args(["run", "--log-format", "json", "--config"])
        .arg(config)
        .env_remove("RELAYARR_LOG")
        .env_remove("RUST_LOG")
        .env_remove("RELAYARR_LOG_FORMAT")
        .env_remove("MIMALLOC_PURGE_DELAY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn relayarr");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let listening = line.contains("relayarr listening");
            seen.push(line);
            if listening {
                return;
            }
        }
        let status = child.wait().await;
        panic!("relayarr exited before listening ({status:?}): {seen:?}");
    })
    .await
    .expect("relayarr did not start in time");
    let _ = child.kill().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_log_format_json_and_rust_log_filtering() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    std::fs::write(
        &config,
        test_config_text(dir.path(), &hook_toml("discord", &rx.hook_url(), "")),
    )
    .expect("write config");

    let lines = run_binary_json(&config, &[]).await;
    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let started = json
        .iter()
        .find(|l| l["actor"] == "relayarr/hooks/hook:discord" && l["event"] == "started")
        .unwrap_or_else(|| panic!("no start line for the hook: {lines:#?}"));
    assert_eq!(started["restarts"], 0, "{started}");
    assert_eq!(started["message"], "supervision", "{started}");
    assert!(
        json.iter()
            .any(|l| l["message"] == "relayarr listening" && l["addr"].is_string()),
        "{lines:#?}"
    );

    // RUST_LOG still filters: supervision lines off, the rest at info.
    let lines = run_binary_json(
        &config,
        &[("RUST_LOG", "info,relayarr_actors::supervisor=off")],
    )
    .await;
    assert!(
        !lines.iter().any(|l| l.contains("\"supervision\"")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("relayarr listening")));
}

/// `relayarr run` gives freed memory back to the OS at once: mimalloc takes that option only
/// from the environment at process start, so the binary executes itself again with
/// `MIMALLOC_PURGE_DELAY=0`; the process that then serves logs the value it runs with. An
/// operator's own value is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observability_run_sets_the_allocator_purge_delay_unless_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relayarr.toml");
    std::fs::write(&config, test_config_text(dir.path(), "")).expect("write config");
    let purge_delay = |lines: &[String]| -> Option<String> {
        lines.iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "allocator: mimalloc")
                .then(|| v["purge_delay_ms"].as_str().map(str::to_owned))
                .flatten()
        })
    };

    let lines = run_binary_json(&config, &[]).await;
    assert_eq!(purge_delay(&lines).as_deref(), Some("0"), "{lines:#?}");

    let lines = run_binary_json(&config, &[("MIMALLOC_PURGE_DELAY", "250")]).await;
    assert_eq!(purge_delay(&lines).as_deref(), Some("250"), "{lines:#?}");
}
