//! Shared integration-test helpers: start the real relay in-process on 127.0.0.1:0 with a
//! real store, replay raw HTTP bytes over TCP, check the store through the same storage
//! traits the relay uses (so the checks hold for every backend), and wait for conditions
//! instead of sleeping.
#![allow(dead_code)]

pub mod backend;
pub mod bad_receiver;
pub mod expect;
pub mod fake_arr;
pub mod fake_plex;
pub mod receiver;
pub mod shared_store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relayarr::actors::store::prelude::*;
use relayarr::actors::store::{DeliveryInfo, EventFilter, StoreConfig};
use relayarr::{Config, Relay, RelayHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Sources matching the credentials used in `shared/fixtures` (see its README).
pub const SOURCES: &str = r#"
[[source]]
name = "sonarr"
kind = "sonarr"
auth = { basic = { username = "sonarr", password = "Pa55w0rd!" } }

# A Sonarr with no Username/Password set (the `bad/truncated-json` fixture has no credentials).
[[source]]
name = "sonarr-open"
kind = "sonarr"
auth = "none"

[[source]]
name = "radarr"
kind = "radarr"
auth = { header = { name = "X-Api-Key", value = "6f1c1b0d2a9e4c7fb3d8e5a4c2b1f0e9" } }

[[source]]
name = "tautulli"
kind = "tautulli"
auth = { header = { name = "X-Webhook-Secret", value = "tt-4e1f0a9c7b2d48e6" } }

[[source]]
name = "jellyfin"
kind = "jellyfin"
auth = { header = { name = "X-Webhook-Secret", value = "jf-0b7d2f9c1e4a4c58" } }

[[source]]
name = "plex"
kind = "plex"
auth = { token = "plex-token" }

[[source]]
name = "lidarr"
kind = "lidarr"
auth = { bearer = "lidarr-token" }

[[source]]
name = "readarr"
kind = "readarr"
auth = "none"

[[source]]
name = "whisparr"
kind = "whisparr"
auth = "none"

[[source]]
name = "custom"
kind = "custom"
auth = { hmac = { header = "X-Signature", secret = "custom-secret", prefix = "sha256=" } }
"#;

/// The team's shared fixtures, vendored byte for byte (`.ci/run` checks the copy against
/// `../shared/fixtures` so it cannot go stale).
pub fn shared_fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shared");
    assert!(p.is_dir(), "shared fixtures not found at {}", p.display());
    p
}

/// Our own corpus, derived from the senders' source code.
pub fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A relay running in this test process.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub namespace: String,
    pub dir: tempfile::TempDir,
    /// The relay's own store (closed when the relay stops).
    pub store: Arc<dyn Store>,
    /// The running relay (`None` only while `stop` runs).
    handle: Option<RelayHandle>,
}

/// The test config: `[server]` pointing at `dir`, the fixture sources, plus `extra` TOML.
/// On PostgreSQL (see [`backend`]), `[store] url` names the dir's own database.
pub fn test_config_text(dir: &Path, extra: &str) -> String {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nadmin_token = \"{ADMIN_TOKEN}\"\n{extra}\n{SOURCES}",
        dir.display().to_string()
    );
    backend::with_store(text, dir)
}

/// Starts the real relay on 127.0.0.1:0 with a fresh data dir.
pub async fn start_relay(extra: &str) -> TestRelay {
    let dir = tempfile::tempdir().expect("tempdir");
    start_relay_in(dir, extra).await
}

/// Starts the real relay using an existing data dir (to test restarts).
pub async fn start_relay_in(dir: tempfile::TempDir, extra: &str) -> TestRelay {
    let text = test_config_text(dir.path(), extra);
    let cfg = Config::from_toml_str("test", &text, std::iter::empty())
        .unwrap_or_else(|e| panic!("test config invalid: {e:?}"));
    let store = open_store_with(dir.path(), cfg.store.clone()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let namespace = format!(
        "t{}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let handle = Relay::builder(cfg)
        .namespace(namespace.clone())
        .store(Arc::clone(&store))
        .start(listener, std::future::pending())
        .await
        .expect("relay started");
    let relay = TestRelay {
        addr,
        namespace,
        dir,
        store,
        handle: Some(handle),
    };
    // The listener is bound before start, so requests would queue anyway; waiting for the
    // health endpoint keeps test timings honest.
    eventually(Duration::from_secs(10), || async {
        reqwest::get(relay.url("/api/v1/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    relay
}

impl TestRelay {
    /// The embedding API's handle of this relay.
    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().expect("the relay is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("relayarr.db")
    }

    /// Stored events, counted through the store.
    pub async fn count_events(&self) -> u64 {
        self.store.count_events().await.expect("count events")
    }

    /// True once every stored event is routed.
    pub async fn all_routed(&self) -> bool {
        all_routed(&self.store).await
    }

    /// The delivery of `event_id` to `target`, if the router created one.
    pub async fn delivery(&self, event_id: &str, target: &str) -> Option<DeliveryInfo> {
        delivery_of(&self.store, event_id, target).await
    }

    /// Graceful stop; returns the data dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            handle.wait().await.expect("relay stopped cleanly");
        }
        // TestRelay implements Drop, so the dir is swapped out rather than moved.
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// GET an admin endpoint with the admin token.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request")
    }

    /// The stored event, through the admin API.
    pub async fn stored_event(&self, id: &str) -> serde_json::Value {
        let resp = self.admin_get(&format!("/api/v1/admin/events/{id}")).await;
        assert_eq!(resp.status(), 200, "event {id} not found");
        resp.json().await.expect("json")
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        // Stops the relay in the background (the handle's drop alone would not).
        if let Some(handle) = &self.handle {
            handle.shutdown();
        }
    }
}

/// Posts a body to the `sonarr` source with the fixture credentials; returns the status and
/// the JSON answer (`{"id", "duplicate"}`).
pub async fn post_sonarr(
    client: &reqwest::Client,
    relay: &TestRelay,
    body: String,
) -> (u16, serde_json::Value) {
    let resp = client
        .post(relay.url("/api/v1/webhooks/sonarr"))
        .basic_auth("sonarr", Some("Pa55w0rd!"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send to relay");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("relay answers JSON"))
}

/// Opens the store of a data dir (for checks while a spawned relay runs, or after it
/// stopped), with the default store settings.
pub async fn open_store(dir: &Path) -> Arc<dyn Store> {
    open_store_with(dir, StoreConfig::default()).await
}

/// Opens the store of a data dir with the given settings: its SQLite file, or on
/// PostgreSQL the dir's own database.
pub async fn open_store_with(dir: &Path, mut cfg: StoreConfig) -> Arc<dyn Store> {
    if cfg.url.is_none() {
        cfg.url = backend::store_url(dir);
    }
    relayarr::actors::store::open(&cfg, &dir.join("relayarr.db"))
        .await
        .expect("open the store")
}

/// Stored events of a data dir, counted through a store opened for the check.
pub async fn count_events_in(dir: &Path) -> u64 {
    let store = open_store(dir).await;
    let n = store.count_events().await.expect("count events");
    store.close().await.expect("close");
    n
}

/// The ids of every stored event, through the admin-facing listing (newest first, paged).
pub async fn stored_ids(store: &Arc<dyn Store>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut before_seq = None;
    loop {
        let page = store
            .list_events(EventFilter {
                before_seq,
                limit: 500,
                ..EventFilter::default()
            })
            .await
            .expect("list events");
        let Some(last) = page.last() else { break };
        before_seq = Some(last.seq);
        ids.extend(page.into_iter().map(|e| e.id));
    }
    ids
}

/// The delivery of `event_id` to `target`, if the router created one.
pub async fn delivery_of(
    store: &Arc<dyn Store>,
    event_id: &str,
    target: &str,
) -> Option<DeliveryInfo> {
    store
        .event_deliveries(event_id)
        .await
        .expect("event deliveries")?
        .deliveries
        .into_iter()
        .find(|d| d.target == target)
}

/// True once every stored event is routed.
pub async fn all_routed(store: &Arc<dyn Store>) -> bool {
    store.unrouted(1).await.expect("unrouted").is_empty()
}

/// Polls `cond` until it is true or `timeout` passes (then panics).
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it yields a value (or panics after `timeout`), and returns the value.
pub async fn eventually_some<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A parsed HTTP response from a raw exchange.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Replaces the request target of a raw request (`POST /hook HTTP/1.1`) with `target`.
pub fn retarget(raw: &[u8], target: &str) -> Vec<u8> {
    let end = raw
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("request line");
    let line = std::str::from_utf8(&raw[..end]).expect("ascii request line");
    let mut parts = line.splitn(3, ' ');
    let method = parts.next().expect("method");
    let _old = parts.next().expect("target");
    let version = parts.next().expect("version");
    let mut out = format!("{method} {target} {version}").into_bytes();
    out.extend_from_slice(&raw[end..]);
    out
}

/// Writes raw bytes to the server and reads one response (by Content-Length).
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    read_response(&mut s).await
}

pub async fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.expect("read body");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Splits a raw fixture into (head, body).
pub fn split_raw(raw: &[u8]) -> (&[u8], &[u8]) {
    let p = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    (&raw[..p + 4], &raw[p + 4..])
}

/// Starts `relayarr run` on 127.0.0.1:0 and returns it with the address it logged.
pub async fn spawn_binary(config: &Path) -> (Child, SocketAddr) {
    spawn_binary_logging(config, None).await
}

/// [`spawn_binary`], also appending the child's log (stdout) to `log`, so a failing test can
/// point at what the process did.
pub async fn spawn_binary_logging(config: &Path, log: Option<&Path>) -> (Child, SocketAddr) {
    let mut log = log.map(|p| {
        std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open log {}: {e}", p.display())),
        )
    });
    let mut keep = move |line: &str| {
        if let Some(w) = log.as_mut() {
            use std::io::Write;
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        }
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayarr"))
        .args(["run", "--config"])
        .arg(config)
        .env("RELAYARR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn relayarr");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            keep(&line);
            if let Some(rest) = line.split("relayarr listening addr=").nth(1) {
                let addr = rest.split_whitespace().next().expect("addr");
                return addr.parse().expect("socket addr");
            }
        }
        panic!("relayarr exited before listening");
    })
    .await
    .expect("relayarr did not start in time");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep(&line);
        }
    });
    (child, addr)
}
