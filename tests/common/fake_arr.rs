//! A fake Sonarr or Radarr history API for the poller tests: a real axum server on
//! 127.0.0.1:0 serving `GET /api/v3/history/since` the way the apps do (see
//! `shared/notes/plex-and-arr-api.md` §8): camelCase keys, enum names as camelCase strings,
//! `data` values all strings, UTC dates without fractions, every record with `date >= date`
//! (inclusive), oldest first, the media objects only when `include*=true`, and a 401 with an
//! empty body for a missing or wrong key (`?apikey=` checked before `X-Api-Key`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrApp {
    Sonarr,
    Radarr,
}

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct ArrRequest {
    pub query: String,
    pub api_key_header: Option<String>,
    pub status: u16,
}

struct Shared {
    app: ArrApp,
    api_key: String,
    records: Mutex<Vec<Value>>,
    next_id: Mutex<i64>,
    requests: Mutex<Vec<ArrRequest>>,
}

/// A running fake app. Stops when dropped.
pub struct FakeArr {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix seconds as the apps write dates: `2025-03-10T18:22:41Z`.
pub fn arr_date(unix_s: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_s).expect("valid time");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl FakeArr {
    pub async fn sonarr(api_key: &str) -> FakeArr {
        Self::start(ArrApp::Sonarr, api_key).await
    }

    pub async fn radarr(api_key: &str) -> FakeArr {
        Self::start(ArrApp::Radarr, api_key).await
    }

    async fn start(app: ArrApp, api_key: &str) -> FakeArr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake arr");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            app,
            api_key: api_key.to_owned(),
            records: Mutex::new(Vec::new()),
            next_id: Mutex::new(55_000),
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/api/v3/history/since", get(since))
            .with_state(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeArr {
            addr,
            shared,
            _stop: tx,
        }
    }

    /// The base URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<ArrRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Adds a record dated `date` (unix seconds) and returns its id.
    pub fn push_at(&self, date: i64, mut record: Value) -> i64 {
        let id = {
            let mut n = lock(&self.shared.next_id);
            *n += 1;
            *n
        };
        record["id"] = json!(id);
        record["date"] = json!(arr_date(date));
        lock(&self.shared.records).push(record);
        id
    }

    /// Adds a record dated now.
    pub fn push(&self, record: Value) -> i64 {
        self.push_at(now_s(), record)
    }
}

fn quality(name: &str) -> Value {
    json!({
        "quality": { "id": 3, "name": name, "source": "web", "resolution": 1080 },
        "revision": { "version": 1, "real": 0, "isRepack": false }
    })
}

/// The Sonarr series every Sonarr record here belongs to.
pub fn expanse() -> Value {
    json!({
        "title": "The Expanse", "sortTitle": "expanse", "year": 2015, "path": "/tv/The Expanse",
        "tvdbId": 280619, "tmdbId": 63639, "imdbId": "tt3230854", "tvMazeId": 1825,
        "titleSlug": "the-expanse", "rootFolderPath": "/tv", "seriesType": "standard",
        "tags": [], "id": 12
    })
}

fn episode(season: i64, ep: i64) -> Value {
    json!({
        "seriesId": 12, "tvdbId": 6_560_000 + season * 100 + ep, "episodeFileId": 9876,
        "seasonNumber": season, "episodeNumber": ep, "title": format!("Episode {ep}"),
        "airDate": "2018-05-09", "airDateUtc": "2018-05-10T02:00:00Z", "runtime": 45,
        "hasFile": true, "monitored": true, "unverifiedSceneNumbering": false,
        "id": 4800 + season * 100 + ep
    })
}

/// A Sonarr `downloadFolderImported` record for one episode of `import_path`.
pub fn sonarr_import(season: i64, ep: i64, download_id: &str, import_path: &str) -> Value {
    json!({
        "episodeId": 4800 + season * 100 + ep, "seriesId": 12,
        "sourceTitle": format!("The.Expanse.S{season:02}E{ep:02}.1080p.WEB.h264-NTb"),
        "languages": [ { "id": 1, "name": "English" } ],
        "quality": quality("WEBDL-1080p"),
        "customFormats": [], "customFormatScore": 0, "qualityCutoffNotMet": false,
        "downloadId": download_id, "eventType": "downloadFolderImported",
        "data": {
            "fileId": "9876",
            "droppedPath": format!("/downloads/complete/The.Expanse.S{season:02}E{ep:02}/e.mkv"),
            "importedPath": import_path,
            "downloadClient": "SABnzbd", "downloadClientName": "SABnzbd", "releaseGroup": "NTb",
            "customFormatScore": "0", "size": "1523456789", "indexerFlags": "0",
            "releaseType": "SingleEpisode"
        },
        "episode": episode(season, ep),
        "series": expanse()
    })
}

/// A Sonarr `episodeFileDeleted` record (`reason`: `Upgrade`, `Manual`, `MissingFromDisk`).
pub fn sonarr_delete(season: i64, ep: i64, reason: &str, path: &str) -> Value {
    json!({
        "episodeId": 4800 + season * 100 + ep, "seriesId": 12, "sourceTitle": path,
        "languages": [], "quality": quality("HDTV-720p"), "customFormats": [],
        "customFormatScore": 0, "qualityCutoffNotMet": false,
        "eventType": "episodeFileDeleted",
        "data": { "reason": reason, "releaseGroup": "OLD", "size": "700000000", "indexerFlags": "0",
                  "releaseType": "SingleEpisode" },
        "episode": episode(season, ep),
        "series": expanse()
    })
}

/// A Sonarr `episodeFileRenamed` record.
pub fn sonarr_rename(season: i64, ep: i64, old: &str, new: &str) -> Value {
    json!({
        "episodeId": 4800 + season * 100 + ep, "seriesId": 12, "sourceTitle": old,
        "languages": [], "quality": quality("WEBDL-1080p"), "customFormats": [],
        "customFormatScore": 0, "qualityCutoffNotMet": false,
        "eventType": "episodeFileRenamed",
        "data": {
            "sourcePath": old, "sourceRelativePath": old.trim_start_matches("/tv/The Expanse/"),
            "path": new, "relativePath": new.trim_start_matches("/tv/The Expanse/"),
            "releaseGroup": "NTb", "size": "1523456789", "indexerFlags": "0", "releaseType": "SingleEpisode"
        },
        "episode": episode(season, ep),
        "series": expanse()
    })
}

/// A Sonarr `grabbed` record (not something the pollers recover).
pub fn sonarr_grab(season: i64, ep: i64, download_id: &str) -> Value {
    json!({
        "episodeId": 4800 + season * 100 + ep, "seriesId": 12,
        "sourceTitle": "The.Expanse.S03E05.1080p.WEB.h264-NTb", "languages": [],
        "quality": quality("WEBDL-1080p"), "customFormats": [], "customFormatScore": 0,
        "qualityCutoffNotMet": false, "downloadId": download_id, "eventType": "grabbed",
        "data": { "indexer": "NZBgeek", "releaseGroup": "NTb", "age": "0", "protocol": "1",
                  "downloadClient": "SABnzbd", "downloadClientName": "SABnzbd", "size": "1523456789" },
        "episode": episode(season, ep),
        "series": expanse()
    })
}

fn dune() -> Value {
    json!({
        "title": "Dune: Part Two", "originalTitle": "Dune: Part Two", "year": 2024,
        "path": "/movies/Dune Part Two (2024)", "folderName": "/movies/Dune Part Two (2024)",
        "tmdbId": 693134, "imdbId": "tt15239678", "hasFile": true, "movieFileId": 3310, "id": 87
    })
}

/// A Radarr `downloadFolderImported` record.
pub fn radarr_import(download_id: &str, import_path: &str) -> Value {
    json!({
        "movieId": 87, "sourceTitle": "Dune.Part.Two.2024.1080p.BluRay.DDP7.1.x264-ZoroSenpai",
        "languages": [ { "id": 1, "name": "English" } ],
        "quality": { "quality": { "id": 7, "name": "Bluray-1080p", "source": "bluray",
                                  "resolution": 1080, "modifier": "none" },
                     "revision": { "version": 1, "real": 0, "isRepack": false } },
        "customFormats": [], "customFormatScore": 0, "qualityCutoffNotMet": false,
        "downloadId": download_id, "eventType": "downloadFolderImported",
        "data": {
            "fileId": "3310", "droppedPath": "/downloads/movies/Dune.Part.Two.2024/dune.mkv",
            "importedPath": import_path, "downloadClient": "qBittorrent", "downloadClientName": "qBit",
            "releaseGroup": "ZoroSenpai", "customFormatScore": "0", "size": "16105025536",
            "indexerFlags": "0"
        },
        "movie": dune()
    })
}

/// A Radarr `movieFileDeleted` record.
pub fn radarr_delete(reason: &str, path: &str) -> Value {
    json!({
        "movieId": 87, "sourceTitle": path, "languages": [],
        "quality": { "quality": { "id": 3, "name": "WEBDL-1080p", "source": "webdl", "resolution": 1080,
                                  "modifier": "none" } },
        "customFormats": [], "customFormatScore": 0, "qualityCutoffNotMet": false,
        "eventType": "movieFileDeleted",
        "data": { "reason": reason, "releaseGroup": "GRP", "size": "4521987654", "indexerFlags": "0" },
        "movie": dune()
    })
}

/// A Radarr `movieFileRenamed` record.
pub fn radarr_rename(old: &str, new: &str) -> Value {
    json!({
        "movieId": 87, "sourceTitle": old, "languages": [], "quality": quality("Bluray-1080p"),
        "customFormats": [], "customFormatScore": 0, "qualityCutoffNotMet": false,
        "eventType": "movieFileRenamed",
        "data": { "sourcePath": old, "sourceRelativePath": "old.mkv", "path": new,
                  "relativePath": "new.mkv", "releaseGroup": "GRP", "size": "1", "indexerFlags": "0" },
        "movie": dune()
    })
}

async fn since(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let header = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The query parameter is checked first, then the header.
    let given = param("apikey").or_else(|| header.clone());
    let record = |status: u16| {
        lock(&st.requests).push(ArrRequest {
            query: query.clone(),
            api_key_header: header.clone(),
            status,
        })
    };
    if given.as_deref() != Some(st.api_key.as_str()) {
        record(401);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let from = param("date").map(|d| {
        time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("fake arr: bad date {d:?}: {e}"))
            .unix_timestamp()
    });
    let flag = |k: &str| param(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let date_of = |r: &Value| {
        let d = r["date"].as_str().expect("date");
        time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339)
            .expect("stored date")
            .unix_timestamp()
    };
    let mut out: Vec<Value> = lock(&st.records)
        .iter()
        .filter(|r| from.is_none_or(|f| date_of(r) >= f))
        .cloned()
        .collect();
    // Oldest first (`OrderBy(h => h.Date)`); a stable sort keeps insertion order within a second.
    out.sort_by_key(|r| date_of(r));
    for r in &mut out {
        let obj = r.as_object_mut().expect("record object");
        match st.app {
            ArrApp::Sonarr => {
                if !flag("includeSeries") {
                    obj.remove("series");
                }
                if !flag("includeEpisode") {
                    obj.remove("episode");
                }
            }
            ArrApp::Radarr => {
                if !flag("includeMovie") {
                    obj.remove("movie");
                }
            }
        }
    }
    record(200);
    let body = serde_json::to_string_pretty(&out).expect("serialise");
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}
