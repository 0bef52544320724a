//! The debouncer: events bound for a debounced target (the Plex sync, or a hook with
//! `debounce = "15s"`) wait in a group per (target, key) until the burst is over, then the
//! group becomes one delivery. Keys: the folder for scans (a season pack is one folder), the
//! Plex item for a card check, the `downloadId` for notifications.
//!
//! Pending groups are durable: every event's place in a group is a store row, written before
//! the event counts as routed, and a group fires in one transaction that creates its
//! delivery and marks its rows fired. After a restart the groups are rebuilt from those
//! rows, with the events' original arrival times.

pub mod actor;
pub mod coalesce;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::NormalizedEvent;

/// `[debounce]`: how long debounced targets wait for a burst to end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebounceConfig {
    /// A group fires once no event joined it for this long.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
    /// A group fires at the latest this long after its first event, however busy it is.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Overrides per source name (`[debounce.sources.sonarr-4k]`).
    pub sources: BTreeMap<String, DebounceOverride>,
    /// Overrides per event kind (`[debounce.kinds.delete]`); these win over per-source ones.
    pub kinds: BTreeMap<String, DebounceOverride>,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            quiet: Duration::from_secs(15),
            max_wait: Duration::from_secs(120),
            sources: BTreeMap::new(),
            kinds: BTreeMap::new(),
        }
    }
}

/// A per-source or per-kind change to the quiet period or the max wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebounceOverride {
    /// Replaces the quiet period.
    #[serde(default, with = "humantime_serde")]
    pub quiet: Option<Duration>,
    /// Replaces the max wait.
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
}

impl DebounceConfig {
    /// The quiet period and max wait for one event bound for a target. The target's own
    /// quiet period (a hook's `debounce`) replaces the global one; per-source overrides
    /// apply on top, then per-kind ones.
    pub fn resolve(
        &self,
        target_quiet: Option<Duration>,
        ev: &NormalizedEvent,
    ) -> (Duration, Duration) {
        let mut quiet = target_quiet.unwrap_or(self.quiet);
        let mut max_wait = self.max_wait;
        let find = |map: &BTreeMap<String, DebounceOverride>, name: &str| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        for o in [
            find(&self.sources, &ev.instance),
            find(&self.kinds, ev.kind.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            quiet = o.quiet.unwrap_or(quiet);
            max_wait = o.max_wait.unwrap_or(max_wait);
        }
        (quiet, max_wait)
    }
}

/// What a debounced target coalesces by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebounceKey {
    /// The *arr download id: one message per grab (a season pack). Events without one are
    /// not coalesced.
    #[default]
    DownloadId,
    /// The folder of each file (the season folder of a pack).
    Folder,
    /// The series or movie folder (or its title).
    Series,
}

impl DebounceKey {
    /// The keys an event joins. Empty: the event has nothing to coalesce by.
    pub fn keys(self, event_id: &str, ev: &NormalizedEvent) -> Vec<String> {
        match self {
            DebounceKey::DownloadId => vec![match &ev.download_id {
                Some(d) if !d.is_empty() => format!("download:{d}"),
                _ => format!("event:{event_id}"),
            }],
            DebounceKey::Folder => folder_keys(ev),
            DebounceKey::Series => {
                let m = ev.media.as_ref();
                match m
                    .and_then(|m| m.path.clone())
                    .or_else(|| m.and_then(|m| m.title.clone()))
                {
                    Some(s) => vec![format!("series:{s}")],
                    None => vec![format!("event:{event_id}")],
                }
            }
        }
    }
}

/// `folder:<dir>` for every file's folder (and a renamed file's old folder), or the media
/// folder when the event names no file; `item:<ratingKey>` for a Plex item without paths
/// (Plex `library.new`, Tautulli "recently added").
pub fn folder_keys(ev: &NormalizedEvent) -> Vec<String> {
    let rating_key = ev
        .media
        .as_ref()
        .and_then(|m| m.ids.plex_rating_key.as_deref());
    // "Plex has a new item" needs no scan, only a card check of that item (Tautulli's
    // `created` also names the file, but as Plex already sees it).
    if let (crate::model::EventKind::LibraryNew, Some(rk)) = (&ev.kind, rating_key) {
        return vec![format!("item:{rk}")];
    }
    let mut keys: Vec<String> = Vec::new();
    fn push(keys: &mut Vec<String>, k: String) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for f in &ev.files {
        if let Some(dir) = parent_dir(&f.path) {
            push(&mut keys, format!("folder:{dir}"));
        }
        if let Some(prev) = f.previous_path.as_deref() {
            // For imports `previous_path` is the download's source: not a library folder.
            if ev.kind == crate::model::EventKind::Rename {
                if let Some(dir) = parent_dir(prev) {
                    push(&mut keys, format!("folder:{dir}"));
                }
            }
        }
    }
    if keys.is_empty() {
        let media = ev.media.as_ref();
        if let Some(p) = media
            .and_then(|m| m.path.as_deref())
            .filter(|p| !p.is_empty())
        {
            push(
                &mut keys,
                format!("folder:{}", p.trim_end_matches(['/', '\\'])),
            );
        } else if let Some(rk) = media.and_then(|m| m.ids.plex_rating_key.as_deref()) {
            push(&mut keys, format!("item:{rk}"));
        }
    }
    keys
}

/// The folder a file is in, on the sender's side (either separator).
fn parent_dir(path: &str) -> Option<&str> {
    let cut = path.trim_end_matches(['/', '\\']).rfind(['/', '\\'])?;
    Some(if cut == 0 { &path[..1] } else { &path[..cut] })
}

/// Stable id of a group's delivery: the same group always gets the same id, so firing it
/// twice (after a crash) creates one delivery.
pub fn group_delivery_id(target: &str, key: &str, first_seq: i64) -> String {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(first_seq.to_be_bytes());
    format!("grp_{}", hex::encode(&h.finalize()[..12]))
}

/// Id of a group's delivery from every event in it: used when [`group_delivery_id`] is
/// taken by an earlier group with the same first event, which can only happen when that
/// event was added again after its fired item was pruned.
pub fn group_delivery_id_of_all(target: &str, key: &str, seqs: &[i64]) -> String {
    let mut h = Sha256::new();
    // Never the same input as `group_delivery_id`, even for a group of one.
    h.update(b"all\0");
    h.update(target.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    for s in seqs {
        h.update([0]);
        h.update(s.to_be_bytes());
    }
    format!("grp_{}", hex::encode(&h.finalize()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, FileRef, Media, SourceKind};

    fn ev(kind: EventKind, files: &[(&str, Option<&str>)]) -> NormalizedEvent {
        let mut e = NormalizedEvent::new(SourceKind::Sonarr, "sonarr", kind, "Download");
        e.files = files
            .iter()
            .map(|(p, prev)| FileRef {
                path: (*p).into(),
                previous_path: prev.map(Into::into),
                ..FileRef::default()
            })
            .collect();
        e
    }

    #[test]
    fn debounce_folder_keys_cover_files_and_renames() {
        let e = ev(
            EventKind::Import,
            &[("/tv/A/Season 01/a.mkv", Some("/downloads/a.mkv"))],
        );
        assert_eq!(folder_keys(&e), vec!["folder:/tv/A/Season 01"]);
        let e = ev(
            EventKind::Rename,
            &[("/tv/A/Season 02/b.mkv", Some("/tv/A/Season 01/b.mkv"))],
        );
        assert_eq!(
            folder_keys(&e),
            vec!["folder:/tv/A/Season 02", "folder:/tv/A/Season 01"]
        );
        let e = ev(EventKind::Import, &[(r"D:\TV\A\Season 01\a.mkv", None)]);
        assert_eq!(folder_keys(&e), vec![r"folder:D:\TV\A\Season 01"]);
    }

    #[test]
    fn debounce_folder_keys_fall_back_to_media_then_rating_key() {
        let mut e = ev(EventKind::SeriesAdd, &[]);
        e.media = Some(Media {
            path: Some("/tv/A/".into()),
            ..Media::default()
        });
        assert_eq!(folder_keys(&e), vec!["folder:/tv/A"]);
        let mut e = ev(EventKind::LibraryNew, &[]);
        let mut m = Media::default();
        m.ids.plex_rating_key = Some("48049".into());
        e.media = Some(m);
        assert_eq!(folder_keys(&e), vec!["item:48049"]);
        // Tautulli's "recently added" names the file too: still a card check, no scan.
        e.files.push(FileRef {
            path: "/data/tv/A/Season 01/a.mkv".into(),
            ..FileRef::default()
        });
        assert_eq!(folder_keys(&e), vec!["item:48049"]);
        assert!(folder_keys(&ev(EventKind::Health, &[])).is_empty());
    }

    #[test]
    fn debounce_download_id_key_falls_back_to_the_event() {
        let mut e = ev(EventKind::Import, &[]);
        assert_eq!(DebounceKey::DownloadId.keys("E1", &e), vec!["event:E1"]);
        e.download_id = Some("SAB_1".into());
        assert_eq!(
            DebounceKey::DownloadId.keys("E1", &e),
            vec!["download:SAB_1"]
        );
    }

    #[test]
    fn debounce_resolve_applies_target_source_then_kind() {
        let mut cfg = DebounceConfig::default();
        let e = ev(EventKind::Delete, &[]);
        assert_eq!(
            cfg.resolve(None, &e),
            (Duration::from_secs(15), Duration::from_secs(120))
        );
        assert_eq!(
            cfg.resolve(Some(Duration::from_secs(5)), &e).0,
            Duration::from_secs(5)
        );
        cfg.sources.insert(
            "SONARR".into(),
            DebounceOverride {
                quiet: Some(Duration::from_secs(30)),
                max_wait: None,
            },
        );
        assert_eq!(cfg.resolve(None, &e).0, Duration::from_secs(30));
        cfg.kinds.insert(
            "delete".into(),
            DebounceOverride {
                quiet: Some(Duration::from_secs(40)),
                max_wait: Some(Duration::from_secs(300)),
            },
        );
        assert_eq!(
            cfg.resolve(None, &e),
            (Duration::from_secs(40), Duration::from_secs(300))
        );
    }

    #[test]
    fn debounce_group_ids_are_stable_and_distinct() {
        let a = group_delivery_id("plex:home", "folder:/a", 1);
        assert_eq!(a, group_delivery_id("plex:home", "folder:/a", 1));
        assert_ne!(a, group_delivery_id("plex:home", "folder:/a", 2));
        assert_ne!(a, group_delivery_id("plex:home", "folder:/b", 1));
        assert!(a.starts_with("grp_"));
        let all = group_delivery_id_of_all("plex:home", "folder:/a", &[1, 2]);
        assert_eq!(
            all,
            group_delivery_id_of_all("plex:home", "folder:/a", &[1, 2])
        );
        assert_ne!(all, a, "a fallback id differs from the first event's");
        assert_ne!(
            group_delivery_id_of_all("plex:home", "folder:/a", &[1]),
            a,
            "even for a group of one"
        );
        assert_ne!(
            all,
            group_delivery_id_of_all("plex:home", "folder:/a", &[1, 3])
        );
    }
}
