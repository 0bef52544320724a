//! A fake webhook receiver for the outbound-hook tests (after svix-server's `TestReceiver`):
//! a real axum server on 127.0.0.1:0 that records every request and answers as the test
//! tells it to, mid-test if need be, through a shared handle.
//!
//! It also tracks how many requests are in flight at once (from arrival until the response
//! is handed back, or the client gives up) and the peak of that, which is what the hook
//! concurrency tests assert on.
//!
//! The second half holds the relay-side helpers every `hooks_*` test needs: a `[[hook]]`
//! table, unique Sonarr bodies, posting them, and the admin calls `TestRelay` lacks.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{TestRelay, ADMIN_TOKEN};

/// Requests kept in memory; older ones are dropped (counted still). Tests send ≤ 10k.
const MAX_KEPT: usize = 20_000;
/// Body bytes kept per request.
const MAX_BODY_KEPT: usize = 64 * 1024;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The relayarr envelope's `id` (the event id), when the body is one.
    pub event_id: Option<String>,
    /// When it arrived (the handler started).
    pub at: Instant,
    /// The same moment on the wall clock (unix ms), the clock relayarr's heartbeats and
    /// leases are written in: compare with those without converting between clocks.
    pub wall_ms: i64,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "received body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How to answer one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Waits this long before answering (longer than a hook's `timeout` hangs it).
    pub delay: Duration,
    /// Extra response headers (`Retry-After`, `Location`).
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn retry_after(self, value: &str) -> Self {
        self.header("retry-after", value)
    }
}

struct Behaviour {
    default: Reply,
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Reply>,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<VecDeque<Recorded>>,
    total: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Decrements the in-flight count when the handler finishes or is dropped (the client
/// hung up, e.g. on its timeout).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fake receiver. Stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the receiver's data from the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Receiver {
    /// Starts a receiver answering 200 at once.
    pub async fn start() -> Receiver {
        Self::start_with(Reply::status(200)).await
    }

    /// Starts a receiver answering `default` to every request.
    pub async fn start_with(default: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::serve(listener, default)
    }

    fn serve(listener: TcpListener, default: Reply) -> Receiver {
        let addr = listener.local_addr().expect("receiver addr");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                default,
                script: VecDeque::new(),
            }),
            requests: Mutex::new(VecDeque::new()),
            total: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            addr,
            shared,
            _stop: tx,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The URL the hooks in these tests point at.
    pub fn hook_url(&self) -> String {
        self.url("/hook")
    }

    /// Answers every later request with `status` (the script, if any, still goes first).
    pub fn set_status(&self, status: u16) {
        lock(&self.shared.behaviour).default.status = status;
    }

    /// Waits `delay` before every later answer.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.behaviour).default.delay = delay;
    }

    /// Sends `Retry-After: value` with every later answer (`None`: no header).
    pub fn set_retry_after(&self, value: Option<&str>) {
        let mut b = lock(&self.shared.behaviour);
        b.default
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("retry-after"));
        if let Some(v) = value {
            b.default.headers.push(("retry-after".into(), v.to_owned()));
        }
    }

    /// Answers the next requests with these replies, in order, then falls back to the
    /// default (e.g. `[500, 500]` then 200).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.behaviour).script = replies.into_iter().collect();
    }

    /// The recorded requests, oldest first (at most the last `MAX_KEPT`).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).iter().cloned().collect()
    }

    /// Requests received so far (including ones no longer kept).
    pub fn count(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were in flight at once since the start or `reset_peak`.
    pub fn peak(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Restarts peak tracking from the current in-flight count.
    pub fn reset_peak(&self) {
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.peak.store(now, Ordering::SeqCst);
    }

    /// The `webhook-id` of every recorded request, in arrival order.
    pub fn webhook_ids(&self) -> Vec<String> {
        lock(&self.shared.requests)
            .iter()
            .filter_map(|r| r.webhook_id().map(str::to_owned))
            .collect()
    }

    /// The envelope event id of every recorded request, in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        lock(&self.shared.requests)
            .iter()
            .filter_map(|r| r.event_id.clone())
            .collect()
    }

    /// Recorded requests per envelope event id.
    pub fn by_event_id(&self) -> HashMap<String, Vec<Recorded>> {
        let mut out: HashMap<String, Vec<Recorded>> = HashMap::new();
        for r in lock(&self.shared.requests).iter() {
            if let Some(id) = &r.event_id {
                out.entry(id.clone()).or_default().push(r.clone());
            }
        }
        out
    }

    /// Waits until at least `n` requests have arrived; panics with the count after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.count();
            if got >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver {} got {got} of {n} requests within {timeout:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts that no request beyond the first `n` arrives during `quiet`. Only for "nothing
    /// more happens" checks, which cannot be eventual.
    pub async fn assert_stays_at(&self, n: usize, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        assert_eq!(
            self.count(),
            n,
            "receiver {} got unexpected requests",
            self.addr
        );
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let wall_ms = relayarr::actors::store::now_ms();
    let _guard = InFlight::enter(&shared);
    let reply = {
        let mut b = lock(&shared.behaviour);
        b.script.pop_front().unwrap_or_else(|| b.default.clone())
    };
    {
        let mut reqs = lock(&shared.requests);
        if reqs.len() >= MAX_KEPT {
            reqs.pop_front();
        }
        let event_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        reqs.push_back(Recorded {
            method,
            path: uri.path().to_owned(),
            headers,
            body: body.slice(..body.len().min(MAX_BODY_KEPT)),
            event_id,
            at,
            wall_ms,
        });
    }
    shared.total.fetch_add(1, Ordering::SeqCst);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, format!("fake receiver: {}", reply.status)).into_response();
    for (name, value) in &reply.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_str(value).expect("header value");
        resp.headers_mut().insert(name, value);
    }
    resp
}

// ---------------------------------------------------------------------------------------
// Relay-side helpers for the hook tests.
// ---------------------------------------------------------------------------------------

/// A `[[hook]]` table named `name` sending to `url`, with `extra` keys appended (one per
/// line, e.g. `max_in_flight = 3`).
pub fn hook_toml(name: &str, url: &str, extra: &str) -> String {
    format!("\n[[hook]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

/// A unique Sonarr `Download` (kind `import`) body under `/tv/`; `tag` keeps bodies of
/// different tests apart, `i` within one.
pub fn sonarr_download(tag: &str, i: usize) -> String {
    format!(
        r#"{{"series":{{"id":{i},"title":"Hook {tag} {i}","path":"/tv/Hook {tag} {i}","tvdbId":{i}}},"episodes":[{{"seasonNumber":1,"episodeNumber":{i},"title":"Ep {i}"}}],"episodeFile":{{"relativePath":"Season 01/S01E{i:02}.mkv","path":"/tv/Hook {tag} {i}/Season 01/S01E{i:02}.mkv"}},"isUpgrade":false,"eventType":"Download","instanceName":"Sonarr"}}"#
    )
}

/// Posts a new (unique) Sonarr body and returns its event id; the relay must answer 202.
pub async fn post_new(client: &reqwest::Client, relay: &TestRelay, body: String) -> String {
    let (status, v) = super::post_sonarr(client, relay, body).await;
    assert_eq!(status, 202, "relay did not accept a new event");
    v["id"].as_str().expect("event id").to_owned()
}

/// Posts `sonarr_download(tag, i)` for every `i` in `range` from 8 concurrent tasks; every
/// one must be accepted. Returns the event ids (in completion order).
pub async fn post_many(relay: &TestRelay, tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let client = reqwest::Client::new();
    let url = relay.url("/api/v1/webhooks/sonarr");
    let indices: Vec<usize> = range.collect();
    let mut tasks = tokio::task::JoinSet::new();
    for part in indices.chunks(indices.len().div_ceil(8).max(1)) {
        let (client, url, tag, part) = (client.clone(), url.clone(), tag.to_owned(), part.to_vec());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in part {
                let resp = client
                    .post(&url)
                    .basic_auth("sonarr", Some("Pa55w0rd!"))
                    .header("content-type", "application/json")
                    .body(sonarr_download(&tag, i))
                    .send()
                    .await
                    .expect("send to relay");
                assert_eq!(resp.status(), 202, "event {tag} {i} not accepted");
                let v: serde_json::Value = resp.json().await.expect("relay answers JSON");
                ids.push(v["id"].as_str().expect("event id").to_owned());
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.expect("poster task"));
    }
    ids
}

async fn admin_json(resp: reqwest::Response, what: &str) -> serde_json::Value {
    let status = resp.status();
    let text = resp.text().await.expect("admin body");
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// `GET /api/v1/admin/hooks/{name}`: `{"stats": …, "deliveries": …}`.
pub async fn hook_view(relay: &TestRelay, name: &str) -> serde_json::Value {
    let resp = relay
        .admin_get(&format!("/api/v1/admin/hooks/{name}"))
        .await;
    admin_json(resp, "GET hook").await
}

/// `PATCH /api/v1/admin/hooks/{name}` with `body`; returns `{"stats": …}`.
pub async fn patch_hook(
    relay: &TestRelay,
    name: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .patch(relay.url(&format!("/api/v1/admin/hooks/{name}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin PATCH");
    admin_json(resp, "PATCH hook").await
}

/// A hook `good` (answers 200) for the `sonarr` source and a hook `bad` (answers 400, so
/// its deliveries fail at once) for `sonarr-open`: their `[[hook]]` TOML and receivers.
pub async fn good_and_bad_hooks() -> (String, Receiver, Receiver) {
    let good = Receiver::start().await;
    let bad = Receiver::start_with(Reply::status(400)).await;
    let extra = format!(
        "{}{}",
        hook_toml(
            "good",
            &good.hook_url(),
            "events = { instances = [\"sonarr\"] }"
        ),
        hook_toml(
            "bad",
            &bad.hook_url(),
            "events = { instances = [\"sonarr-open\"] }"
        ),
    );
    (extra, good, bad)
}

/// `GET /api/v1/admin/events/{id}/attempts`, the `attempts` array.
pub async fn attempts(relay: &TestRelay, event_id: &str) -> Vec<serde_json::Value> {
    let resp = relay
        .admin_get(&format!("/api/v1/admin/events/{event_id}/attempts"))
        .await;
    let v = admin_json(resp, "GET attempts").await;
    v["attempts"].as_array().cloned().unwrap_or_default()
}

/// Waits until the history holds at least `n` attempts of `event_id` and returns them
/// (history is written in batches).
pub async fn wait_attempts(relay: &TestRelay, event_id: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = attempts(relay, event_id).await;
        if a.len() >= n {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event {event_id}: {} of {n} attempts recorded: {a:#?}",
            a.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a replay job (`POST …/replay`, answered 202 with the job), waits until the job is
/// no longer running, and returns its final view.
pub async fn replay_job(relay: &TestRelay, path: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(relay.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin POST");
    assert_eq!(resp.status(), 202, "{path}");
    let job = admin_json(resp, path).await;
    let id = job["job"].as_str().expect("job id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = admin_json(
            relay.admin_get(&format!("/api/v1/admin/jobs/{id}")).await,
            "GET job",
        )
        .await;
        if v["state"] != "running" {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} still running: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
