//! One attempt of a Plex sync action, as the delivery engine runs it.
//!
//! A delivery to a Plex server is a debounced group: every event that touched one folder
//! during a burst (a season pack: N imports, "import complete", the deletes of the files it
//! upgraded), or one Plex item that Plex or Tautulli announced as new. An attempt:
//! 1. maps the folder to Plex's view and picks the library section by the longest
//!    `Location` (explained in the error when nothing matches);
//! 2. asks Plex for a partial scan of that folder (a GET; never a full-library scan). A
//!    later attempt nudges the scan again, because Plex never says when a scan is done;
//! 3. when title cards are configured, polls (up to `ready_poll`) until Plex lists each
//!    imported file (`Media/Part@file`), then uploads the card to the item, locks the
//!    poster, optionally removes Kometa's `Overlay` label, and remembers (ratingKey, card
//!    hash), so an unchanged card on an unchanged item is never uploaded twice;
//! 4. items still missing make the attempt retryable (backing off), until `ready_timeout`
//!    after the burst, when it fails with the list of files Plex never showed.
//!
//! A 401 from Plex is a configuration problem: the work stays pending (`Blocked`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::cards::{read_card, CardItem, CardLocator, CardRef};
use super::client::{EpisodeWant, Item, PlexError, Section, TYPE_EPISODE};
use super::config::PlexConfig;
use super::view::{section_views, PlexView};
use crate::delivery::{AttemptClass, AttemptResult, Executor, Job, RetryPolicy, TargetPolicy};
use crate::metrics::Metrics;
use crate::model::{EventKind, NormalizedEvent};
use crate::pathmap::{normalise, parent_folder, pick_section, PathMapper};
use crate::store::{now_ms, AppliedCard, CommittedEvent, Store};

/// Largest title card fetched from a URL.
const MAX_CARD_BYTES: usize = 10 * 1024 * 1024;

/// A Plex server as a delivery target.
pub struct PlexExecutor {
    cfg: PlexConfig,
    /// Stored target name (`plex:NAME`).
    target: String,
    /// The client, the path rules and the cached sections.
    view: Arc<PlexView>,
    /// For cards given by URL.
    http: reqwest::Client,
    store: Arc<dyn Store>,
    cards: Option<Arc<CardLocator>>,
    /// Scans and card uploads are counted here, labelled with the server's name.
    metrics: Arc<Metrics>,
}

/// Why a Plex target cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("plex `{name}`: `{key}`: {problem}")]
pub struct PlexConfigError {
    /// The Plex server's configured name.
    pub name: String,
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it, and how to fix it.
    pub problem: String,
}

/// What one attempt did, for the history and the logs.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The result of an action: the class, an error for people, and what happened.
struct Outcome {
    class: AttemptClass,
    status: Option<u16>,
    error: Option<String>,
}

impl Outcome {
    fn done() -> Self {
        Outcome {
            class: AttemptClass::Success,
            status: Some(200),
            error: None,
        }
    }
    fn retry(error: String) -> Self {
        Outcome {
            class: AttemptClass::Retryable,
            status: None,
            error: Some(error),
        }
    }
    fn fatal(error: String) -> Self {
        Outcome {
            class: AttemptClass::Fatal,
            status: None,
            error: Some(error),
        }
    }
    fn from_plex(e: &PlexError, doing: &str) -> Self {
        let status = match e {
            PlexError::Status { status, .. } => Some(*status),
            PlexError::Unauthorized => Some(401),
            _ => None,
        };
        let class = if e.is_unauthorized() {
            AttemptClass::Blocked
        } else if e.is_retryable() {
            AttemptClass::Retryable
        } else {
            AttemptClass::Fatal
        };
        Outcome {
            class,
            status,
            error: Some(format!("{doing}: {e}")),
        }
    }
}

/// One item that should get a card.
#[derive(Clone, Debug)]
struct Want {
    /// The file as Plex sees it.
    file: String,
    card_item: CardItem,
    card: CardRef,
}

impl PlexExecutor {
    /// Builds the executor for one Plex server; `target` is its stored target name
    /// (`plex:NAME`), `source_rules` the path rules per source.
    pub fn new(
        cfg: PlexConfig,
        target: String,
        store: Arc<dyn Store>,
        source_rules: HashMap<String, PathMapper>,
    ) -> Result<Self, PlexConfigError> {
        let invalid = |key: &'static str, problem: String| PlexConfigError {
            name: cfg.name.clone(),
            key,
            problem,
        };
        let view = Arc::new(
            PlexView::new(&cfg, source_rules).map_err(|(key, problem)| invalid(key, problem))?,
        );
        let cards = cfg
            .cards
            .as_ref()
            .map(CardLocator::try_new)
            .transpose()
            .map(|c| c.map(Arc::new))
            .map_err(|e| invalid("cards", e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid("cards", format!("cannot build an HTTP client: {e}")))?;
        Ok(PlexExecutor {
            target,
            view,
            http,
            store,
            cards,
            cfg,
            metrics: Metrics::new(""),
        })
    }

    /// Counts this server's scans and uploads in the relay's metrics (a standalone executor,
    /// such as the CLI's dry run, keeps a registry of its own that nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The client, path rules and sections, shared with the path-mapping dry run.
    pub fn view(&self) -> Arc<PlexView> {
        Arc::clone(&self.view)
    }

    /// The engine's view of this server's config. Retries back off from `retry_base` to
    /// `retry_cap` with no count limit: `ready_timeout` ends the wait for an item, and a
    /// Plex that is down keeps its work pending until it is back.
    pub fn policy(cfg: &PlexConfig, target: &str, drain_grace: Duration) -> TargetPolicy {
        TargetPolicy {
            name: target.to_owned(),
            max_in_flight: cfg.max_in_flight,
            rate: cfg.rate,
            burst: None,
            retry: RetryPolicy::Exponential(u32::MAX),
            retry_base: cfg.retry_base,
            retry_cap: cfg.retry_cap,
            disable_after: 0,
            enabled: cfg.enabled,
            drain_grace,
        }
    }

    async fn run(&self, job: &Job, report: &mut Report) -> Outcome {
        let d = &job.delivery;
        let (key, seqs) = match &d.group {
            Some(g) => (g.key.clone(), g.seqs.clone()),
            None => (String::new(), vec![d.event_seq]),
        };
        let events = match self.store.events_by_seq(seqs).await {
            Ok(evs) if !evs.is_empty() => evs,
            Ok(_) => return Outcome::fatal("the group's events are no longer stored".into()),
            Err(e) => return Outcome::retry(format!("cannot load the group's events: {e}")),
        };
        // The wait for Plex is measured from the end of the burst.
        let burst_end = events.iter().map(|e| e.received_at_ms).max().unwrap_or(0);
        let overdue = now_ms() - burst_end
            > i64::try_from(self.cfg.ready_timeout.as_millis()).unwrap_or(i64::MAX);
        if let Some(rk) = key.strip_prefix("item:") {
            return self.card_check(rk, &events, overdue, report).await;
        }
        let folder = key.strip_prefix("folder:").unwrap_or(&key).to_owned();
        self.sync_folder(&folder, &events, d.attempts, overdue, report)
            .await
    }

    /// Picks the section for a Plex-side path, re-reading the sections once when none
    /// matches (a library may have been added).
    async fn section_for(
        &self,
        path: &str,
        library: Option<&str>,
        kind: Option<&str>,
        report: &mut Report,
    ) -> Result<Section, Outcome> {
        for force in [false, true] {
            let sections = self
                .view
                .sections(force)
                .await
                .map_err(|e| Outcome::from_plex(&e, "reading the library sections"))?;
            let views = section_views(&sections, library);
            let choice = pick_section(path, &views, kind);
            if let Some(v) = choice.section {
                if let Some(s) = sections.iter().find(|s| s.key == v.key) {
                    report.line(format!("section {:?} (key {})", s.title, s.key));
                    return Ok(s.clone());
                }
            }
            if force {
                return Err(Outcome::fatal(format!(
                    "no library section of plex `{}` contains {path:?}; check `path_rules`. {}",
                    self.cfg.name,
                    choice.explain.join("; ")
                )));
            }
        }
        Err(Outcome::fatal("no library section".into()))
    }

    async fn sync_folder(
        &self,
        folder: &str,
        events: &[CommittedEvent],
        attempts_before: u32,
        overdue: bool,
        report: &mut Report,
    ) -> Outcome {
        let first = &events[0].event;
        // The router keyed the group by the folder as Plex sees it.
        let plex_folder = folder.to_owned();
        let library = events
            .iter()
            .find_map(|e| e.event.params.get("library").cloned());
        let kind = section_kind(first);
        let section = match self
            .section_for(&plex_folder, library.as_deref(), kind, report)
            .await
        {
            Ok(s) => s,
            Err(o) => return o,
        };
        if let Err(e) = self.view.client.scan(&section.key, &plex_folder).await {
            return Outcome::from_plex(&e, "asking Plex to scan");
        }
        self.metrics.plex_scans.inc(&[&self.cfg.name]);
        report.line(format!(
            "{} partial scan of {plex_folder:?} (GET /library/sections/{}/refresh)",
            if attempts_before == 0 {
                "asked for a"
            } else {
                "nudged the"
            },
            section.key
        ));
        let wants = self.wants(&plex_folder, events, report).await;
        if wants.is_empty() {
            return Outcome::done();
        }
        let show_folder = self.show_folder(first, &plex_folder);
        let deadline = Instant::now() + self.cfg.ready_poll;
        let mut pause = Duration::from_millis(200);
        let mut remaining = wants;
        loop {
            let ews: Vec<EpisodeWant> = remaining
                .iter()
                .map(|w| EpisodeWant {
                    file: w.file.clone(),
                    season: w.card_item.season,
                    episode: w.card_item.episode,
                })
                .collect();
            let found = match self
                .view
                .client
                .find_episodes(&section.key, Some(&show_folder), &ews)
                .await
            {
                Ok(f) => f,
                Err(e) => return Outcome::from_plex(&e, "looking the episodes up"),
            };
            let mut still = Vec::new();
            for (w, item) in remaining.into_iter().zip(found) {
                match item.filter(|i| i.has_file(&w.file)) {
                    Some(item) => {
                        if let Err(o) = self.apply_card(&section, &item, &w, report).await {
                            return o;
                        }
                    }
                    None => still.push(w),
                }
            }
            remaining = still;
            if remaining.is_empty() {
                return Outcome::done();
            }
            if Instant::now() + pause > deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let mut missing = String::new();
        for w in &remaining {
            let _ = write!(missing, "\n  {}", w.file);
        }
        if overdue {
            Outcome::fatal(format!(
                "Plex did not list {} file(s) within {:?}; their title cards were not applied:{missing}",
                remaining.len(),
                self.cfg.ready_timeout
            ))
        } else {
            report.line(format!(
                "waiting for Plex to list {} file(s)",
                remaining.len()
            ));
            Outcome::retry(format!(
                "Plex does not list {} file(s) yet; looking again after the next scan:{missing}",
                remaining.len()
            ))
        }
    }

    /// A Plex `library.new` or a Tautulli "recently added": check the item's cards.
    async fn card_check(
        &self,
        rating_key: &str,
        events: &[CommittedEvent],
        overdue: bool,
        report: &mut Report,
    ) -> Outcome {
        if self.cards.is_none() {
            return Outcome::done();
        }
        let item = match self.view.client.metadata(rating_key).await {
            Ok(Some(i)) => i,
            Ok(None) if overdue => {
                return Outcome::fatal(format!("Plex has no item {rating_key}"));
            }
            Ok(None) => return Outcome::retry(format!("Plex does not list item {rating_key} yet")),
            Err(e) => return Outcome::from_plex(&e, "reading the item"),
        };
        let episodes = match item.kind.as_str() {
            "episode" => vec![item],
            "show" | "season" => match self.view.client.all_leaves(rating_key).await {
                Ok(l) => l,
                Err(e) => return Outcome::from_plex(&e, "listing the item's episodes"),
            },
            _ => return Outcome::done(),
        };
        let ev = &events[0].event;
        let media = ev.media.as_ref();
        let sections = match self.view.sections(false).await {
            Ok(s) => s,
            Err(e) => return Outcome::from_plex(&e, "reading the library sections"),
        };
        // TitleCardMaker names cards after the show's title and year; an episode carries
        // neither (its `year` is its air year), so read them from the show once.
        let mut shows: HashMap<String, Option<Item>> = HashMap::new();
        for ep in episodes {
            let mut show = None;
            if let Some(key) = ep.show_key.clone() {
                if !shows.contains_key(&key) {
                    let s = match self.view.client.metadata(&key).await {
                        Ok(s) => s,
                        Err(e) => return Outcome::from_plex(&e, "reading the show"),
                    };
                    shows.insert(key.clone(), s);
                }
                show = shows.get(&key).cloned().flatten();
            }
            let title = show
                .as_ref()
                .and_then(|s| s.title.clone())
                .or_else(|| ep.show_title.clone())
                .or_else(|| media.and_then(|m| m.title.clone()))
                .unwrap_or_default();
            let mut card_item = card_item(ev, ep.season, ep.episode);
            card_item.title = title;
            card_item.year = show.as_ref().and_then(|s| s.year).or(card_item.year);
            let Some(card) = self.locate(&card_item, report).await else {
                continue;
            };
            let Some(section) = ep
                .section_id
                .as_ref()
                .and_then(|id| sections.iter().find(|s| &s.key == id))
            else {
                continue;
            };
            let want = Want {
                file: ep.files.first().cloned().unwrap_or_default(),
                card_item,
                card,
            };
            if let Err(o) = self.apply_card(section, &ep, &want, report).await {
                return o;
            }
        }
        Outcome::done()
    }

    /// The items of this folder's events that have a card: imported or upgraded files
    /// (not deleted ones), each episode once.
    async fn wants(
        &self,
        plex_folder: &str,
        events: &[CommittedEvent],
        report: &mut Report,
    ) -> Vec<Want> {
        if self.cards.is_none() {
            return Vec::new();
        }
        let mut out: Vec<Want> = Vec::new();
        for ce in events {
            let ev = &ce.event;
            if !matches!(
                ev.kind,
                EventKind::Import | EventKind::Upgrade | EventKind::Rename
            ) {
                continue;
            }
            let live: Vec<_> = ev.files.iter().filter(|f| !f.deleted).collect();
            for (i, f) in live.iter().enumerate() {
                let (plex_file, _) = self.view.map_path(&ev.instance, &f.path);
                if normalise(&parent_folder(&plex_file)) != normalise(plex_folder) {
                    continue;
                }
                for (season, episode) in episodes_of_file(ev, live.len(), i, &f.path) {
                    if out.iter().any(|w| {
                        (w.card_item.season, w.card_item.episode) == (Some(season), Some(episode))
                    }) {
                        continue;
                    }
                    let card_item = card_item(ev, Some(season), Some(episode));
                    if let Some(card) = self.locate(&card_item, report).await {
                        out.push(Want {
                            file: plex_file.clone(),
                            card_item,
                            card,
                        });
                    }
                }
            }
        }
        out
    }

    /// Where the item's card is; a miss is reported with the places looked at, so the
    /// history says why no card was applied.
    async fn locate(&self, item: &CardItem, report: &mut Report) -> Option<CardRef> {
        let locator = Arc::clone(self.cards.as_ref()?);
        let lookup = item.clone();
        // Card lookups touch the filesystem.
        let (found, explain) =
            tokio::task::spawn_blocking(move || locator.locate_explained(&lookup))
                .await
                .ok()?;
        if found.is_none() {
            report.line(format!(
                "{}: no title card ({})",
                describe(item),
                explain.join("; ")
            ));
        }
        found
    }

    /// The series folder as Plex sees it: the event's series path, else the parent of a
    /// `Season N`/`Specials` folder, else the folder itself.
    fn show_folder(&self, ev: &NormalizedEvent, plex_folder: &str) -> String {
        if let Some(p) = ev.media.as_ref().and_then(|m| m.path.as_deref()) {
            return self.view.map_path(&ev.instance, p).0;
        }
        let last = plex_folder
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if last.starts_with("season") || last == "specials" {
            parent_folder(plex_folder)
        } else {
            plex_folder.to_owned()
        }
    }

    /// Uploads the card unless this exact card is already on this exact item, then locks
    /// the poster and removes Kometa's label as configured, and remembers it.
    async fn apply_card(
        &self,
        section: &Section,
        item: &Item,
        want: &Want,
        report: &mut Report,
    ) -> Result<(), Outcome> {
        let Some(locator) = &self.cards else {
            return Ok(());
        };
        let (bytes, sha, ctype) = self.card_bytes(&want.card).await.map_err(|e| {
            Outcome::fatal(format!("cannot read the title card {:?}: {e}", want.card))
        })?;
        let label = describe(&want.card_item);
        let applied = self
            .store
            .applied_card(&self.target, &item.rating_key)
            .await
            .map_err(|e| Outcome::retry(format!("cannot read the applied cards: {e}")))?;
        if applied.as_deref() == Some(sha.as_str()) {
            report.line(format!("{label}: card already on item {}", item.rating_key));
            return Ok(());
        }
        self.view
            .client
            .upload_poster(&item.rating_key, bytes, ctype)
            .await
            .map_err(|e| Outcome::from_plex(&e, "uploading the title card"))?;
        self.metrics.plex_card_uploads.inc(&[&self.cfg.name]);
        if locator.lock() {
            self.view
                .client
                .lock_thumb(&section.key, &item.rating_key, TYPE_EPISODE)
                .await
                .map_err(|e| Outcome::from_plex(&e, "locking the poster"))?;
        }
        if locator.remove_overlay_label()
            && item
                .labels
                .iter()
                .any(|l| l.eq_ignore_ascii_case("overlay"))
        {
            self.view
                .client
                .remove_label(&section.key, &item.rating_key, TYPE_EPISODE, "Overlay")
                .await
                .map_err(|e| Outcome::from_plex(&e, "removing the Overlay label"))?;
        }
        self.store
            .record_card(AppliedCard {
                target: self.target.clone(),
                rating_key: item.rating_key.clone(),
                card_sha: sha,
                item: label.clone(),
            })
            .await
            .map_err(|e| Outcome::retry(format!("cannot record the applied card: {e}")))?;
        tracing::info!(plex = %self.cfg.name, item = %label, rating_key = %item.rating_key, "title card applied");
        report.line(format!(
            "{label}: card uploaded to item {}",
            item.rating_key
        ));
        Ok(())
    }

    async fn card_bytes(
        &self,
        card: &CardRef,
    ) -> Result<(Vec<u8>, String, Option<&'static str>), String> {
        match card {
            CardRef::File { path } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_card(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            CardRef::Url { url } => {
                let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("{} answered {}", url, resp.status()));
                }
                let ctype = match resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(t) if t.starts_with("image/png") => Some("image/png"),
                    Some(t) if t.starts_with("image/webp") => Some("image/webp"),
                    _ => Some("image/jpeg"),
                };
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                if bytes.len() > MAX_CARD_BYTES || bytes.is_empty() {
                    return Err(format!("the card at {url} is empty or larger than 10 MiB"));
                }
                let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                Ok((bytes.to_vec(), sha, ctype))
            }
        }
    }
}

/// Which kind of section an event's files belong in.
fn section_kind(ev: &NormalizedEvent) -> Option<&'static str> {
    match ev.source {
        crate::model::SourceKind::Sonarr => Some("show"),
        crate::model::SourceKind::Radarr => Some("movie"),
        crate::model::SourceKind::Lidarr => Some("artist"),
        _ => None,
    }
}

/// The (season, episode) pairs a file holds: all of the event's episodes when it names one
/// file (a multi-episode file), else the `SxxEyy` in the file name, else the episode at
/// the same position.
fn episodes_of_file(
    ev: &NormalizedEvent,
    files: usize,
    index: usize,
    path: &str,
) -> Vec<(i32, i32)> {
    let numbered = |e: &crate::model::Episode| e.season.zip(e.episode);
    if files <= 1 {
        return ev.episodes.iter().filter_map(numbered).collect();
    }
    if let Some(se) = sxxeyy(path) {
        return vec![se];
    }
    ev.episodes
        .get(index)
        .and_then(numbered)
        .into_iter()
        .collect()
}

/// `S01E05` (any case) in a file name.
fn sxxeyy(path: &str) -> Option<(i32, i32)> {
    let name = path.rsplit(['/', '\\']).next()?;
    let b = name.as_bytes();
    for i in 0..b.len() {
        if !(b[i] == b'S' || b[i] == b's') {
            continue;
        }
        let digits = |from: usize| -> (Option<i32>, usize) {
            let end = (from..b.len())
                .find(|&j| !b[j].is_ascii_digit())
                .unwrap_or(b.len());
            (name[from..end].parse().ok(), end)
        };
        let (Some(s), e_at) = digits(i + 1) else {
            continue;
        };
        if e_at >= b.len() || !(b[e_at] == b'E' || b[e_at] == b'e') {
            continue;
        }
        if let (Some(e), _) = digits(e_at + 1) {
            return Some((s, e));
        }
    }
    None
}

/// What the event says about an episode's card: the series' title, year and ids.
fn card_item(ev: &NormalizedEvent, season: Option<i32>, episode: Option<i32>) -> CardItem {
    let media = ev.media.as_ref();
    CardItem {
        title: media.and_then(|m| m.title.clone()).unwrap_or_default(),
        year: media.and_then(|m| m.year),
        season,
        episode,
        tvdb: media
            .and_then(|m| m.ids.tvdb)
            .and_then(|v| u64::try_from(v).ok()),
        tmdb: media
            .and_then(|m| m.ids.tmdb)
            .and_then(|v| u64::try_from(v).ok()),
        imdb: media.and_then(|m| m.ids.imdb.clone()),
        is_movie: false,
    }
}

fn describe(c: &CardItem) -> String {
    let year = c.year.map(|y| format!(" ({y})")).unwrap_or_default();
    format!(
        "{}{year} S{:02}E{:02}",
        c.title,
        c.season.unwrap_or_default(),
        c.episode.unwrap_or_default()
    )
}

impl Executor for PlexExecutor {
    fn attempt<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, (AttemptClass, AttemptResult)> {
        async move {
            let started_at_ms = now_ms();
            let t = Instant::now();
            let mut report = Report::default();
            let o = self.run(job, &mut report).await;
            let key = job
                .delivery
                .group
                .as_ref()
                .map(|g| g.key.as_str())
                .unwrap_or("");
            (
                o.class,
                AttemptResult {
                    status: o.status,
                    error: o.error,
                    started_at_ms,
                    latency: t.elapsed(),
                    retry_after: None,
                    request_excerpt: format!("plex `{}`: sync {key}", self.cfg.name),
                    response_excerpt: report.text(),
                },
            )
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Episode, FileRef, SourceKind};

    #[test]
    fn plex_sxxeyy_reads_episode_numbers_from_names() {
        assert_eq!(
            sxxeyy("/tv/A/Season 01/A (2020) - S01E05 - Title.mkv"),
            Some((1, 5))
        );
        assert_eq!(sxxeyy(r"D:\TV\a.s02e10.mkv"), Some((2, 10)));
        assert_eq!(sxxeyy("/tv/Season 1/Special.mkv"), None);
    }

    #[test]
    fn plex_episodes_of_file_multi_episode_and_packs() {
        let mut ev =
            NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Import, "Download");
        ev.episodes = vec![
            Episode {
                season: Some(1),
                episode: Some(1),
                ..Episode::default()
            },
            Episode {
                season: Some(1),
                episode: Some(2),
                ..Episode::default()
            },
        ];
        ev.files = vec![FileRef {
            path: "/tv/A/S01/a.mkv".into(),
            ..FileRef::default()
        }];
        // One file, two episodes: a multi-episode file.
        assert_eq!(
            episodes_of_file(&ev, 1, 0, "/tv/A/S01/a.mkv"),
            vec![(1, 1), (1, 2)]
        );
        // A pack: the name decides, else the position.
        assert_eq!(
            episodes_of_file(&ev, 2, 0, "/tv/A/S01/A - S01E02.mkv"),
            vec![(1, 2)]
        );
        assert_eq!(episodes_of_file(&ev, 2, 1, "/tv/A/S01/b.mkv"), vec![(1, 2)]);
    }
}
