//! Fake Plex Media Server for integration tests: a real axum server on 127.0.0.1 that speaks Plex's
//! wire format (XML by default, JSON with `Accept: application/json`) as described in
//! `shared/notes/plex-and-arr-api.md` §1–7, and records every call it receives.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use sha2::{Digest, Sha256};

/// The 401 body documented by the old community spec (`src/responses/401.yaml`, notes §1).
const UNAUTHORIZED_BODY: &str =
    r#"{"errors":[{"code":1001,"message":"User could not be authenticated","status":401}]}"#;
/// Fake `addedAt` values are this plus a sequence number, so sorting by them is deterministic.
const ADDED_AT_BASE: i64 = 1_700_000_000;

/// Which representation the fake answers in when forced (see [`FakePlex::set_forced_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeFormat {
    /// Plex's default representation.
    Xml,
    /// `Accept: application/json` representation.
    Json,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Form-decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Request body length in bytes.
    pub body_len: usize,
    /// The TCP peer (one distinct address per connection).
    pub peer: SocketAddr,
    /// Status the fake answered.
    pub status: u16,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// Whether the token came as a query parameter (relayarr must send it as a header).
    pub token_in_query: bool,
    /// The `X-Plex-Container-Start` / `-Size` request headers, if sent.
    pub container: (Option<String>, Option<String>),
}

/// One `PUT /library/sections/{id}/all` edit as received.
#[derive(Debug, Clone)]
pub struct Edit {
    /// Section id from the path.
    pub section: String,
    /// The `id=` value (None when missing: that request is rejected and counted as dangerous).
    pub id: Option<String>,
    /// The `type=` value.
    pub type_num: Option<String>,
    /// Every decoded query pair.
    pub pairs: Vec<(String, String)>,
    /// Status the fake answered.
    pub status: u16,
}

/// A snapshot of one item's state, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeItemView {
    /// Current rating key.
    pub rating_key: String,
    /// `episode`, `movie` or `show`.
    pub kind: String,
    /// Section id.
    pub section: String,
    /// Title.
    pub title: String,
    /// The file Plex currently lists (None while not yet scanned in, or after removal).
    pub listed_file: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// `thumb` field locked.
    pub thumb_locked: bool,
    /// `upload://posters/<sha256>` after an upload.
    pub poster: Option<String>,
}

#[derive(Debug, Clone)]
struct FakeSection {
    key: String,
    kind: String,
    title: String,
    locations: Vec<String>,
}

#[derive(Debug, Clone)]
struct FakeItem {
    rating_key: String,
    kind: String,
    section: String,
    title: String,
    show_key: Option<String>,
    season: Option<i32>,
    episode: Option<i32>,
    /// Shows: their `Location@path`.
    folder: Option<String>,
    /// The file as it is on disk now (None once removed).
    disk_path: Option<String>,
    /// The file Plex lists (None: not in Plex). Shows are always listed.
    listed_path: Option<String>,
    /// A scan's outcome waiting for its delay: at this instant, `listed_path` becomes the value.
    pending: Option<(Instant, Option<String>)>,
    added_seq: i64,
    labels: Vec<String>,
    guids: Vec<String>,
    thumb_locked: bool,
    poster: Option<String>,
    /// `year` (shows and movies: the release year).
    year: Option<i32>,
}

impl FakeItem {
    fn visible(&self) -> bool {
        self.kind == "show" || self.listed_path.is_some()
    }

    fn view(&self) -> FakeItemView {
        FakeItemView {
            rating_key: self.rating_key.clone(),
            kind: self.kind.clone(),
            section: self.section.clone(),
            title: self.title.clone(),
            listed_file: self.listed_path.clone(),
            labels: self.labels.clone(),
            thumb_locked: self.thumb_locked,
            poster: self.poster.clone(),
        }
    }
}

#[derive(Debug)]
struct FakeState {
    token: String,
    sections: Vec<FakeSection>,
    items: BTreeMap<String, FakeItem>,
    next_key: u64,
    next_seq: i64,
    scan_delay: Duration,
    latency: Duration,
    down: bool,
    forced: Option<FakeFormat>,
    show_locations_in_listing: bool,
    calls: Vec<Call>,
    scans: Vec<(String, String)>,
    uploads: Vec<(String, String)>,
    edits: Vec<Edit>,
    dangerous_edits: usize,
    peers: HashSet<SocketAddr>,
}

impl FakeState {
    fn new_key(&mut self) -> String {
        self.next_key += 1;
        self.next_key.to_string()
    }

    fn new_seq(&mut self) -> i64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Apply scan outcomes whose delay has passed.
    fn tick(&mut self, now: Instant) {
        let mut due = Vec::new();
        for item in self.items.values_mut() {
            if let Some((at, _)) = &item.pending {
                if *at <= now {
                    due.push(item.rating_key.clone());
                }
            }
        }
        for key in due {
            let seq = self.new_seq();
            if let Some(item) = self.items.get_mut(&key) {
                if let Some((_, listed)) = item.pending.take() {
                    if item.listed_path.is_none() && listed.is_some() {
                        item.added_seq = seq;
                    }
                    item.listed_path = listed;
                }
            }
        }
    }

    fn section(&self, key: &str) -> Option<&FakeSection> {
        self.sections.iter().find(|s| s.key == key)
    }

    fn refreshing(&self, section: &str, now: Instant) -> bool {
        self.items
            .values()
            .any(|i| i.section == section && i.pending.as_ref().is_some_and(|(at, _)| *at > now))
    }

    fn find_by_file(&self, path: &str) -> Option<String> {
        self.items
            .values()
            .find(|i| {
                i.disk_path.as_deref() == Some(path) || i.listed_path.as_deref() == Some(path)
            })
            .map(|i| i.rating_key.clone())
    }
}

struct Shared {
    state: Mutex<FakeState>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread must not hide the real failure behind a poison error.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Handle to a running fake Plex. Cheap to clone; every clone configures and inspects the same
/// server, mid-test too. The server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakePlex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakePlex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePlex")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl FakePlex {
    /// Start a fake Plex on `127.0.0.1:0` that accepts `token`.
    pub async fn start(token: &str) -> FakePlex {
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                token: token.to_string(),
                sections: Vec::new(),
                items: BTreeMap::new(),
                next_key: 1000,
                next_seq: 0,
                scan_delay: Duration::ZERO,
                latency: Duration::ZERO,
                down: false,
                forced: None,
                show_locations_in_listing: true,
                calls: Vec::new(),
                scans: Vec::new(),
                uploads: Vec::new(),
                edits: Vec::new(),
                dangerous_edits: 0,
                peers: HashSet::new(),
            }),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake plex: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake plex: local addr");
        // One fallback handler does the routing, so every request is recorded the same way.
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        FakePlex {
            inner: Arc::new(Inner { shared, addr, task }),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.inner.shared.lock()
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Add a library section (`kind`: `movie` or `show`) with its root folders.
    pub fn add_section(&self, key: &str, kind: &str, title: &str, locations: &[&str]) {
        self.state().sections.push(FakeSection {
            key: key.to_string(),
            kind: kind.to_string(),
            title: title.to_string(),
            locations: locations.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// Add a show already known to Plex, with its folder as its `Location`.
    pub fn add_show(&self, section: &str, rating_key: &str, title: &str, folder: &str) {
        let mut st = self.state();
        let seq = st.new_seq();
        st.items.insert(
            rating_key.to_string(),
            FakeItem {
                rating_key: rating_key.to_string(),
                kind: "show".into(),
                section: section.to_string(),
                title: title.to_string(),
                show_key: None,
                season: None,
                episode: None,
                folder: Some(folder.to_string()),
                disk_path: None,
                listed_path: None,
                pending: None,
                added_seq: seq,
                labels: Vec::new(),
                guids: Vec::new(),
                year: None,
                thumb_locked: false,
                poster: None,
            },
        );
    }

    /// A file that exists on disk but is not in Plex yet: it is listed only after a partial scan of
    /// a folder containing it (prefix at a path-component boundary) plus the scan delay. In a
    /// `movie` section it becomes a movie (pass `None` for show/season/episode), else an episode.
    /// Returns the rating key the item will have.
    pub fn add_file_on_disk(
        &self,
        section: &str,
        show_rating_key: Option<&str>,
        path: &str,
        season: Option<i32>,
        episode: Option<i32>,
        title: &str,
    ) -> String {
        self.insert_file(
            section,
            show_rating_key,
            path,
            season,
            episode,
            title,
            false,
        )
    }

    /// Like [`FakePlex::add_file_on_disk`] but already scanned in (listed right away).
    pub fn add_indexed_file(
        &self,
        section: &str,
        show_rating_key: Option<&str>,
        path: &str,
        season: Option<i32>,
        episode: Option<i32>,
        title: &str,
    ) -> String {
        self.insert_file(section, show_rating_key, path, season, episode, title, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_file(
        &self,
        section: &str,
        show_rating_key: Option<&str>,
        path: &str,
        season: Option<i32>,
        episode: Option<i32>,
        title: &str,
        indexed: bool,
    ) -> String {
        let mut st = self.state();
        let kind = match st.section(section).map(|s| s.kind.as_str()) {
            Some("movie") => "movie",
            Some(_) => "episode",
            None => panic!("fake plex: add_section({section}) before adding files to it"),
        };
        let key = st.new_key();
        let seq = st.new_seq();
        st.items.insert(
            key.clone(),
            FakeItem {
                rating_key: key.clone(),
                kind: kind.into(),
                section: section.to_string(),
                title: title.to_string(),
                show_key: show_rating_key.map(str::to_string),
                season,
                episode,
                folder: None,
                disk_path: Some(path.to_string()),
                listed_path: indexed.then(|| path.to_string()),
                pending: None,
                added_seq: seq,
                labels: Vec::new(),
                guids: Vec::new(),
                year: None,
                thumb_locked: false,
                poster: None,
            },
        );
        key
    }

    /// Delay between a partial scan and its files appearing in listings.
    pub fn set_scan_delay(&self, delay: Duration) {
        self.state().scan_delay = delay;
    }

    /// Artificial latency added to every request (for concurrency-cap tests).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Down: answer 503 to everything.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Answer in this format whatever `Accept` says (None: JSON iff `Accept: application/json`).
    pub fn set_forced_format(&self, format: Option<FakeFormat>) {
        self.state().forced = format;
    }

    /// Whether `/all?type=2` listings include shows' `Location` children (default true). Whether
    /// real PMS includes them there is unverified (notes "Not verified"); `/library/metadata/{id}`
    /// always does.
    pub fn set_show_locations_in_listing(&self, include: bool) {
        self.state().show_locations_in_listing = include;
    }

    /// Simulate Plex deleting and recreating the item of `file_path` (e.g. on an upgrade): it gets
    /// a new rating key and loses labels, lock and poster. Returns the new key.
    pub fn change_rating_key(&self, file_path: &str) -> Option<String> {
        let mut st = self.state();
        let old = st.find_by_file(file_path)?;
        let mut item = st.items.remove(&old)?;
        let key = st.new_key();
        item.rating_key = key.clone();
        item.added_seq = st.new_seq();
        item.labels.clear();
        item.thumb_locked = false;
        item.poster = None;
        st.items.insert(key.clone(), item);
        Some(key)
    }

    /// The file on disk moves from `old` to `new` (an upgrade replacing it). Plex keeps listing
    /// `old` until a scan covering `new` (or `old`) runs. Returns false if `old` is unknown.
    pub fn set_file_path(&self, old: &str, new: &str) -> bool {
        let mut st = self.state();
        match st
            .items
            .values_mut()
            .find(|i| i.disk_path.as_deref() == Some(old))
        {
            Some(item) => {
                item.disk_path = Some(new.to_string());
                true
            }
            None => false,
        }
    }

    /// The file disappears from disk; Plex drops the item after a scan of its folder.
    pub fn remove_file(&self, path: &str) -> bool {
        let mut st = self.state();
        match st
            .items
            .values_mut()
            .find(|i| i.disk_path.as_deref() == Some(path))
        {
            Some(item) => {
                item.disk_path = None;
                true
            }
            None => false,
        }
    }

    /// Add a label (e.g. Kometa's `Overlay`) to an item.
    /// Sets an item's `year` (a show's or movie's release year, as Plex lists it).
    pub fn set_year(&self, rating_key: &str, year: i32) {
        if let Some(item) = self.state().items.get_mut(rating_key) {
            item.year = Some(year);
        }
    }

    pub fn add_label(&self, rating_key: &str, label: &str) {
        if let Some(item) = self.state().items.get_mut(rating_key) {
            item.labels.push(label.to_string());
        }
    }

    /// Set an item's external `Guid` children (e.g. `tvdb://123`).
    pub fn set_guids(&self, rating_key: &str, guids: &[&str]) {
        if let Some(item) = self.state().items.get_mut(rating_key) {
            item.guids = guids.iter().map(|g| g.to_string()).collect();
        }
    }

    /// Snapshot of an item's state.
    pub fn item(&self, rating_key: &str) -> Option<FakeItemView> {
        self.state().items.get(rating_key).map(FakeItem::view)
    }

    /// Rating key of the item whose file (on disk or listed) is `path`.
    pub fn rating_key_for_file(&self, path: &str) -> Option<String> {
        self.state().find_by_file(path)
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Forget recorded calls, scans, uploads and edits (connections and peak are kept).
    pub fn clear_calls(&self) {
        let mut st = self.state();
        st.calls.clear();
        st.scans.clear();
        st.uploads.clear();
        st.edits.clear();
    }

    /// Every accepted partial scan as (section, decoded path); a scan without `path=` is recorded
    /// with an empty path.
    pub fn scans(&self) -> Vec<(String, String)> {
        self.state().scans.clone()
    }

    /// Every poster upload as (rating key, sha256 hex of the body).
    pub fn uploads(&self) -> Vec<(String, String)> {
        self.state().uploads.clone()
    }

    /// Every `PUT /library/sections/{id}/all` received.
    pub fn edits(&self) -> Vec<Edit> {
        self.state().edits.clone()
    }

    /// Section edits received without `id=` (each would have edited every item of the type).
    pub fn dangerous_edits(&self) -> usize {
        self.state().dangerous_edits
    }

    /// Distinct TCP connections seen (distinct peer addresses).
    pub fn connections_opened(&self) -> usize {
        self.state().peers.len()
    }

    /// Highest number of requests handled at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.shared.peak.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------------ request handling

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a route produced.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    total_size: Option<usize>,
}

impl Reply {
    fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            content_type: "text/html",
            body: String::new(),
            total_size: None,
        }
    }

    fn text(status: StatusCode, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/html",
            body: body.to_string(),
            total_size: None,
        }
    }
}

/// Parsed request facts the routes need.
struct Req {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: bytes::Bytes,
    json: bool,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A container header, or the same name as a query parameter (PMSSPEC allows both).
    fn container(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| self.param(name).map(str::to_string))
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_token = parts
        .headers
        .get("x-plex-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query_token = query
        .iter()
        .find(|(k, _)| k == "X-Plex-Token")
        .map(|(_, v)| v.clone());

    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let mut st = shared.lock();
    st.peers.insert(peer);
    let now = Instant::now();
    st.tick(now);
    let json = match st.forced {
        Some(FakeFormat::Json) => true,
        Some(FakeFormat::Xml) => false,
        None => accept
            .as_deref()
            .is_some_and(|a| a.contains("application/json")),
    };
    let req = Req {
        method: parts.method.clone(),
        segments: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                // Path segments are percent-encoded by clients; decode for lookups.
                form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            })
            .collect(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        json,
    };

    let token_ok = header_token
        .as_deref()
        .or(query_token.as_deref())
        .is_some_and(|t| t == st.token);
    let reply = if st.down {
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
    } else if !token_ok {
        Reply {
            status: StatusCode::UNAUTHORIZED,
            content_type: "application/json",
            body: UNAUTHORIZED_BODY.to_string(),
            total_size: None,
        }
    } else {
        route(&mut st, &req, now)
    };

    st.calls.push(Call {
        method: parts.method.to_string(),
        path,
        query,
        body_len: body.len(),
        peer,
        status: reply.status.as_u16(),
        accept,
        token_in_query: query_token.is_some(),
        container: (
            req.container("X-Plex-Container-Start"),
            req.container("X-Plex-Container-Size"),
        ),
    });
    drop(st);

    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type);
    if let Some(total) = reply.total_size {
        builder = builder.header("X-Plex-Container-Total-Size", total.to_string());
    }
    builder
        .body(Body::from(reply.body))
        .expect("fake plex: build response")
}

fn route(st: &mut FakeState, req: &Req, now: Instant) -> Reply {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = &req.method;
    match segs.as_slice() {
        ["library", "sections"] if m == Method::GET => sections_reply(st, req, now),
        ["library", "sections", id, "refresh"] => {
            if m == Method::GET {
                scan(st, req, id, now)
            } else {
                // PUT/POST on refresh answer 404 since PMS 1.32.7.7484 (notes §3).
                Reply::text(
                    StatusCode::NOT_FOUND,
                    "<html><body>404 Not Found</body></html>",
                )
            }
        }
        ["library", "sections", id, "all"] if m == Method::GET => listing(st, req, id),
        ["library", "sections", id, "all"] if m == Method::PUT => section_edit(st, req, id),
        ["library", "metadata", id] if m == Method::GET => metadata(st, req, id),
        ["library", "metadata", id, "allLeaves"] if m == Method::GET => all_leaves(st, req, id),
        ["library", "metadata", id, "posters"] if m == Method::POST => upload(st, req, id),
        _ => Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        ),
    }
}

/// `file` lies inside `dir` at a path-component boundary (a file path itself is not a folder:
/// Plex fails to scan it, notes §3).
fn under(file: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    file.len() > dir.len() && file.starts_with(dir) && file.as_bytes()[dir.len()] == b'/'
}

fn scan(st: &mut FakeState, req: &Req, section: &str, now: Instant) -> Reply {
    if st.section(section).is_none() {
        return Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        );
    }
    let folder = req.param("path").unwrap_or_default().to_string();
    st.scans.push((section.to_string(), folder.clone()));
    let at = now + st.scan_delay;
    for item in st.items.values_mut() {
        if item.section != section || item.kind == "show" {
            continue;
        }
        let covers = |p: &Option<String>| {
            p.as_deref()
                .is_some_and(|p| folder.is_empty() || under(p, &folder))
        };
        let next = if covers(&item.disk_path) {
            item.disk_path.clone()
        } else if covers(&item.listed_path) {
            // Listed file is gone from this folder (removed or moved away).
            None
        } else {
            continue;
        };
        if next != item.listed_path {
            item.pending = Some((at, next));
        }
    }
    st.tick(now);
    // 200 with an empty body; the scan runs asynchronously (notes §3).
    Reply::empty(StatusCode::OK)
}

// ------------------------------------------------------------------------ rendering

/// A scalar with its JSON typing; in XML every value is a string and bools are "1"/"0" (notes §2).
enum Val {
    S(String),
    I(i64),
    B(bool),
}

/// An element rendered as XML (`xml` name) or JSON (grouped under `json` name, arrays omitted when
/// empty, notes Gotcha 4).
struct El {
    xml: &'static str,
    json: &'static str,
    attrs: Vec<(&'static str, Val)>,
    children: Vec<El>,
}

impl El {
    fn new(xml: &'static str, json: &'static str) -> El {
        El {
            xml,
            json,
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    fn s(mut self, k: &'static str, v: impl Into<String>) -> El {
        self.attrs.push((k, Val::S(v.into())));
        self
    }

    fn i(mut self, k: &'static str, v: i64) -> El {
        self.attrs.push((k, Val::I(v)));
        self
    }

    fn b(mut self, k: &'static str, v: bool) -> El {
        self.attrs.push((k, Val::B(v)));
        self
    }

    fn child(mut self, c: El) -> El {
        self.children.push(c);
        self
    }

    fn xml_into(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.xml);
        for (k, v) in &self.attrs {
            let text = match v {
                Val::S(s) => s.clone(),
                Val::I(n) => n.to_string(),
                Val::B(b) => if *b { "1" } else { "0" }.to_string(),
            };
            out.push_str(&format!(" {k}=\"{}\"", xml_escape(&text)));
        }
        if self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        for c in &self.children {
            c.xml_into(out);
        }
        out.push_str(&format!("</{}>", self.xml));
    }

    fn json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.attrs {
            let value = match v {
                Val::S(s) => serde_json::Value::from(s.clone()),
                Val::I(n) => serde_json::Value::from(*n),
                Val::B(b) => serde_json::Value::from(*b),
            };
            map.insert((*k).to_string(), value);
        }
        for c in &self.children {
            let entry = map
                .entry(c.json.to_string())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(c.json());
            }
        }
        serde_json::Value::Object(map)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn container_reply(container: El, json: bool, total_size: Option<usize>) -> Reply {
    if json {
        let body = serde_json::json!({ "MediaContainer": container.json() }).to_string();
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
            total_size,
        }
    } else {
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        container.xml_into(&mut body);
        Reply {
            status: StatusCode::OK,
            content_type: "text/xml;charset=utf-8",
            body,
            total_size,
        }
    }
}

fn sections_reply(st: &FakeState, req: &Req, now: Instant) -> Reply {
    let mut c = El::new("MediaContainer", "MediaContainer")
        .i("size", st.sections.len() as i64)
        .b("allowSync", false)
        .s("title1", "Plex Library");
    let mut location_id = 0;
    for s in &st.sections {
        // Typing from the notes §2: key string, flags bools, hidden the number 0, Location.id number.
        let mut d = El::new("Directory", "Directory")
            .b("allowSync", true)
            .b("filters", true)
            .b("refreshing", st.refreshing(&s.key, now))
            .s("key", s.key.clone())
            .s("type", s.kind.clone())
            .s("title", s.title.clone())
            .s(
                "agent",
                if s.kind == "movie" {
                    "tv.plex.agents.movie"
                } else {
                    "tv.plex.agents.series"
                },
            )
            .b("content", true)
            .b("directory", true)
            .i("hidden", 0);
        for l in &s.locations {
            location_id += 1;
            d = d.child(
                El::new("Location", "Location")
                    .i("id", location_id)
                    .s("path", l.clone()),
            );
        }
        c = c.child(d);
    }
    container_reply(c, req.json, None)
}

/// Render an item with the typings of notes §4: keys strings, index/parentIndex/librarySectionID/
/// addedAt numbers; Guid children only when asked (`includeGuids`), always on metadata.
fn item_el(st: &FakeState, item: &FakeItem, guids: bool, locations: bool) -> El {
    let section_num: i64 = item.section.parse().unwrap_or(0);
    let is_dir = item.kind == "show" || item.kind == "season";
    let (xml_name, key) = if item.kind == "show" {
        (
            "Directory",
            format!("/library/metadata/{}/children", item.rating_key),
        )
    } else {
        (
            if is_dir { "Directory" } else { "Video" },
            format!("/library/metadata/{}", item.rating_key),
        )
    };
    let mut el = El::new(xml_name, "Metadata")
        .s("ratingKey", item.rating_key.clone())
        .s("key", key)
        .s("guid", format!("plex://{}/{}", item.kind, item.rating_key))
        .s("type", item.kind.clone())
        .s("title", item.title.clone())
        .i("librarySectionID", section_num)
        .s(
            "librarySectionKey",
            format!("/library/sections/{}", item.section),
        )
        .i("addedAt", ADDED_AT_BASE + item.added_seq);
    if let Some(show) = item.show_key.as_ref().and_then(|k| st.items.get(k)) {
        el = el
            .s("grandparentRatingKey", show.rating_key.clone())
            .s("grandparentTitle", show.title.clone());
    }
    if let Some(season) = item.season {
        el = el
            .s("parentTitle", format!("Season {season}"))
            .i("parentIndex", i64::from(season));
    }
    if let Some(episode) = item.episode {
        el = el.i("index", i64::from(episode));
    }
    if let Some(year) = item.year {
        el = el.i("year", i64::from(year));
    }
    if item.poster.is_some() {
        el = el.s(
            "thumb",
            format!(
                "/library/metadata/{}/thumb/{}",
                item.rating_key, item.added_seq
            ),
        );
    }
    if let Some(file) = &item.listed_path {
        let part_id = item.rating_key.parse::<i64>().unwrap_or(0) * 10;
        el = el.child(
            El::new("Media", "Media").i("id", part_id + 1).child(
                El::new("Part", "Part")
                    .i("id", part_id + 2)
                    .s("key", format!("/library/parts/{}/file.mkv", part_id + 2))
                    .s("file", file.clone())
                    .i("size", 1_000_000),
            ),
        );
    }
    if guids {
        for g in &item.guids {
            el = el.child(El::new("Guid", "Guid").s("id", g.clone()));
        }
    }
    if locations {
        if let Some(folder) = &item.folder {
            el = el.child(El::new("Location", "Location").s("path", folder.clone()));
        }
    }
    if item.thumb_locked {
        el = el.child(
            El::new("Field", "Field")
                .b("locked", true)
                .s("name", "thumb"),
        );
    }
    for (n, label) in item.labels.iter().enumerate() {
        el = el.child(
            El::new("Label", "Label")
                .i("id", n as i64 + 1)
                .s("tag", label.clone()),
        );
    }
    el
}

fn items_reply(
    st: &FakeState,
    req: &Req,
    section: Option<&str>,
    items: Vec<&FakeItem>,
    guids: bool,
    locations: bool,
    paged: bool,
) -> Reply {
    let total = items.len();
    let (start, size) = if paged {
        let start = req
            .container("X-Plex-Container-Start")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let size = req
            .container("X-Plex-Container-Size")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        (start, size)
    } else {
        (0, usize::MAX)
    };
    let page: Vec<&FakeItem> = items.into_iter().skip(start).take(size).collect();
    let mut c = El::new("MediaContainer", "MediaContainer").i("size", page.len() as i64);
    if paged {
        c = c.i("totalSize", total as i64).i("offset", start as i64);
    }
    if let Some(s) = section.and_then(|s| s.parse::<i64>().ok()) {
        c = c.i("librarySectionID", s);
    }
    for item in page {
        c = c.child(item_el(st, item, guids, locations));
    }
    container_reply(c, req.json, paged.then_some(total))
}

fn listing(st: &FakeState, req: &Req, section: &str) -> Reply {
    let Some(sec) = st.section(section) else {
        return Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        );
    };
    // Unknown filters (including the undocumented `file=`) are ignored: full listing.
    let type_num = req
        .param("type")
        .map(str::to_string)
        .unwrap_or_else(|| if sec.kind == "movie" { "1" } else { "2" }.to_string());
    let kind = match type_num.as_str() {
        "1" => "movie",
        "2" => "show",
        "4" => "episode",
        _ => "",
    };
    let mut items: Vec<&FakeItem> = st
        .items
        .values()
        .filter(|i| i.section == section && i.kind == kind && i.visible())
        .collect();
    if req.param("sort") == Some("addedAt:desc") {
        items.sort_by_key(|i| std::cmp::Reverse(i.added_seq));
    } else {
        items.sort_by(|a, b| a.title.cmp(&b.title).then(a.rating_key.cmp(&b.rating_key)));
    }
    let guids = req.param("includeGuids") == Some("1");
    items_reply(
        st,
        req,
        Some(section),
        items,
        guids,
        st.show_locations_in_listing,
        true,
    )
}

fn metadata(st: &FakeState, req: &Req, id: &str) -> Reply {
    match st.items.get(id).filter(|i| i.visible()) {
        Some(item) => {
            let section = item.section.clone();
            items_reply(st, req, Some(&section), vec![item], true, true, false)
        }
        None => Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        ),
    }
}

fn all_leaves(st: &FakeState, req: &Req, id: &str) -> Reply {
    let Some(show) = st.items.get(id).filter(|i| i.visible()) else {
        return Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        );
    };
    let mut leaves: Vec<&FakeItem> = st
        .items
        .values()
        .filter(|i| i.show_key.as_deref() == Some(id) && i.visible())
        .collect();
    leaves.sort_by_key(|i| (i.season, i.episode));
    let guids = req.param("includeGuids") == Some("1");
    let section = show.section.clone();
    items_reply(st, req, Some(&section), leaves, guids, false, true)
}

fn upload(st: &mut FakeState, req: &Req, id: &str) -> Reply {
    if req.body.is_empty() {
        return Reply::text(StatusCode::BAD_REQUEST, "no image in body and no url=");
    }
    let hex = hex::encode(Sha256::digest(&req.body));
    match st.items.get_mut(id).filter(|i| i.visible()) {
        Some(item) => {
            // PLEXAPI's tests show the upload as `upload://posters/<sha1>`; sha256 here (notes §5).
            item.poster = Some(format!("upload://posters/{hex}"));
            st.uploads.push((id.to_string(), hex));
            Reply::empty(StatusCode::OK)
        }
        None => Reply::text(
            StatusCode::NOT_FOUND,
            "<html><body>404 Not Found</body></html>",
        ),
    }
}

/// Percent-decode (not form-decode: `+` stays) one tag of a `label[].tag.tag-` list.
fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn section_edit(st: &mut FakeState, req: &Req, section: &str) -> Reply {
    let id = req.param("id").map(str::to_string);
    let type_num = req.param("type").map(str::to_string);
    let mut record = Edit {
        section: section.to_string(),
        id: id.clone(),
        type_num: type_num.clone(),
        pairs: req.query.clone(),
        status: 200,
    };
    let reply = edit_items(st, req, section, id.as_deref(), type_num.as_deref());
    record.status = reply.status.as_u16();
    if id.as_deref().is_none_or(|v| v.trim().is_empty()) {
        st.dangerous_edits += 1;
    }
    st.edits.push(record);
    reply
}

fn edit_items(
    st: &mut FakeState,
    req: &Req,
    section: &str,
    id: Option<&str>,
    type_num: Option<&str>,
) -> Reply {
    let Some(id) = id.filter(|v| !v.trim().is_empty()) else {
        // Real PMS would edit EVERY item of the type here (notes §5 "Danger"): the fake refuses.
        return Reply::text(
            StatusCode::BAD_REQUEST,
            "refusing section-wide edit without id=",
        );
    };
    let want_kind = match type_num {
        Some("1") => "movie",
        Some("2") => "show",
        Some("3") => "season",
        Some("4") => "episode",
        _ => return Reply::text(StatusCode::BAD_REQUEST, "missing or unknown type="),
    };
    let ids: Vec<&str> = id.split(',').collect();
    for one in &ids {
        let ok = st
            .items
            .get(*one)
            .is_some_and(|i| i.section == section && i.kind == want_kind && i.visible());
        if !ok {
            // Stricter than PMS (which would likely ignore it) so client bugs show up in tests.
            return Reply::text(
                StatusCode::BAD_REQUEST,
                "id not an item of that type in that section",
            );
        }
    }
    for one in ids {
        let Some(item) = st.items.get_mut(one) else {
            continue;
        };
        for (k, v) in &req.query {
            match k.as_str() {
                "thumb.locked" => item.thumb_locked = v == "1",
                "label[].tag.tag-" => {
                    // The value is a comma-joined list of individually percent-encoded tags
                    // (PLEXAPI _tagHelper, notes §5); the query layer already decoded once.
                    let remove: Vec<String> = v.split(',').map(pct_decode).collect();
                    item.labels.retain(|l| !remove.contains(l));
                }
                k if k.starts_with("label[") && k.ends_with("].tag.tag") => {
                    let label = pct_decode(v);
                    if !item.labels.contains(&label) {
                        item.labels.push(label);
                    }
                }
                _ => {}
            }
        }
    }
    Reply::empty(StatusCode::OK)
}

// ------------------------------------------------------------------------ helpers added for
// the Plex sync tests (`tests/plex_sync.rs`, `tests/plex_crash.rs`)

/// A partial scan as seen by a [`ScanWatch`]: when it was first observed, its section and path.
#[derive(Debug, Clone)]
pub struct TimedScan {
    /// When the watcher first saw the scan (within its poll interval of the request).
    pub seen_at: Instant,
    /// Section id.
    pub section: String,
    /// Decoded `path=`.
    pub path: String,
}

/// Records the time of every accepted partial scan by polling [`FakePlex::scans`] every 2 ms.
/// Stops when dropped.
#[derive(Debug)]
pub struct ScanWatch {
    seen: Arc<Mutex<Vec<TimedScan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScanWatch {
    /// The scans seen so far, in order.
    pub fn scans(&self) -> Vec<TimedScan> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ScanWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePlex {
    /// Starts a [`ScanWatch`] on this server. Scans that happened before the call are
    /// reported with the time of the call. (`clear_calls` must not be used while watching.)
    pub fn watch_scans(&self) -> ScanWatch {
        let seen: Arc<Mutex<Vec<TimedScan>>> = Arc::new(Mutex::new(Vec::new()));
        let fake = self.clone();
        let out = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let now = Instant::now();
                let scans = fake.scans();
                {
                    let mut seen = out.lock().unwrap_or_else(|p| p.into_inner());
                    let known = seen.len();
                    for (section, path) in scans.into_iter().skip(known) {
                        seen.push(TimedScan {
                            seen_at: now,
                            section,
                            path,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        ScanWatch { seen, task }
    }

    /// The file `path` is back on disk for the item `rating_key` (e.g. Sonarr imported a new
    /// file at the path of one it deleted). Plex keeps whatever it lists until a scan of the
    /// folder runs. Returns false if the item is unknown.
    pub fn restore_file(&self, rating_key: &str, path: &str) -> bool {
        match self.state().items.get_mut(rating_key) {
            Some(item) => {
                item.disk_path = Some(path.to_string());
                true
            }
            None => false,
        }
    }
}
