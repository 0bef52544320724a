//! Sonarr/Radarr history records, and turning the ones relayarr missed into events.
//!
//! Pure functions: [`parse_records`] reads `history/since` (camelCase keys, enum names as
//! camelCase strings, `data` values all strings), [`recoverable`] turns imports, upgrades,
//! renames and deletes into [`NormalizedEvent`]s shaped like the webhook parser's
//! (`sources::arr`), and [`is_known`] tells whether relayarr already has one.
//!
//! Sonarr writes one record per episode, so a multi-episode file comes as several records;
//! they are grouped into one event by download id and file path. An upgrade is a
//! `*FileDeleted` record with reason `Upgrade` next to a `downloadFolderImported` for the same
//! episode or movie: the import becomes an `upgrade` carrying the replaced file as deleted,
//! and the delete is not an event of its own.

use std::collections::BTreeMap;

use serde_json::Value;

use super::config::ArrKind;
use super::cursor::{parse_date, Cursor};
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent};
use crate::sources::lenient::{field, i32_at, id_at, int_at, object, text_at, year_at};
use crate::store::EventFileKey;

/// The tag every recovered event carries.
pub const RECOVERED_TAG: &str = "recovered";

/// What a history record is about, as far as reconciliation cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// `downloadFolderImported`.
    Import,
    /// `episodeFileRenamed` / `movieFileRenamed`.
    Rename,
    /// `episodeFileDeleted` / `movieFileDeleted`, with the `reason` as sent.
    Delete {
        /// Why the file went (`Upgrade`, `Manual`, `MissingFromDisk`, …), as sent.
        reason: Option<String>,
    },
    /// Grabs, failures, ignored downloads, and types added in later versions.
    Other,
}

/// One history record, read leniently.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRecord {
    /// The record's id in the app's history (ascending over time).
    pub id: i64,
    /// Unix seconds.
    pub date: i64,
    /// What the record is about.
    pub kind: RecordKind,
    /// The download client's id, shared by a grab and its imports.
    pub download_id: Option<String>,
    /// Sonarr: the episode; Radarr: the movie. Upgrade deletes pair with imports by it.
    pub item_id: Option<i64>,
    /// The record as sent: the raw body of the event it becomes.
    pub raw: Value,
}

impl HistoryRecord {
    fn data(&self, key: &str) -> Option<String> {
        object(&self.raw, "data").and_then(|d| text_at(d, key))
    }

    /// The file path the record is about: the imported file, the renamed file's new path,
    /// or the deleted file (`sourceTitle`).
    fn path(&self) -> Option<String> {
        match self.kind {
            RecordKind::Import => self.data("importedPath"),
            RecordKind::Rename => self.data("path"),
            RecordKind::Delete { .. } => text_at(&self.raw, "sourceTitle"),
            RecordKind::Other => None,
        }
    }

    fn is_upgrade_delete(&self) -> bool {
        matches!(&self.kind, RecordKind::Delete { reason: Some(r) } if r.eq_ignore_ascii_case("upgrade"))
    }
}

/// Parses a `history/since` answer. Records without a usable `id` or `date` are skipped and
/// counted (the second value).
pub fn parse_records(body: &[Value]) -> (Vec<HistoryRecord>, usize) {
    let mut out = Vec::with_capacity(body.len());
    let mut bad = 0;
    for v in body {
        match parse_record(v) {
            Some(r) => out.push(r),
            None => bad += 1,
        }
    }
    (out, bad)
}

fn parse_record(v: &Value) -> Option<HistoryRecord> {
    let id = int_at(v, "id")?;
    let date = parse_date(&text_at(v, "date")?)?;
    let event_type = text_at(v, "eventType").unwrap_or_default();
    let kind = match event_type.to_ascii_lowercase().as_str() {
        "downloadfolderimported" => RecordKind::Import,
        "episodefilerenamed" | "moviefilerenamed" => RecordKind::Rename,
        "episodefiledeleted" | "moviefiledeleted" => RecordKind::Delete {
            reason: object(v, "data").and_then(|d| text_at(d, "reason")),
        },
        _ => RecordKind::Other,
    };
    Some(HistoryRecord {
        id,
        date,
        kind,
        download_id: text_at(v, "downloadId"),
        item_id: int_at(v, "episodeId").or_else(|| int_at(v, "movieId")),
        raw: v.clone(),
    })
}

/// Which events a key can stand for: imports and upgrades are one family, because whether
/// an import was an upgrade depends on what else a read saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Imports and upgrades.
    Import,
    /// Renames.
    Rename,
    /// Deletes.
    Delete,
}

impl Family {
    fn of(kind: &EventKind) -> Option<Family> {
        match kind {
            EventKind::Import | EventKind::Upgrade => Some(Family::Import),
            EventKind::Rename => Some(Family::Rename),
            EventKind::Delete => Some(Family::Delete),
            _ => None,
        }
    }
}

/// An event to recover, with what it was made from.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered {
    /// The event to commit, tagged `recovered`.
    pub event: NormalizedEvent,
    /// The records it stands for, oldest first.
    pub records: Vec<i64>,
    /// The raw body: the records as a JSON array.
    pub raw: Vec<u8>,
    /// The family its dedup key stands for.
    pub family: Family,
    /// The file that identifies it (see [`is_known`]).
    pub path: String,
    /// The download id, when the records carried one.
    pub download_id: Option<String>,
}

/// How one read splits the records it got.
#[derive(Debug)]
pub struct ReadPlan {
    /// Events to commit, unless the store already has them.
    pub recover: Vec<Recovered>,
    /// Records done with after this read (id, date): every settled one.
    pub handled: Vec<(i64, i64)>,
    /// Settled records an earlier read handled.
    pub seen: usize,
    /// Records dated after `settled_before`, left for a later read.
    pub deferred: usize,
    /// The date of the oldest record this read handles for the first time.
    pub oldest_new: Option<i64>,
}

/// Splits a read: records dated after `settled_before` (unix seconds) wait, records the
/// cursor knows are skipped, the rest become events.
pub fn plan_read(
    kind: ArrKind,
    instance: &str,
    records: &[HistoryRecord],
    cursor: &Cursor,
    settled_before: i64,
) -> ReadPlan {
    let settled = |r: &HistoryRecord| r.date <= settled_before;
    let is_new = |r: &HistoryRecord| settled(r) && !cursor.is_seen(r.id);
    ReadPlan {
        recover: recoverable(kind, instance, records, is_new),
        handled: records
            .iter()
            .filter(|r| settled(r))
            .map(|r| (r.id, r.date))
            .collect(),
        seen: records
            .iter()
            .filter(|r| settled(r) && cursor.is_seen(r.id))
            .count(),
        deferred: records.iter().filter(|r| !settled(r)).count(),
        oldest_new: records.iter().filter(|r| is_new(r)).map(|r| r.date).min(),
    }
}

/// Records that make one event: (family, download id for imports, file path).
type GroupKey = (Family, Option<String>, String);

/// Turns the records that `is_new` accepts into events, oldest first. Every record of the
/// read is passed, so an upgrade's delete pairs with its import even when the delete was
/// handled by an earlier read.
pub fn recoverable(
    kind: ArrKind,
    instance: &str,
    records: &[HistoryRecord],
    is_new: impl Fn(&HistoryRecord) -> bool,
) -> Vec<Recovered> {
    // Insertion order kept by the Vec.
    let mut groups: Vec<(GroupKey, Vec<&HistoryRecord>)> = Vec::new();
    for r in records.iter().filter(|r| is_new(r)) {
        let family = match &r.kind {
            RecordKind::Import => Family::Import,
            RecordKind::Rename => Family::Rename,
            // The import it belongs to covers it.
            RecordKind::Delete { .. } if r.is_upgrade_delete() => continue,
            RecordKind::Delete { .. } => Family::Delete,
            RecordKind::Other => continue,
        };
        let Some(path) = r.path() else { continue };
        let download_id = (family == Family::Import)
            .then(|| r.download_id.clone())
            .flatten();
        let key = (family, download_id, path);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|((family, download_id, path), members)| {
            let event = build_event(kind, instance, family, &path, &members, records);
            let raw: Vec<&Value> = members.iter().map(|r| &r.raw).collect();
            Recovered {
                event,
                records: members.iter().map(|r| r.id).collect(),
                raw: serde_json::to_vec(&raw).unwrap_or_default(),
                family,
                path,
                download_id,
            }
        })
        .collect()
}

fn build_event(
    kind: ArrKind,
    instance: &str,
    family: Family,
    path: &str,
    members: &[&HistoryRecord],
    all: &[HistoryRecord],
) -> NormalizedEvent {
    let first = members[0];
    // Upgrade deletes of the same episodes/movie, in the same read.
    let items: Vec<i64> = members.iter().filter_map(|r| r.item_id).collect();
    let replaced: Vec<&HistoryRecord> = if family == Family::Import {
        all.iter()
            .filter(|r| r.is_upgrade_delete() && r.item_id.is_some_and(|i| items.contains(&i)))
            .collect()
    } else {
        Vec::new()
    };
    let (event_kind, event_type) = match family {
        Family::Import if !replaced.is_empty() => (EventKind::Upgrade, "Download"),
        Family::Import => (EventKind::Import, "Download"),
        Family::Rename => (EventKind::Rename, "Rename"),
        Family::Delete => (
            EventKind::Delete,
            match kind {
                ArrKind::Sonarr => "EpisodeFileDelete",
                ArrKind::Radarr => "MovieFileDelete",
            },
        ),
    };
    let mut ev = NormalizedEvent::new(kind.source_kind(), instance, event_kind, event_type);
    ev.is_upgrade = ev.kind == EventKind::Upgrade;
    ev.download_id = (family == Family::Import)
        .then(|| first.download_id.clone())
        .flatten();
    ev.media = media(kind, &first.raw);
    let folder = ev.media.as_ref().and_then(|m| m.path.clone());
    ev.episodes = episodes(members);

    let quality = field(&first.raw, "quality")
        .and_then(|q| object(q, "quality"))
        .and_then(|q| text_at(q, "name"));
    let mut file = FileRef {
        path: path.to_owned(),
        relative_path: None,
        previous_path: None,
        deleted: family == Family::Delete,
        quality: None,
        size: None,
    };
    match family {
        Family::Import => {
            file.relative_path = folder.as_deref().and_then(|f| relative_to(f, path));
            file.previous_path = first.data("droppedPath");
            file.quality = quality;
            file.size = first.data("size").and_then(|s| s.trim().parse().ok());
        }
        Family::Rename => {
            file.relative_path = first.data("relativePath");
            file.previous_path = first.data("sourcePath");
        }
        Family::Delete => {}
    }
    ev.files.push(file);
    for r in replaced {
        if let Some(old) = r.path() {
            if !ev.files.iter().any(|f| f.path == old) {
                ev.files.push(FileRef {
                    path: old,
                    deleted: true,
                    ..FileRef::default()
                });
            }
        }
    }

    ev.tags.push(RECOVERED_TAG.to_owned());
    let ids: Vec<String> = members.iter().map(|r| r.id.to_string()).collect();
    ev.details.insert(
        "recovered_from".into(),
        format!("history:{}", ids.join(",")),
    );
    if let Some(date) = text_at(&first.raw, "date") {
        ev.details.insert("history_date".into(), date);
    }
    let mut put = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            ev.details.insert(key.to_owned(), v);
        }
    };
    match family {
        Family::Import => {
            put("download_client", first.data("downloadClientName"));
            put("download_client_type", first.data("downloadClient"));
            put("release_title", text_at(&first.raw, "sourceTitle"));
            put("custom_format_score", first.data("customFormatScore"));
        }
        // The webhook's `deleteReason` is the camelCase enum name; history stores its
        // PascalCase `ToString()`.
        Family::Delete => put(
            "delete_reason",
            match &first.kind {
                RecordKind::Delete { reason } => reason.as_deref().map(camel_case),
                _ => None,
            },
        ),
        Family::Rename => {}
    }
    ev
}

/// The series (`includeSeries=true`) or movie (`includeMovie=true`) of a record, read like
/// the webhook's; without it, only the app's own id is known.
fn media(kind: ArrKind, raw: &Value) -> Option<Media> {
    match kind {
        ArrKind::Sonarr => {
            let arr = id_at(raw, "seriesId");
            let Some(s) = object(raw, "series") else {
                return arr.map(|id| Media {
                    media_type: "series".into(),
                    ids: MediaIds {
                        arr: Some(id),
                        ..MediaIds::default()
                    },
                    ..Media::default()
                });
            };
            Some(Media {
                media_type: "series".into(),
                title: text_at(s, "title"),
                year: year_at(s, "year"),
                path: text_at(s, "path"),
                ids: MediaIds {
                    tvdb: id_at(s, "tvdbId"),
                    tmdb: id_at(s, "tmdbId"),
                    imdb: text_at(s, "imdbId"),
                    tvmaze: id_at(s, "tvMazeId"),
                    arr: id_at(s, "id").or(arr),
                    ..MediaIds::default()
                },
                library: None,
            })
        }
        ArrKind::Radarr => {
            let arr = id_at(raw, "movieId");
            let Some(m) = object(raw, "movie") else {
                return arr.map(|id| Media {
                    media_type: "movie".into(),
                    ids: MediaIds {
                        arr: Some(id),
                        ..MediaIds::default()
                    },
                    ..Media::default()
                });
            };
            Some(Media {
                media_type: "movie".into(),
                title: text_at(m, "title"),
                year: year_at(m, "year"),
                path: text_at(m, "path").or_else(|| text_at(m, "folderPath")),
                ids: MediaIds {
                    tmdb: id_at(m, "tmdbId"),
                    imdb: text_at(m, "imdbId"),
                    arr: id_at(m, "id").or(arr),
                    ..MediaIds::default()
                },
                library: None,
            })
        }
    }
}

/// The episodes of Sonarr records (`includeEpisode=true`), in season/episode order.
fn episodes(members: &[&HistoryRecord]) -> Vec<Episode> {
    let mut out: BTreeMap<(Option<i32>, Option<i32>, i64), Episode> = BTreeMap::new();
    for r in members {
        let Some(e) = object(&r.raw, "episode") else {
            continue;
        };
        let ep = Episode {
            season: i32_at(e, "seasonNumber"),
            episode: i32_at(e, "episodeNumber"),
            title: text_at(e, "title"),
            tvdb: id_at(e, "tvdbId"),
            air_date: text_at(e, "airDate"),
        };
        out.insert((ep.season, ep.episode, r.id), ep);
    }
    let mut eps: Vec<Episode> = Vec::new();
    for ep in out.into_values() {
        if !eps
            .iter()
            .any(|x| (x.season, x.episode) == (ep.season, ep.episode))
        {
            eps.push(ep);
        }
    }
    eps
}

/// `path` relative to `folder`, when it lies inside it.
fn relative_to(folder: &str, path: &str) -> Option<String> {
    let folder = folder.trim_end_matches(['/', '\\']);
    let rest = path.strip_prefix(folder)?;
    let rel = rest.strip_prefix(['/', '\\'])?;
    (!rel.is_empty()).then(|| rel.to_owned())
}

/// `MissingFromDisk` → `missingFromDisk`.
fn camel_case(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// True when relayarr already has an event for what `r` would recover: same family, same
/// file, and for imports the same download id (when the record has one). `known` are the
/// files of the source's events received around the record's time.
pub fn is_known(r: &Recovered, known: &[EventFileKey]) -> bool {
    known.iter().any(|k| {
        Family::of(&k.kind) == Some(r.family)
            && k.path == r.path
            && match r.family {
                // An upgrade's replaced files are not what it imported.
                Family::Import => {
                    !k.deleted
                        && r.download_id.as_deref().is_none_or(|d| {
                            k.download_id
                                .as_deref()
                                .is_some_and(|kd| kd.eq_ignore_ascii_case(d))
                        })
                }
                Family::Rename => !k.deleted,
                Family::Delete => true,
            }
    })
}

/// The keys a recovered event adds (so two of the same read never both go out).
pub fn key_of(r: &Recovered) -> EventFileKey {
    EventFileKey {
        kind: r.event.kind.clone(),
        download_id: r.download_id.clone(),
        path: r.path.clone(),
        deleted: r.family == Family::Delete,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::SourceKind;

    fn series() -> Value {
        json!({"id": 12, "title": "The Expanse", "year": 2015, "path": "/tv/The Expanse",
               "tvdbId": 280619, "tmdbId": 63639, "imdbId": "tt3230854", "tvMazeId": 1825, "tags": [3]})
    }

    fn import(id: i64, ep: i64, date: &str, dl: &str, path: &str) -> Value {
        json!({
            "id": id, "episodeId": 4800 + ep, "seriesId": 12,
            "sourceTitle": "The.Expanse.S03E05.1080p.WEB.h264-NTb",
            "quality": {"quality": {"id": 3, "name": "WEBDL-1080p", "source": "web", "resolution": 1080},
                        "revision": {"version": 1, "real": 0, "isRepack": false}},
            "date": date, "downloadId": dl, "eventType": "downloadFolderImported",
            "data": {"fileId": "9876", "droppedPath": "/downloads/x.mkv", "importedPath": path,
                     "downloadClient": "SABnzbd", "downloadClientName": "SAB", "size": "2487301120",
                     "customFormatScore": "0", "releaseType": "SingleEpisode"},
            "series": series(),
            "episode": {"seriesId": 12, "tvdbId": 6560000 + ep, "seasonNumber": 3, "episodeNumber": ep,
                        "title": format!("Episode {ep}"), "airDate": "2018-05-09", "id": 4800 + ep}
        })
    }

    fn delete(id: i64, ep: i64, date: &str, reason: &str, path: &str) -> Value {
        json!({"id": id, "episodeId": 4800 + ep, "seriesId": 12, "sourceTitle": path, "date": date,
               "eventType": "episodeFileDeleted", "data": {"reason": reason, "size": "1"},
               "series": series(), "episode": {"seasonNumber": 3, "episodeNumber": ep, "id": 4800 + ep}})
    }

    fn rename(id: i64, ep: i64, date: &str, old: &str, new: &str) -> Value {
        json!({"id": id, "episodeId": 4800 + ep, "seriesId": 12, "sourceTitle": old, "date": date,
               "eventType": "episodeFileRenamed",
               "data": {"sourcePath": old, "sourceRelativePath": "Season 03/old.mkv", "path": new,
                        "relativePath": "Season 03/new.mkv"},
               "series": series(), "episode": {"seasonNumber": 3, "episodeNumber": ep, "id": 4800 + ep}})
    }

    fn all_new(records: &[Value]) -> Vec<Recovered> {
        let (recs, bad) = parse_records(records);
        assert_eq!(bad, 0);
        recoverable(ArrKind::Sonarr, "sonarr", &recs, |_| true)
    }

    const P5: &str =
        "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv";

    #[test]
    fn record_sonarr_import_becomes_the_webhook_shaped_import() {
        let out = all_new(&[import(55012, 5, "2025-03-10T18:22:41Z", "DL1", P5)]);
        assert_eq!(out.len(), 1);
        let ev = &out[0].event;
        assert_eq!(ev.source, SourceKind::Sonarr);
        assert_eq!(ev.instance, "sonarr");
        assert_eq!(ev.kind, EventKind::Import);
        assert_eq!(ev.event_type, "Download");
        assert!(!ev.is_upgrade);
        assert_eq!(ev.download_id.as_deref(), Some("DL1"));
        let media = ev.media.as_ref().expect("media");
        assert_eq!(media.media_type, "series");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(media.year, Some(2015));
        assert_eq!(media.path.as_deref(), Some("/tv/The Expanse"));
        assert_eq!(media.ids.tvdb, Some(280619));
        assert_eq!(media.ids.tvmaze, Some(1825));
        assert_eq!(media.ids.arr, Some(12));
        assert_eq!(ev.episodes.len(), 1);
        assert_eq!(ev.episodes[0].season, Some(3));
        assert_eq!(ev.episodes[0].episode, Some(5));
        assert_eq!(ev.episodes[0].tvdb, Some(6560005));
        let f = &ev.files[0];
        assert_eq!(f.path, P5);
        assert_eq!(
            f.relative_path.as_deref(),
            Some("Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv")
        );
        assert_eq!(f.previous_path.as_deref(), Some("/downloads/x.mkv"));
        assert_eq!(f.quality.as_deref(), Some("WEBDL-1080p"));
        assert_eq!(f.size, Some(2487301120));
        assert!(!f.deleted);
        assert_eq!(ev.tags, [RECOVERED_TAG]);
        assert_eq!(ev.details["recovered_from"], "history:55012");
        assert_eq!(ev.details["download_client"], "SAB");
        let raw: Value = serde_json::from_slice(&out[0].raw).expect("raw is JSON");
        assert_eq!(raw[0]["id"], 55012);
    }

    #[test]
    fn record_multi_episode_records_group_into_one_event() {
        let p = "/tv/The Expanse/Season 03/S03E05-E06.mkv";
        let out = all_new(&[
            import(1, 6, "2025-03-10T18:22:41Z", "DL1", p),
            import(2, 5, "2025-03-10T18:22:41Z", "DL1", p),
            // Same download, another file: its own event.
            import(
                3,
                7,
                "2025-03-10T18:22:42Z",
                "DL1",
                "/tv/The Expanse/Season 03/e7.mkv",
            ),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].records, [1, 2]);
        let eps: Vec<_> = out[0].event.episodes.iter().map(|e| e.episode).collect();
        assert_eq!(eps, [Some(5), Some(6)]);
        assert_eq!(out[0].event.files.len(), 1);
        assert_eq!(out[0].event.details["recovered_from"], "history:1,2");
        assert_eq!(out[1].records, [3]);
    }

    #[test]
    fn record_upgrade_pairs_its_delete_and_the_delete_is_not_an_event() {
        let old = "/tv/The Expanse/Season 03/old [HDTV-720p].mkv";
        let records = [
            delete(10, 5, "2025-03-10T18:22:40Z", "Upgrade", old),
            import(11, 5, "2025-03-10T18:22:41Z", "DL2", P5),
        ];
        let out = all_new(&records);
        assert_eq!(out.len(), 1);
        let ev = &out[0].event;
        assert_eq!(ev.kind, EventKind::Upgrade);
        assert!(ev.is_upgrade);
        assert_eq!(ev.files.len(), 2);
        assert_eq!(ev.files[1].path, old);
        assert!(ev.files[1].deleted);
        // The delete was handled by an earlier read: it still marks the import an upgrade.
        let (recs, _) = parse_records(&records);
        let out = recoverable(ArrKind::Sonarr, "sonarr", &recs, |r| r.id == 11);
        assert_eq!(out[0].event.kind, EventKind::Upgrade);
        // Without the delete it is a plain import.
        let out = all_new(&records[1..]);
        assert_eq!(out[0].event.kind, EventKind::Import);
    }

    #[test]
    fn record_rename_and_manual_delete() {
        let out = all_new(&[
            rename(
                20,
                6,
                "2025-03-10T18:00:00Z",
                "/tv/The Expanse/Season 03/old.mkv",
                "/tv/The Expanse/Season 03/new.mkv",
            ),
            delete(
                21,
                7,
                "2025-03-10T18:00:01Z",
                "MissingFromDisk",
                "/tv/The Expanse/Season 03/gone.mkv",
            ),
            json!({"id": 22, "date": "2025-03-10T18:00:02Z", "eventType": "grabbed", "downloadId": "X", "data": {}}),
        ]);
        assert_eq!(out.len(), 2);
        let r = &out[0].event;
        assert_eq!(
            (r.kind.clone(), r.event_type.as_str()),
            (EventKind::Rename, "Rename")
        );
        assert_eq!(r.files[0].path, "/tv/The Expanse/Season 03/new.mkv");
        assert_eq!(
            r.files[0].previous_path.as_deref(),
            Some("/tv/The Expanse/Season 03/old.mkv")
        );
        assert!(r.download_id.is_none());
        let d = &out[1].event;
        assert_eq!(
            (d.kind.clone(), d.event_type.as_str()),
            (EventKind::Delete, "EpisodeFileDelete")
        );
        assert!(d.files[0].deleted);
        assert_eq!(d.details["delete_reason"], "missingFromDisk");
    }

    #[test]
    fn record_radarr_import_reads_the_movie() {
        let rec = json!({
            "movieId": 421, "sourceTitle": "Movie.Title.2023.1080p.WEB-DL.DDP5.1.H.264-GRP",
            "quality": {"quality": {"id": 3, "name": "WEBDL-1080p", "source": "webdl", "resolution": 1080, "modifier": "none"}},
            "date": "2025-03-10T19:02:11Z", "downloadId": "3F8A", "eventType": "downloadFolderImported",
            "data": {"droppedPath": "/downloads/movie.mkv",
                     "importedPath": "/movies/Movie Title (2023)/Movie Title (2023) [WEBDL-1080p].mkv"},
            "movie": {"id": 421, "title": "Movie Title", "year": 2023, "path": "/movies/Movie Title (2023)",
                      "tmdbId": 693134, "imdbId": "tt15239678"},
            "id": 7731
        });
        let (recs, _) = parse_records(&[rec]);
        let out = recoverable(ArrKind::Radarr, "radarr", &recs, |_| true);
        let ev = &out[0].event;
        assert_eq!(ev.source, SourceKind::Radarr);
        let m = ev.media.as_ref().expect("movie");
        assert_eq!(m.media_type, "movie");
        assert_eq!(m.title.as_deref(), Some("Movie Title"));
        assert_eq!(m.ids.tmdb, Some(693134));
        assert_eq!(m.ids.arr, Some(421));
        assert_eq!(
            ev.files[0].relative_path.as_deref(),
            Some("Movie Title (2023) [WEBDL-1080p].mkv")
        );
        assert!(ev.episodes.is_empty());
    }

    #[test]
    fn record_read_defers_young_records_and_skips_seen_ones() {
        let p6 = "/tv/The Expanse/Season 03/e6.mkv";
        let (recs, _) = parse_records(&[
            import(1, 5, "2025-03-10T18:00:00Z", "DL1", P5),
            json!({"id": 2, "date": "2025-03-10T18:00:00Z", "eventType": "grabbed", "data": {}}),
            import(3, 6, "2025-03-10T18:00:00Z", "DL2", p6),
            import(
                4,
                7,
                "2025-03-10T18:00:31Z",
                "DL3",
                "/tv/The Expanse/Season 03/e7.mkv",
            ),
        ]);
        let at = parse_date("2025-03-10T18:00:00Z").expect("date");
        let cursor =
            Cursor::default().advanced([(1, at)], 0, std::time::Duration::from_secs(3600), 0);
        // Read at 18:00:30 with a 30 s settle: record 4 (18:00:31) waits.
        let plan = plan_read(ArrKind::Sonarr, "sonarr", &recs, &cursor, at);
        assert_eq!(plan.recover.len(), 1);
        assert_eq!(plan.recover[0].path, p6);
        assert_eq!(plan.seen, 1);
        assert_eq!(plan.deferred, 1);
        assert_eq!(plan.handled, [(1, at), (2, at), (3, at)]);
        assert_eq!(plan.oldest_new, Some(at));
        // Once settled, only record 4 is new.
        let cursor = cursor.advanced(plan.handled, 1, std::time::Duration::from_secs(3600), 0);
        let plan = plan_read(ArrKind::Sonarr, "sonarr", &recs, &cursor, at + 31);
        assert_eq!(plan.recover.len(), 1);
        assert_eq!(plan.recover[0].records, [4]);
        assert_eq!(plan.seen, 3);
        assert_eq!(plan.deferred, 0);
    }

    #[test]
    fn record_without_id_or_date_is_skipped_and_counted() {
        let (recs, bad) = parse_records(&[
            json!({"id": 1, "eventType": "grabbed"}),
            json!({"date": "2025-03-10T18:00:00Z"}),
            json!({"id": 2, "date": "2025-03-10T18:00:00Z", "eventType": "downloadFolderImported"}),
        ]);
        assert_eq!(bad, 2);
        assert_eq!(recs.len(), 1);
        // An import without `importedPath` names no file: nothing to recover.
        assert!(recoverable(ArrKind::Sonarr, "s", &recs, |_| true).is_empty());
    }

    #[test]
    fn record_known_by_download_id_and_path() {
        let out = all_new(&[import(1, 5, "2025-03-10T18:22:41Z", "dl1", P5)]);
        let r = &out[0];
        let key = |kind: EventKind, dl: Option<&str>, path: &str, deleted: bool| EventFileKey {
            kind,
            download_id: dl.map(str::to_owned),
            path: path.to_owned(),
            deleted,
        };
        // The webhook's upgrade of the same download is the same import.
        assert!(is_known(
            r,
            &[key(EventKind::Upgrade, Some("DL1"), P5, false)]
        ));
        assert!(!is_known(
            r,
            &[key(EventKind::Import, Some("DL2"), P5, false)]
        ));
        assert!(!is_known(
            r,
            &[key(EventKind::Import, Some("DL1"), "/tv/x.mkv", false)]
        ));
        assert!(!is_known(r, &[key(EventKind::Import, None, P5, false)]));
        assert!(!is_known(
            r,
            &[key(EventKind::Upgrade, Some("DL1"), P5, true)]
        ));
        assert!(!is_known(r, &[key(EventKind::Rename, None, P5, false)]));
        assert!(is_known(r, &[key_of(r)]));
    }
}
