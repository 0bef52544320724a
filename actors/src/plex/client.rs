//! Plex Media Server HTTP client: sections, partial scans, finding items by file path, poster upload
//! and single-item field edits. Wire facts come from `shared/notes/plex-and-arr-api.md` (§1–7, "Gotchas").

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

/// Which representation the client asks Plex for. The parser accepts both whatever was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Send `Accept: application/json` (what autopulse, autoscan and Sonarr do; notes §1).
    Json,
    /// Send no `Accept` header: Plex's default answer is XML (what python-plexapi parses; notes §1).
    Xml,
}

/// Plex section type numbers used by `type=` (notes §5: PLEXAPI `utils.SEARCHTYPES`).
pub const TYPE_MOVIE: u8 = 1;
/// Show (series) type number.
pub const TYPE_SHOW: u8 = 2;
/// Season type number.
pub const TYPE_SEASON: u8 = 3;
/// Episode type number.
pub const TYPE_EPISODE: u8 = 4;

/// How many recently added items the last-resort lookup reads (notes §4 "Recently added").
const RECENT_WINDOW: u32 = 50;
/// Page size used when walking every show of a section.
const SHOW_PAGE: u32 = 200;
/// Upper bound on pages walked (200 × 100 = 20 000 shows), so a server that ignores paging cannot loop us.
const MAX_SHOW_PAGES: u32 = 100;
/// Maximum `/library/metadata/{id}` fetches made to read `Location` when listings omit it.
const MAX_LOCATION_FETCHES: usize = 6;
/// Container size asked of the undocumented `file=` fast path: if the filter is ignored we only read this many.
const FAST_PATH_SIZE: u32 = 20;

/// Errors from [`PlexClient`]. No variant ever carries the token.
#[derive(Debug, thiserror::Error)]
pub enum PlexError {
    /// HTTP 401: a configuration error, not a transient one.
    #[error(
        "Plex rejected the token (HTTP 401): it is wrong or expired; check `[[plex]] token` in the config"
    )]
    Unauthorized,
    /// Any other unexpected HTTP status. `path` is the request path and query (never holds the token).
    #[error("Plex answered HTTP {status} to {path}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Request path and query, relative to the base URL.
        path: String,
    },
    /// Could not talk to Plex at all (connect error, timeout, connection reset).
    #[error("could not reach Plex: {0}")]
    Transport(String),
    /// Plex answered 2xx with a body that is neither parseable XML nor JSON.
    #[error("could not parse Plex's answer to {path}: {reason}")]
    Parse {
        /// Request path and query.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The request was refused before sending (empty folder, empty rating key, bad base URL...).
    #[error("refused to send Plex request: {0}")]
    Invalid(String),
}

impl PlexError {
    /// Whether trying again later may succeed.
    ///
    /// Transport errors, 5xx, 408, 429 and 404 are retryable: autoscan maps 404/500/502/503/504 to
    /// "target unavailable" (notes §1), and a 404 also happens while Plex recreates an item.
    /// 401 is not retryable (the token must be fixed), but the caller should keep its work pending
    /// rather than drop it. Other 4xx, parse errors and refused requests are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            PlexError::Transport(_) => true,
            PlexError::Status { status, .. } => {
                matches!(*status, 404 | 408 | 429) || (500..=599).contains(status)
            }
            PlexError::Unauthorized | PlexError::Parse { .. } | PlexError::Invalid(_) => false,
        }
    }

    /// True for [`PlexError::Unauthorized`]: the caller should alert and keep work pending.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, PlexError::Unauthorized)
    }
}

/// A library section from `GET /library/sections` (notes §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// Section id (`key`), e.g. `"2"`.
    pub key: String,
    /// `movie`, `show`, `artist` or `photo`.
    pub kind: String,
    /// Display title.
    pub title: String,
    /// `refreshing`: a scan of this section is running (notes §6).
    pub refreshing: bool,
    /// Every `Location@path` (root folders as Plex sees them).
    pub locations: Vec<String>,
}

/// A metadata item (episode, movie, show or season) in either wire format (notes §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// `ratingKey`.
    pub rating_key: String,
    /// `type`: `episode`, `movie`, `show`, `season`.
    pub kind: String,
    /// `title`.
    pub title: Option<String>,
    /// `grandparentTitle` (the show, for episodes).
    pub show_title: Option<String>,
    /// `grandparentRatingKey` (the show, for episodes).
    pub show_key: Option<String>,
    /// `year`: a show's or movie's release year (an episode's is its air year).
    pub year: Option<i32>,
    /// Season number: `parentIndex` for episodes; for a `season` item its own `index`.
    pub season: Option<i32>,
    /// Episode number: `index` (not set for `season` items, whose `index` is the season).
    pub episode: Option<i32>,
    /// `librarySectionID` of the item, or of its container when the item lacks it.
    pub section_id: Option<String>,
    /// Every `Media/Part@file`.
    pub files: Vec<String>,
    /// The `guid` attribute followed by every `Guid@id` child.
    pub guids: Vec<String>,
    /// Every `Location@path` (shows).
    pub locations: Vec<String>,
    /// `Field name="thumb" locked="1"` is present.
    pub thumb_locked: bool,
    /// Every `Label@tag`.
    pub labels: Vec<String>,
}

impl Item {
    /// Whether one of this item's parts is `file` (exact; case-insensitive for Windows paths).
    pub fn has_file(&self, file: &str) -> bool {
        self.files.iter().any(|f| same_file(f, file))
    }

    /// Parse one JSON metadata object with the PMS typings, e.g. a webhook's `Metadata` (notes §7).
    pub fn from_json_metadata(value: &serde_json::Value) -> Option<Item> {
        let obj = value.as_object()?;
        item_from_node(&json_to_node("Metadata", obj), None)
    }
}

/// One file to find in [`PlexClient::find_episodes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpisodeWant {
    /// Full path of the file as Plex sees it.
    pub file: String,
    /// Season number, for the fallback by numbers.
    pub season: Option<i32>,
    /// Episode number, for the fallback by numbers.
    pub episode: Option<i32>,
}

/// Plex HTTP client. One pooled `reqwest::Client` is reused for every call (keep-alive),
/// the token travels only in the `X-Plex-Token` header, and redirects are not followed.
#[derive(Clone)]
pub struct PlexClient {
    http: reqwest::Client,
    /// Base URL without a trailing slash (may carry a path prefix for reverse proxies).
    base: String,
    /// `scheme://host:port`, used in transport error messages.
    origin: String,
    format: WireFormat,
    /// Set once Plex is seen to ignore (or reject) the undocumented `file=` filter, or by configuration.
    file_filter_off: Arc<AtomicBool>,
}

impl fmt::Debug for PlexClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the token (in the client's default headers) can never be printed.
        f.debug_struct("PlexClient")
            .field("base", &self.base)
            .field("format", &self.format)
            .field(
                "file_filter_off",
                &self.file_filter_off.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// A raw answer: status and the fully read body (reading it all returns the connection to the pool).
struct Answer {
    status: StatusCode,
    body: bytes::Bytes,
}

/// Outcome of the `file=` fast path.
enum FastPath {
    Found(Box<Item>),
    NotFound,
    Unsupported,
}

impl PlexClient {
    /// Build a client for the Plex server at `base_url` (e.g. `http://plex:32400`).
    ///
    /// `timeout` bounds each whole request (connect + answer + body). The base URL must be http(s)
    /// and must not carry a query: the token goes in `token`, never in URLs (URLs get logged).
    pub fn new(
        base_url: &str,
        token: String,
        timeout: Duration,
        format: WireFormat,
    ) -> Result<Self, PlexError> {
        // Never echo base_url in these errors: a misconfigured one may contain the token.
        let url = Url::parse(base_url.trim())
            .map_err(|e| PlexError::Invalid(format!("Plex base URL is not a valid URL ({e})")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(PlexError::Invalid(
                "Plex base URL must start with http:// or https://".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(PlexError::Invalid(
                "Plex base URL must not have a query or fragment; put the token in `token`".into(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| PlexError::Invalid("Plex base URL has no host".into()))?;
        let origin = match url.port() {
            Some(p) => format!("{}://{}:{}", url.scheme(), host, p),
            None => format!("{}://{}", url.scheme(), host),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(PlexError::Invalid("the Plex token is empty".into()));
        }
        let mut token_value = HeaderValue::from_str(token).map_err(|_| {
            PlexError::Invalid("the Plex token has characters not allowed in an HTTP header".into())
        })?;
        // Marked sensitive so hyper/reqwest never print it in debug output.
        token_value.set_sensitive(true);

        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-plex-token"), token_value);
        // Identity headers are "typically required" (PMSSPEC description.md); autopulse/autoscan work
        // without them, but sending them costs nothing and shows relayarr in Plex's device list.
        headers.insert(
            HeaderName::from_static("x-plex-client-identifier"),
            HeaderValue::from_static("relayarr"),
        );
        headers.insert(
            HeaderName::from_static("x-plex-product"),
            HeaderValue::from_static("relayarr"),
        );

        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| PlexError::Invalid(format!("could not build the HTTP client: {e}")))?;

        Ok(PlexClient {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            origin,
            format,
            file_filter_off: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Enable or disable the undocumented `file=<basename>` fast path (enabled by default; it turns
    /// itself off the first time Plex is seen to ignore the filter). Results are always verified.
    pub fn with_file_filter(self, enabled: bool) -> Self {
        self.file_filter_off.store(!enabled, Ordering::Relaxed);
        self
    }

    /// Whether the `file=` fast path is currently used.
    pub fn file_filter_enabled(&self) -> bool {
        !self.file_filter_off.load(Ordering::Relaxed)
    }

    /// The format this client asks for.
    pub fn format(&self) -> WireFormat {
        self.format
    }

    // ---------------------------------------------------------------- calls

    /// `GET /library/sections`: every library section with its root folders (notes §2).
    pub async fn sections(&self) -> Result<Vec<Section>, PlexError> {
        let path = "/library/sections";
        let answer = self.request(Method::GET, path, &[], None).await?;
        expect_status(&answer, path, false)?;
        parse_sections(&answer.body).map_err(|reason| parse_error(path, reason))
    }

    /// Partial scan of one folder: **GET** `/library/sections/{id}/refresh?path=<folder>` (notes §3:
    /// PUT answers 404 since PMS 1.32.7.7484). The folder is form-encoded (space → `+`). An empty
    /// folder is refused: without `path=` Plex scans the whole library.
    pub async fn scan(&self, section_key: &str, folder: &str) -> Result<(), PlexError> {
        let path = scan_path(section_key, folder)?;
        let answer = self.request(Method::GET, &path, &[], None).await?;
        // 200 with an empty or text/html body; the scan then runs asynchronously (notes §3).
        expect_status(&answer, &path, false)
    }

    /// `GET /library/metadata/{id}`; 404 → `None`.
    pub async fn metadata(&self, rating_key: &str) -> Result<Option<Item>, PlexError> {
        let path = format!(
            "/library/metadata/{}",
            path_segment(rating_key, "rating key")?
        );
        let answer = self.request(Method::GET, &path, &[], None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_status(&answer, &path, false)?;
        let items = parse_items(&answer.body).map_err(|r| parse_error(&path, r))?;
        Ok(items.into_iter().next())
    }

    /// `GET /library/metadata/{id}/allLeaves`: every episode of a show or season (notes §4, Gotcha 5:
    /// built from the rating key, never from the show's `key`, which ends in `/children`).
    pub async fn all_leaves(&self, rating_key: &str) -> Result<Vec<Item>, PlexError> {
        let path = format!(
            "/library/metadata/{}/allLeaves?includeGuids=1",
            path_segment(rating_key, "rating key")?
        );
        let answer = self.request(Method::GET, &path, &[], None).await?;
        expect_status(&answer, &path, false)?;
        parse_items(&answer.body).map_err(|r| parse_error(&path, r))
    }

    /// `GET /library/sections/{id}/all?type=N[&sort=..]&includeGuids=1`, paged with the
    /// `X-Plex-Container-Start`/`-Size` **request headers** (as PLEXAPI `fetchItems` sends them).
    pub async fn list_section(
        &self,
        section_key: &str,
        type_num: u8,
        sort: Option<&str>,
        start: u32,
        size: u32,
    ) -> Result<Vec<Item>, PlexError> {
        Ok(self
            .list_page(section_key, type_num, sort, &[], start, size)
            .await?
            .0)
    }

    /// Find a show whose `Location@path` equals `show_folder` (trailing separators ignored).
    ///
    /// Walks the section's shows (type 2). If listings carry no `Location` children (unverified
    /// whether PMS includes them there, notes "Not verified"), reads `/library/metadata/{id}` of at
    /// most a few candidates, those whose title matches the folder name (without " (year)") first.
    pub async fn find_show_by_folder(
        &self,
        section_key: &str,
        show_folder: &str,
    ) -> Result<Option<Item>, PlexError> {
        if show_folder.trim().is_empty() {
            return Err(PlexError::Invalid("empty show folder".into()));
        }
        let shows = self.all_shows(section_key).await?;
        if let Some(show) = shows
            .iter()
            .find(|s| s.locations.iter().any(|l| same_folder(l, show_folder)))
        {
            return Ok(Some(show.clone()));
        }
        let wanted = normalise_title(&folder_title(show_folder));
        let mut candidates: Vec<(u8, &Item)> = shows
            .iter()
            .filter(|s| s.locations.is_empty())
            .map(|s| {
                let title = normalise_title(s.title.as_deref().unwrap_or_default());
                (title_rank(&title, &wanted), s)
            })
            .collect();
        candidates.sort_by_key(|(rank, _)| *rank);
        for (_, candidate) in candidates.into_iter().take(MAX_LOCATION_FETCHES) {
            if let Some(full) = self.metadata(&candidate.rating_key).await? {
                if full.locations.iter().any(|l| same_folder(l, show_folder)) {
                    return Ok(Some(full));
                }
            }
        }
        Ok(None)
    }

    /// Find the episode item for one file. See [`PlexClient::find_episodes`] for the order of lookups.
    pub async fn find_episode(
        &self,
        section_key: &str,
        show_folder: Option<&str>,
        file: &str,
        season: Option<i32>,
        episode: Option<i32>,
    ) -> Result<Option<Item>, PlexError> {
        let want = EpisodeWant {
            file: file.to_string(),
            season,
            episode,
        };
        let mut found = self
            .find_episodes(section_key, show_folder, std::slice::from_ref(&want))
            .await?;
        Ok(found.pop().flatten())
    }

    /// Find the episode items for several files of one show, in order of `wants`.
    ///
    /// 1. The optional `type=4&file=<basename>` fast path (undocumented; results always verified
    ///    by `Part@file`; turned off for good once Plex is seen to ignore it).
    /// 2. ONE show lookup by folder + ONE `allLeaves`, matched by `Part@file`, then by
    ///    season/episode numbers. A number match may not carry the file yet (an upgrade not yet
    ///    scanned): check [`Item::has_file`] when that matters.
    /// 3. ONE recently-added listing (`type=4&sort=addedAt:desc`, 50 items) by `Part@file`.
    pub async fn find_episodes(
        &self,
        section_key: &str,
        show_folder: Option<&str>,
        wants: &[EpisodeWant],
    ) -> Result<Vec<Option<Item>>, PlexError> {
        let mut found: Vec<Option<Item>> = vec![None; wants.len()];
        for (slot, want) in found.iter_mut().zip(wants) {
            if !self.file_filter_enabled() {
                break;
            }
            if let FastPath::Found(item) = self
                .fast_path(section_key, TYPE_EPISODE, &want.file)
                .await?
            {
                *slot = Some(*item);
            }
        }

        if found.iter().any(Option::is_none) {
            if let Some(folder) = show_folder.filter(|f| !f.trim().is_empty()) {
                if let Some(show) = self.find_show_by_folder(section_key, folder).await? {
                    let leaves = self.all_leaves(&show.rating_key).await?;
                    for (slot, want) in found.iter_mut().zip(wants) {
                        if slot.is_none() {
                            *slot = leaves.iter().find(|l| l.has_file(&want.file)).cloned();
                        }
                    }
                    for (slot, want) in found.iter_mut().zip(wants) {
                        if let (None, Some(s), Some(e)) = (&slot, want.season, want.episode) {
                            *slot = leaves
                                .iter()
                                .find(|l| {
                                    l.kind == "episode"
                                        && l.season == Some(s)
                                        && l.episode == Some(e)
                                })
                                .cloned();
                        }
                    }
                }
            }
        }

        if found.iter().any(Option::is_none) {
            let recent = self
                .list_section(
                    section_key,
                    TYPE_EPISODE,
                    Some("addedAt:desc"),
                    0,
                    RECENT_WINDOW,
                )
                .await?;
            for (slot, want) in found.iter_mut().zip(wants) {
                if slot.is_none() {
                    *slot = recent.iter().find(|i| i.has_file(&want.file)).cloned();
                }
            }
        }
        Ok(found)
    }

    /// Find the movie item for a file: the verified `type=1&file=` fast path, then the 50 most
    /// recently added movies, matched by `Part@file`.
    pub async fn find_movie(
        &self,
        section_key: &str,
        file: &str,
    ) -> Result<Option<Item>, PlexError> {
        if self.file_filter_enabled() {
            if let FastPath::Found(item) = self.fast_path(section_key, TYPE_MOVIE, file).await? {
                return Ok(Some(*item));
            }
        }
        let recent = self
            .list_section(
                section_key,
                TYPE_MOVIE,
                Some("addedAt:desc"),
                0,
                RECENT_WINDOW,
            )
            .await?;
        Ok(recent.into_iter().find(|i| i.has_file(file)))
    }

    /// `POST /library/metadata/{id}/posters` with the raw image bytes as the body (NOT multipart;
    /// notes §5, PLEXAPI `uploadPoster`). 200, 201 and 204 count as success; the body is ignored.
    pub async fn upload_poster(
        &self,
        rating_key: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(), PlexError> {
        if bytes.is_empty() {
            return Err(PlexError::Invalid("empty poster image".into()));
        }
        let path = format!(
            "/library/metadata/{}/posters",
            path_segment(rating_key, "rating key")?
        );
        let answer = self
            .request(Method::POST, &path, &[], Some((bytes, content_type)))
            .await?;
        expect_status(&answer, &path, true)
    }

    /// Lock the poster of ONE item: `PUT /library/sections/{sid}/all?id={ratingKey}&thumb.locked=1&type={n}`
    /// (notes §5, PLEXAPI `lockPoster`). An empty rating key is refused: without `id=` the edit
    /// would apply to every item of that type (Gotcha 7).
    pub async fn lock_thumb(
        &self,
        section_key: &str,
        rating_key: &str,
        type_num: u8,
    ) -> Result<(), PlexError> {
        let path = section_edit_path(
            section_key,
            rating_key,
            type_num,
            &[("thumb.locked", "1".to_string())],
        )?;
        self.put(&path).await
    }

    /// Remove one label from ONE item:
    /// `PUT /library/sections/{sid}/all?id=..&label.locked=1&label[].tag.tag-=<label>&type=..`
    /// (notes §5, PLEXAPI `removeLabel` → `_tagHelper`).
    pub async fn remove_label(
        &self,
        section_key: &str,
        rating_key: &str,
        type_num: u8,
        label: &str,
    ) -> Result<(), PlexError> {
        let path = remove_label_path(section_key, rating_key, type_num, label)?;
        self.put(&path).await
    }

    // ---------------------------------------------------------------- internals

    async fn put(&self, path: &str) -> Result<(), PlexError> {
        let answer = self.request(Method::PUT, path, &[], None).await?;
        expect_status(&answer, path, true)
    }

    /// One page of `/library/sections/{id}/all`, with `extra` query pairs; returns the items and
    /// the container's total size when Plex reports it.
    async fn list_page(
        &self,
        section_key: &str,
        type_num: u8,
        sort: Option<&str>,
        extra: &[(&str, &str)],
        start: u32,
        size: u32,
    ) -> Result<(Vec<Item>, Option<usize>), PlexError> {
        let section = path_segment(section_key, "section key")?;
        // The serializer is not Send: it must be gone before the await below.
        let path = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("type", &type_num.to_string());
            if let Some(sort) = sort {
                query.append_pair("sort", sort);
            }
            for (k, v) in extra {
                query.append_pair(k, v);
            }
            // Listings carry Guid children only with includeGuids=1 (notes §4, PLEXAPI
            // _buildSearchKey).
            query.append_pair("includeGuids", "1");
            format!("/library/sections/{section}/all?{}", query.finish())
        };
        let headers = [
            ("x-plex-container-start", start.to_string()),
            ("x-plex-container-size", size.to_string()),
        ];
        let answer = self.request(Method::GET, &path, &headers, None).await?;
        expect_status(&answer, &path, false)?;
        let root = parse_body(&answer.body).map_err(|r| parse_error(&path, r))?;
        let total = root.int("totalSize").and_then(|n| usize::try_from(n).ok());
        Ok((items_from_container(&root), total))
    }

    /// Every show of a section, page by page, defensive against servers that ignore paging.
    async fn all_shows(&self, section_key: &str) -> Result<Vec<Item>, PlexError> {
        let mut shows: Vec<Item> = Vec::new();
        let mut start = 0u32;
        for _ in 0..MAX_SHOW_PAGES {
            let (page, total) = self
                .list_page(section_key, TYPE_SHOW, None, &[], start, SHOW_PAGE)
                .await?;
            let n = page.len();
            // A server that ignores Start answers the first page again: stop instead of looping.
            if start > 0
                && page.first().map(|i| &i.rating_key) == shows.first().map(|i| &i.rating_key)
            {
                break;
            }
            shows.extend(page);
            start = start.saturating_add(SHOW_PAGE);
            let done_by_total = total.is_some_and(|t| shows.len() >= t);
            // Fewer than asked: last page. More than asked: the server ignored Size and sent all.
            if n != SHOW_PAGE as usize || done_by_total {
                break;
            }
        }
        Ok(shows)
    }

    /// The undocumented `file=<basename>` filter (notes §4: used by media_preview_generator only).
    /// Every result is verified by `Part@file`; a listing of several non-matching items means Plex
    /// ignores the filter, so the fast path is switched off for this client.
    async fn fast_path(
        &self,
        section_key: &str,
        type_num: u8,
        file: &str,
    ) -> Result<FastPath, PlexError> {
        let name = basename(file);
        if name.is_empty() {
            return Ok(FastPath::NotFound);
        }
        let page = self
            .list_page(
                section_key,
                type_num,
                None,
                &[("file", name)],
                0,
                FAST_PATH_SIZE,
            )
            .await;
        let items = match page {
            Ok((items, _)) => items,
            // A 400-style rejection of the unknown filter: stop using it. 401/404/5xx are real errors.
            Err(PlexError::Status { status, .. })
                if (400..500).contains(&status) && !matches!(status, 401 | 404 | 408 | 429) =>
            {
                self.disable_file_filter(status.to_string().as_str());
                return Ok(FastPath::Unsupported);
            }
            Err(e) => return Err(e),
        };
        if let Some(item) = items.iter().find(|i| i.has_file(file)) {
            return Ok(FastPath::Found(Box::new(item.clone())));
        }
        if items.len() > 1 {
            self.disable_file_filter("it returned unrelated items");
            return Ok(FastPath::Unsupported);
        }
        Ok(FastPath::NotFound)
    }

    fn disable_file_filter(&self, why: &str) {
        if !self.file_filter_off.swap(true, Ordering::Relaxed) {
            tracing::info!(
                reason = why,
                "Plex ignores the undocumented file= filter; finding items by listings instead"
            );
        }
    }

    /// Send one request and read the whole body. `path` is relative to the base URL.
    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<(Vec<u8>, Option<&str>)>,
    ) -> Result<Answer, PlexError> {
        let url = format!("{}{}", self.base, path);
        let started = Instant::now();
        let mut builder = self.http.request(method.clone(), url);
        if self.format == WireFormat::Json {
            builder = builder.header(ACCEPT, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some((bytes, content_type)) = body {
            if let Some(ct) = content_type {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            builder = builder.body(bytes);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&method, path, e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&method, path, e))?;
        tracing::debug!(
            %method,
            path,
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plex request"
        );
        Ok(Answer { status, body })
    }

    fn transport_error(&self, method: &Method, path: &str, e: reqwest::Error) -> PlexError {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        // without_url(): the URL never holds the token, but keep messages short and uniform.
        let detail = error_chain(&e.without_url());
        PlexError::Transport(format!(
            "{method} {path} at {} {what}: {detail}",
            self.origin
        ))
    }
}

/// Map a status to success or a [`PlexError`]. `strict` accepts only 200/201/204 (PLEXAPI
/// `query()`), otherwise any 2xx.
fn expect_status(answer: &Answer, path: &str, strict: bool) -> Result<(), PlexError> {
    status_result(answer.status.as_u16(), path, strict)
}

fn status_result(status: u16, path: &str, strict: bool) -> Result<(), PlexError> {
    let ok = if strict {
        matches!(status, 200 | 201 | 204)
    } else {
        (200..300).contains(&status)
    };
    if ok {
        Ok(())
    } else if status == 401 {
        // Decide on the status only: the 401 body differs between modes (notes §1).
        Err(PlexError::Unauthorized)
    } else {
        Err(PlexError::Status {
            status,
            path: path.to_string(),
        })
    }
}

fn parse_error(path: &str, reason: String) -> PlexError {
    PlexError::Parse {
        path: path.to_string(),
        reason,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

// -------------------------------------------------------------------- URL building

/// Percent-encode everything but RFC 3986 unreserved characters (Python `quote(safe='')`);
/// with `keep_slash`, `/` is kept too (Python `quote()` default).
fn pct_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A non-empty, percent-encoded path segment (section keys and rating keys are plain numbers in
/// Plex, but nothing caller-supplied may change the path).
fn path_segment(value: &str, what: &str) -> Result<String, PlexError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(PlexError::Invalid(format!("empty {what}")));
    }
    Ok(pct_encode(value, false))
}

fn scan_path(section_key: &str, folder: &str) -> Result<String, PlexError> {
    let section = path_segment(section_key, "section key")?;
    if folder.trim().is_empty() {
        // Without path= Plex scans the whole section: never do that by accident.
        return Err(PlexError::Invalid(
            "empty scan folder (a full-library scan is never sent)".into(),
        ));
    }
    // Form encoding (space → '+', '/' → %2F) as PLEXAPI quote_plus / autoscan url.Values (notes §3).
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("path", folder)
        .finish();
    Ok(format!("/library/sections/{section}/refresh?{query}"))
}

/// The ONLY builder of `PUT /library/sections/{sid}/all`: it always starts with one `id=`.
/// Keys are written literally (so `[]` stays as is) and values are given already encoded,
/// matching PLEXAPI `utils.joinArgs` (keys sorted case-insensitively, unencoded; notes §5).
fn section_edit_path(
    section_key: &str,
    rating_key: &str,
    type_num: u8,
    edits: &[(&str, String)],
) -> Result<String, PlexError> {
    let section = path_segment(section_key, "section key")?;
    let id = rating_key.trim();
    if id.is_empty() {
        return Err(PlexError::Invalid(
            "empty rating key: a section edit without id= would change every item".into(),
        ));
    }
    // One item only: a comma would edit several, anything else would break the query.
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PlexError::Invalid(
            "rating key must be a single plain id".into(),
        ));
    }
    if type_num == 0 {
        return Err(PlexError::Invalid(
            "type must be set (1 movie, 4 episode...)".into(),
        ));
    }
    let mut query = format!("id={id}");
    for (key, value) in edits {
        query.push('&');
        query.push_str(key);
        query.push('=');
        query.push_str(value);
    }
    query.push_str(&format!("&type={type_num}"));
    Ok(format!("/library/sections/{section}/all?{query}"))
}

fn remove_label_path(
    section_key: &str,
    rating_key: &str,
    type_num: u8,
    label: &str,
) -> Result<String, PlexError> {
    if label.trim().is_empty() {
        return Err(PlexError::Invalid("empty label".into()));
    }
    // PLEXAPI _tagHelper quotes each tag once (safe='/'), joins with ',', then joinArgs quotes the
    // value again (safe=''): "Overlay" is unchanged; a space becomes %2520 (notes §5).
    let value = pct_encode(&pct_encode(label, true), false);
    section_edit_path(
        section_key,
        rating_key,
        type_num,
        &[
            ("label.locked", "1".to_string()),
            ("label[].tag.tag-", value),
        ],
    )
}

// -------------------------------------------------------------------- path matching

/// Plex on Windows reports `D:\TV\...`; AUTOPULSE compares those case-insensitively (Gotcha 3).
fn looks_windows(p: &str) -> bool {
    let b = p.as_bytes();
    p.contains('\\') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
}

/// File paths: exact on Unix; case- and separator-insensitive when either looks like Windows.
fn same_file(a: &str, b: &str) -> bool {
    if looks_windows(a) || looks_windows(b) {
        let norm = |s: &str| s.replace('/', "\\").to_lowercase();
        norm(a) == norm(b)
    } else {
        a == b
    }
}

/// Folder paths: like [`same_file`] with trailing separators ignored.
fn same_folder(a: &str, b: &str) -> bool {
    let trim = |s: &str| -> String {
        let t = s.trim_end_matches(['/', '\\']);
        if t.is_empty() {
            s.chars().take(1).collect()
        } else {
            t.to_string()
        }
    };
    same_file(&trim(a), &trim(b))
}

fn basename(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The folder's last component without trailing "(2020)", "[tag]" or "{tvdb-1}" groups.
fn folder_title(folder: &str) -> String {
    let mut name = basename(folder.trim_end_matches(['/', '\\']))
        .trim()
        .to_string();
    loop {
        let trimmed = name.trim_end();
        let close = match trimmed.chars().last() {
            Some(')') => '(',
            Some(']') => '[',
            Some('}') => '{',
            _ => break,
        };
        match trimmed.rfind(close) {
            Some(open) if open > 0 => name = trimmed[..open].trim_end().to_string(),
            _ => break,
        }
    }
    name
}

/// Lowercase alphanumerics only, so "Marvel's Daredevil" equals "Marvels Daredevil".
fn normalise_title(title: &str) -> String {
    title
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// 0 = same title, 1 = one contains the other, 2 = unrelated.
fn title_rank(title: &str, wanted: &str) -> u8 {
    if title.is_empty() || wanted.is_empty() {
        2
    } else if title == wanted {
        0
    } else if title.contains(wanted) || wanted.contains(title) {
        1
    } else {
        2
    }
}

// -------------------------------------------------------------------- parsing

/// A format-neutral element: XML elements and JSON objects both map to this, with every scalar
/// value kept as text. Lenient typed accessors then cover both JSON typings (notes Gotcha 4).
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty string value (a number is accepted and kept as its decimal text).
    fn text(&self, key: &str) -> Option<String> {
        self.attr(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// An integer given as a number, a numeric string, or a float with no fraction.
    fn int(&self, key: &str) -> Option<i64> {
        let v = self.attr(key)?.trim();
        v.parse::<i64>().ok().or_else(|| {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
    }

    fn int32(&self, key: &str) -> Option<i32> {
        self.int(key).and_then(|n| i32::try_from(n).ok())
    }

    /// A flag given as `true`/`false`, `1`/`0` or `"1"`/`"0"`; missing means false.
    fn flag(&self, key: &str) -> bool {
        matches!(
            self.attr(key)
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref(),
            Some("1" | "true")
        )
    }

    fn kids<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Parse a body as XML or JSON, decided by its first non-whitespace byte, whatever was asked.
fn parse_body(body: &[u8]) -> Result<Node, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    match first.map(|i| body[i]) {
        None => Err("empty body".into()),
        Some(b'<') => {
            let text = std::str::from_utf8(body).map_err(|e| format!("XML is not UTF-8: {e}"))?;
            let doc = roxmltree::Document::parse(text).map_err(|e| format!("bad XML: {e}"))?;
            Ok(xml_to_node(doc.root_element()))
        }
        Some(b'{') => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
            let obj = value
                .as_object()
                .ok_or_else(|| "JSON body is not an object".to_string())?;
            match obj.get("MediaContainer").and_then(|v| v.as_object()) {
                Some(container) => Ok(json_to_node("MediaContainer", container)),
                None => Ok(json_to_node("", obj)),
            }
        }
        // Never echo the body: it could be anything, e.g. a proxy's page.
        Some(_) => Err(format!(
            "body is neither XML nor JSON ({} bytes)",
            body.len()
        )),
    }
}

fn xml_to_node(el: roxmltree::Node<'_, '_>) -> Node {
    Node {
        name: el.tag_name().name().to_string(),
        attrs: el
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect(),
        children: el
            .children()
            .filter(|c| c.is_element())
            .map(xml_to_node)
            .collect(),
    }
}

/// JSON object → Node: scalars become attributes (numbers as text, bools as "1"/"0"), arrays of
/// objects become repeated children, a nested object becomes one child (e.g. a SearchResult's
/// `Metadata`, which is an object there, notes §4). Missing arrays simply give no children.
fn json_to_node(name: &str, obj: &serde_json::Map<String, serde_json::Value>) -> Node {
    use serde_json::Value;
    let mut node = Node {
        name: name.to_string(),
        ..Node::default()
    };
    for (key, value) in obj {
        match value {
            Value::String(s) => node.attrs.push((key.clone(), s.clone())),
            Value::Number(n) => node.attrs.push((key.clone(), n.to_string())),
            Value::Bool(b) => node
                .attrs
                .push((key.clone(), if *b { "1" } else { "0" }.to_string())),
            Value::Array(values) => node.children.extend(
                values
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|o| json_to_node(key, o)),
            ),
            Value::Object(o) => node.children.push(json_to_node(key, o)),
            Value::Null => {}
        }
    }
    node
}

/// Parse a `/library/sections` answer (XML or JSON).
pub fn parse_sections(body: &[u8]) -> Result<Vec<Section>, String> {
    let root = parse_body(body)?;
    Ok(root
        .children
        .iter()
        .filter(|c| c.name == "Directory")
        .filter_map(|d| {
            Some(Section {
                key: d.text("key")?,
                kind: d.text("type").unwrap_or_default(),
                title: d.text("title").unwrap_or_default(),
                refreshing: d.flag("refreshing"),
                locations: d.kids("Location").filter_map(|l| l.text("path")).collect(),
            })
        })
        .collect())
}

/// Parse any metadata container (`/all`, `/library/metadata/..`, `/allLeaves`, `/library/search`)
/// in XML or JSON into items.
pub fn parse_items(body: &[u8]) -> Result<Vec<Item>, String> {
    Ok(items_from_container(&parse_body(body)?))
}

/// Element names that carry items: XML uses Video (movies, episodes) and Directory (shows,
/// seasons); JSON puts all of them under Metadata (notes §4).
const ITEM_ELEMENTS: [&str; 5] = ["Metadata", "Video", "Directory", "Track", "Photo"];

fn items_from_container(root: &Node) -> Vec<Item> {
    let default_section = root.text("librarySectionID");
    let mut items = Vec::new();
    for child in &root.children {
        if child.name == "SearchResult" {
            // /library/search wraps each hit: {"score":..,"Metadata":{..}} (notes §4).
            items.extend(
                child
                    .children
                    .iter()
                    .filter(|c| ITEM_ELEMENTS.contains(&c.name.as_str()))
                    .filter_map(|c| item_from_node(c, default_section.as_deref())),
            );
        } else if ITEM_ELEMENTS.contains(&child.name.as_str()) {
            items.extend(item_from_node(child, default_section.as_deref()));
        }
    }
    items
}

fn item_from_node(node: &Node, default_section: Option<&str>) -> Option<Item> {
    let rating_key = node.text("ratingKey")?;
    let kind = node.text("type").unwrap_or_default();
    let (season, episode) = if kind == "season" {
        (node.int32("index"), None)
    } else {
        (node.int32("parentIndex"), node.int32("index"))
    };
    let guids = node
        .text("guid")
        .into_iter()
        .chain(node.kids("Guid").filter_map(|g| g.text("id")))
        .collect();
    Some(Item {
        rating_key,
        kind,
        title: node.text("title"),
        show_title: node.text("grandparentTitle"),
        show_key: node.text("grandparentRatingKey"),
        year: node.int32("year"),
        season,
        episode,
        section_id: node
            .text("librarySectionID")
            .or_else(|| default_section.map(str::to_string)),
        files: node
            .kids("Media")
            .flat_map(|m| m.kids("Part"))
            .filter_map(|p| p.text("file"))
            .collect(),
        guids,
        locations: node
            .kids("Location")
            .filter_map(|l| l.text("path"))
            .collect(),
        thumb_locked: node
            .kids("Field")
            .any(|f| f.attr("name") == Some("thumb") && f.flag("locked")),
        labels: node.kids("Label").filter_map(|l| l.text("tag")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTIONS_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MediaContainer size="2" allowSync="0" title1="Plex Library">
  <Directory allowSync="1" art="/:/resources/movie-fanart.jpg" composite="/library/sections/1/composite/1700000000"
     filters="1" refreshing="0" thumb="/:/resources/movie.png" key="1" type="movie" title="Movies"
     agent="tv.plex.agents.movie" scanner="Plex Movie" language="en-US"
     uuid="075a684f-f5dc-4468-86d5-235a60fe7718" updatedAt="1700000000" createdAt="1690000000"
     scannedAt="1700000100" content="1" directory="1" contentChangedAt="4677" hidden="0">
    <Location id="1" path="/data/movies" />
  </Directory>
  <Directory allowSync="1" art="/:/resources/show-fanart.jpg" filters="1" refreshing="1"
     thumb="/:/resources/show.png" key="2" type="show" title="TV Shows" agent="tv.plex.agents.series"
     scanner="Plex TV Series" language="en-US" uuid="acd29c68-aff3-4c23-8b8d-46066fe06d30"
     updatedAt="1700000000" createdAt="1690000000" scannedAt="1700000200" content="1" directory="1" hidden="0">
    <Location id="2" path="/data/tv" />
    <Location id="3" path="/data/tv2" />
  </Directory>
</MediaContainer>"#;

    const SECTIONS_JSON: &str = r#"{"MediaContainer":{"size":2,"allowSync":false,"title1":"Plex Library","Directory":[
 {"allowSync":true,"art":"/:/resources/movie-fanart.jpg","composite":"/library/sections/1/composite/1700000000",
  "filters":true,"refreshing":false,"thumb":"/:/resources/movie.png","key":"1","type":"movie","title":"Movies",
  "agent":"tv.plex.agents.movie","scanner":"Plex Movie","language":"en-US","uuid":"075a684f-...",
  "updatedAt":1700000000,"createdAt":1690000000,"scannedAt":1700000100,"content":true,"directory":true,
  "contentChangedAt":4677,"hidden":0,"Location":[{"id":1,"path":"/data/movies"}]},
 {"key":"2","type":"show","title":"TV Shows","agent":"tv.plex.agents.series","refreshing":true,
  "Location":[{"id":2,"path":"/data/tv"},{"id":3,"path":"/data/tv2"}]}]}}"#;

    const EPISODE_XML: &str = r#"<MediaContainer size="1" allowSync="1" identifier="com.plexapp.plugins.library" librarySectionID="2"
   librarySectionTitle="TV Shows" librarySectionUUID="b611bd29-cd72-4e30-ad86-34d06b7a0153">
  <Video ratingKey="48049" key="/library/metadata/48049" parentRatingKey="48047" grandparentRatingKey="45520"
     guid="plex://episode/6332ef1e8848240ba522f9df" parentGuid="plex://season/618b89208dde18df707ad15c"
     grandparentGuid="plex://show/5e16253691c20300412003a8" type="episode" title="Episode 1"
     grandparentKey="/library/metadata/45520" parentKey="/library/metadata/48047"
     librarySectionTitle="TV Shows" librarySectionID="2" librarySectionKey="/library/sections/2"
     grandparentTitle="Alice in Borderland" parentTitle="Season 2" index="1" parentIndex="2" year="2020"
     thumb="/library/metadata/48049/thumb/1672202197" duration="2915744" originallyAvailableAt="2022-12-22"
     addedAt="1671801218" updatedAt="1672202197">
    <Media id="51375" duration="2915744" videoResolution="1080" container="mkv" videoCodec="h264">
      <Part id="80750" key="/library/parts/80750/1671790200/file.mkv" duration="2915744" size="2227846737"
         container="mkv" file="/data/tv/Alice in Borderland (2020)/Season 02/Alice in Borderland (2020) - S02E01 - Episode 1 WEBDL-1080p.mkv" />
    </Media>
    <Guid id="imdb://tt13702212" />
    <Guid id="tmdb://3975867" />
    <Guid id="tvdb://8830735" />
    <Field locked="1" name="thumb" />
    <Label id="1234" tag="Overlay" />
  </Video>
</MediaContainer>"#;

    const EPISODE_JSON: &str = r#"{"MediaContainer":{"size":1,"librarySectionID":2,"Metadata":[{"ratingKey":"48049","key":"/library/metadata/48049",
 "parentRatingKey":"48047","grandparentRatingKey":"45520","guid":"plex://episode/6332ef1e8848240ba522f9df",
 "type":"episode","title":"Episode 1","grandparentTitle":"Alice in Borderland","parentTitle":"Season 2",
 "index":1,"parentIndex":2,"librarySectionID":2,"librarySectionKey":"/library/sections/2",
 "thumb":"/library/metadata/48049/thumb/1672202197","addedAt":1671801218,
 "Media":[{"id":51375,"Part":[{"id":80750,"key":"/library/parts/80750/1671790200/file.mkv",
   "file":"/data/tv/Alice in Borderland (2020)/Season 02/...S02E01....mkv","size":2227846737}]}],
 "Guid":[{"id":"imdb://tt13702212"},{"id":"tmdb://3975867"},{"id":"tvdb://8830735"}]}]}}"#;

    fn expected_sections() -> Vec<Section> {
        vec![
            Section {
                key: "1".into(),
                kind: "movie".into(),
                title: "Movies".into(),
                refreshing: false,
                locations: vec!["/data/movies".into()],
            },
            Section {
                key: "2".into(),
                kind: "show".into(),
                title: "TV Shows".into(),
                refreshing: true,
                locations: vec!["/data/tv".into(), "/data/tv2".into()],
            },
        ]
    }

    #[test]
    fn parses_sections_xml_and_json_samples() {
        assert_eq!(
            parse_sections(SECTIONS_XML.as_bytes()).expect("xml"),
            expected_sections()
        );
        assert_eq!(
            parse_sections(SECTIONS_JSON.as_bytes()).expect("json"),
            expected_sections()
        );
    }

    #[test]
    fn parses_episode_container_xml() {
        let items = parse_items(EPISODE_XML.as_bytes()).expect("xml");
        assert_eq!(items.len(), 1);
        let e = &items[0];
        assert_eq!(e.rating_key, "48049");
        assert_eq!(e.kind, "episode");
        assert_eq!(e.title.as_deref(), Some("Episode 1"));
        assert_eq!(e.show_title.as_deref(), Some("Alice in Borderland"));
        assert_eq!((e.season, e.episode), (Some(2), Some(1)));
        assert_eq!(e.section_id.as_deref(), Some("2"));
        assert_eq!(e.files, vec!["/data/tv/Alice in Borderland (2020)/Season 02/Alice in Borderland (2020) - S02E01 - Episode 1 WEBDL-1080p.mkv".to_string()]);
        assert_eq!(
            e.guids,
            vec![
                "plex://episode/6332ef1e8848240ba522f9df",
                "imdb://tt13702212",
                "tmdb://3975867",
                "tvdb://8830735"
            ]
        );
        assert!(e.thumb_locked);
        assert_eq!(e.labels, vec!["Overlay".to_string()]);
        assert!(e.locations.is_empty());
    }

    #[test]
    fn parses_episode_container_json() {
        let items = parse_items(EPISODE_JSON.as_bytes()).expect("json");
        assert_eq!(items.len(), 1);
        let e = &items[0];
        assert_eq!(e.rating_key, "48049");
        assert_eq!((e.season, e.episode), (Some(2), Some(1)));
        assert_eq!(e.section_id.as_deref(), Some("2"));
        assert_eq!(
            e.files,
            vec!["/data/tv/Alice in Borderland (2020)/Season 02/...S02E01....mkv".to_string()]
        );
        assert_eq!(e.guids.len(), 4);
        // Field and Label arrays are missing in this sample: defaults, not errors.
        assert!(!e.thumb_locked);
        assert!(e.labels.is_empty());
    }

    #[test]
    fn tolerates_the_other_json_typing() {
        // ratingKey/key numbers, librarySectionID/index strings, flags 0/1, Field.locked bool.
        let body = r#"{"MediaContainer":{"size":"1","librarySectionID":"7","Metadata":[
            {"ratingKey":48049,"key":48049,"type":"episode","index":"3","parentIndex":"1",
             "librarySectionID":"2","Field":[{"name":"thumb","locked":true}],
             "Media":[{"Part":[{"file":"/tv/a.mkv"}]}]},
            {"ratingKey":"7","type":"season","index":2.0,"Field":[{"name":"thumb","locked":0}]}]}}"#;
        let items = parse_items(body.as_bytes()).expect("json");
        assert_eq!(items[0].rating_key, "48049");
        assert_eq!((items[0].season, items[0].episode), (Some(1), Some(3)));
        assert_eq!(items[0].section_id.as_deref(), Some("2"));
        assert!(items[0].thumb_locked);
        assert_eq!(items[0].files, vec!["/tv/a.mkv".to_string()]);
        // A season's own index is its season number; it inherits the container's section.
        assert_eq!((items[1].season, items[1].episode), (Some(2), None));
        assert_eq!(items[1].section_id.as_deref(), Some("7"));
        assert!(!items[1].thumb_locked);

        let sections = r#"{"MediaContainer":{"Directory":[{"key":3,"type":"show","title":"TV","refreshing":1}]}}"#;
        let s = parse_sections(sections.as_bytes()).expect("json");
        assert_eq!(s[0].key, "3");
        assert!(s[0].refreshing);
        assert!(s[0].locations.is_empty());
    }

    #[test]
    fn missing_arrays_and_media_are_empty_not_errors() {
        let empty = parse_items(br#"{"MediaContainer":{"size":0}}"#).expect("json");
        assert!(empty.is_empty());
        let empty_xml = parse_items(b"<MediaContainer size=\"0\"/>").expect("xml");
        assert!(empty_xml.is_empty());
        let no_media =
            parse_items(br#"{"MediaContainer":{"Metadata":[{"ratingKey":"5","type":"movie"}]}}"#)
                .expect("json");
        assert_eq!(no_media.len(), 1);
        assert!(no_media[0].files.is_empty());
        assert!(no_media[0].guids.is_empty());
        // Items without a ratingKey are skipped rather than failing the whole answer.
        let odd =
            parse_items(br#"{"MediaContainer":{"Metadata":[{"type":"movie"}]}}"#).expect("json");
        assert!(odd.is_empty());
    }

    #[test]
    fn parses_search_results_json_and_xml() {
        let json = r#"{"MediaContainer":{"size":2,"SearchResult":[
            {"score":0.9,"Metadata":{"ratingKey":"45520","key":"/library/metadata/45520/children",
              "type":"show","title":"Alice in Borderland","librarySectionID":2}},
            {"score":0.5,"Directory":{"id":1,"tag":"Someone"}}]}}"#;
        let items = parse_items(json.as_bytes()).expect("json");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].rating_key, "45520");
        assert_eq!(items[0].kind, "show");

        let xml = r#"<MediaContainer size="1"><SearchResult score="0.9">
            <Video ratingKey="48049" type="episode" index="1" parentIndex="2" librarySectionID="2">
              <Media><Part file="/data/tv/x.mkv"/></Media></Video></SearchResult></MediaContainer>"#;
        let items = parse_items(xml.as_bytes()).expect("xml");
        assert_eq!(items[0].files, vec!["/data/tv/x.mkv".to_string()]);
    }

    #[test]
    fn shows_carry_locations() {
        let xml = r#"<MediaContainer librarySectionID="2"><Directory ratingKey="45520" key="/library/metadata/45520/children"
            type="show" title="Alice in Borderland"><Location path="/data/tv/Alice in Borderland (2020)"/></Directory></MediaContainer>"#;
        let items = parse_items(xml.as_bytes()).expect("xml");
        assert_eq!(
            items[0].locations,
            vec!["/data/tv/Alice in Borderland (2020)".to_string()]
        );
        assert_eq!(items[0].section_id.as_deref(), Some("2"));
    }

    #[test]
    fn bodies_are_sniffed_not_trusted() {
        assert!(parse_items(b"   ").is_err());
        assert!(parse_items(b"<!DOCTYPE html><html></html>").is_err());
        let err = parse_items(b"Not Found").expect_err("plain text");
        assert!(err.contains("neither XML nor JSON"));
        assert!(parse_items(b"\xEF\xBB\xBF \n<MediaContainer/>").is_ok());
    }

    #[test]
    fn webhook_metadata_object_parses() {
        let v: serde_json::Value = serde_json::json!({
            "librarySectionType": "show", "ratingKey": "48049", "type": "episode",
            "grandparentTitle": "Alice in Borderland", "librarySectionID": 2, "index": 1, "parentIndex": 2,
            "Guid": [{"id": "tvdb://8830735"}]
        });
        let item = Item::from_json_metadata(&v).expect("item");
        assert_eq!(item.section_id.as_deref(), Some("2"));
        assert_eq!(item.guids, vec!["tvdb://8830735".to_string()]);
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            status_result(401, "/x", false),
            Err(PlexError::Unauthorized)
        ));
        let unauthorized = PlexError::Unauthorized;
        assert!(!unauthorized.is_retryable());
        assert!(unauthorized.to_string().contains("[[plex]] token"));
        for (code, retry) in [
            (404, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (403, false),
        ] {
            let err = status_result(code, "/p", false).expect_err("error status");
            assert_eq!(err.is_retryable(), retry, "status {code}");
        }
        assert!(status_result(204, "/p", true).is_ok());
        assert!(status_result(202, "/p", true).is_err());
        assert!(status_result(202, "/p", false).is_ok());
        assert!(PlexError::Transport("x".into()).is_retryable());
        assert!(!PlexError::Invalid("x".into()).is_retryable());
    }

    #[test]
    fn lock_and_label_query_strings() {
        assert_eq!(
            section_edit_path("2", "48049", 4, &[("thumb.locked", "1".into())]).expect("lock"),
            "/library/sections/2/all?id=48049&thumb.locked=1&type=4"
        );
        assert_eq!(
            remove_label_path("2", "48049", 4, "Overlay").expect("label"),
            "/library/sections/2/all?id=48049&label.locked=1&label[].tag.tag-=Overlay&type=4"
        );
        assert_eq!(
            remove_label_path("1", "7", 1, "My Label,x").expect("label"),
            "/library/sections/1/all?id=7&label.locked=1&label[].tag.tag-=My%2520Label%252Cx&type=1"
        );
        // Never without id=, never several ids, never without type.
        for bad in ["", "  ", "1,2", "1&id=2"] {
            assert!(matches!(
                section_edit_path("2", bad, 4, &[]),
                Err(PlexError::Invalid(_))
            ));
        }
        assert!(section_edit_path("2", "1", 0, &[]).is_err());
        assert!(remove_label_path("2", "1", 4, " ").is_err());
    }

    #[test]
    fn scan_query_is_form_encoded_and_never_full() {
        assert_eq!(
            scan_path("2", "/data/tv/Alice in Borderland (2020)").expect("scan"),
            "/library/sections/2/refresh?path=%2Fdata%2Ftv%2FAlice+in+Borderland+%282020%29"
        );
        assert!(matches!(scan_path("2", " "), Err(PlexError::Invalid(_))));
        assert!(scan_path("", "/data").is_err());
    }

    #[test]
    fn path_matching_helpers() {
        assert!(same_file("/data/tv/a.mkv", "/data/tv/a.mkv"));
        assert!(!same_file("/data/tv/A.mkv", "/data/tv/a.mkv"));
        assert!(same_file(r"D:\TV\Show\A.mkv", "d:/tv/show/a.mkv"));
        assert!(same_folder("/data/tv/Show (2020)/", "/data/tv/Show (2020)"));
        assert!(!same_folder("/data/tv/Show", "/data/tv/Show 2"));
        assert!(same_folder("/", "/"));
        assert_eq!(basename("/data/tv/a b.mkv"), "a b.mkv");
        assert_eq!(
            folder_title("/data/tv/Alice in Borderland (2020)/"),
            "Alice in Borderland"
        );
        assert_eq!(folder_title("/tv/Show (2019) {tvdb-1} [x]"), "Show");
        assert_eq!(folder_title("/tv/(500) Days"), "(500) Days");
        assert_eq!(
            title_rank(
                &normalise_title("Marvel's Daredevil"),
                &normalise_title("Marvels Daredevil")
            ),
            0
        );
    }

    #[test]
    fn constructor_refuses_bad_input_without_echoing_it() {
        let t = Duration::from_secs(5);
        let err = PlexClient::new(
            "http://plex:32400/?X-Plex-Token=sekrit",
            "tok".into(),
            t,
            WireFormat::Json,
        )
        .expect_err("query refused");
        assert!(!err.to_string().contains("sekrit"));
        assert!(PlexClient::new("ftp://plex", "tok".into(), t, WireFormat::Json).is_err());
        assert!(PlexClient::new("http://plex:32400", " ".into(), t, WireFormat::Json).is_err());
        let client = PlexClient::new("http://plex:32400/", "sekrit".into(), t, WireFormat::Xml)
            .expect("client");
        assert!(!format!("{client:?}").contains("sekrit"));
        assert_eq!(client.base, "http://plex:32400");
    }
}
