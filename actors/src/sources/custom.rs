//! Custom JSON from any sender: an event name and a file path are required.
//!
//! The format is ours, for scripts and tools without a webhook of their own:
//!
//! ```json
//! {"event": "import", "file_path": "/tv/Show/Season 01/e1.mkv", "title": "Show",
//!  "media_type": "series", "tvdb_id": 123, "season": 1, "episode": 1, "tags": ["hd"]}
//! ```
//!
//! `event` may be one of our own kind names (`import`, `upgrade`, `delete`, …), which sets
//! the kind; any other name is kept with kind `other`. A [`CustomMapping`] renames the keys
//! for a sender that cannot be changed, and every key matches loosely (`filePath`,
//! `FilePath` and `file_path` are one key; see `sources/keys.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{i32_of, text_of, value_of};
use super::lenient::{flag, id, strings};
use super::tautulli::TemplateKeys;
use super::ParseError;
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent, SourceKind};

/// Which keys of a custom sender's JSON hold what. Each field is one key or a list tried in
/// order; matching ignores case, `_`, `-` and spaces, and `a.b` reaches into nested objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomMapping {
    /// The event name; one of our kind names sets the kind. Required. Default `event`.
    pub event: TemplateKeys,
    /// The file's absolute path. Required. Default `file_path`.
    pub file_path: TemplateKeys,
    /// The path the file had before (a rename or an upgrade). Default `previous_path`.
    pub previous_path: TemplateKeys,
    /// Whether this import replaced a file. Default `is_upgrade` (else: true for `upgrade`).
    pub is_upgrade: TemplateKeys,
    /// The download client's id. Default `download_id`.
    pub download_id: TemplateKeys,
    /// Labels: a list, or one comma-separated string. Default `tags`.
    pub tags: TemplateKeys,
    /// `series`, `movie`, `episode`, …. Default `media_type`.
    pub media_type: TemplateKeys,
    /// The media title (the series, for an episode). Default `title`.
    pub title: TemplateKeys,
    /// Default `year`.
    pub year: TemplateKeys,
    /// Default `season`.
    pub season: TemplateKeys,
    /// Default `episode`.
    pub episode: TemplateKeys,
    /// Default `tvdb_id`.
    pub tvdb: TemplateKeys,
    /// Default `tmdb_id`.
    pub tmdb: TemplateKeys,
    /// Default `imdb_id`.
    pub imdb: TemplateKeys,
}

impl Default for CustomMapping {
    fn default() -> Self {
        CustomMapping {
            event: "event".into(),
            file_path: "file_path".into(),
            previous_path: "previous_path".into(),
            is_upgrade: "is_upgrade".into(),
            download_id: "download_id".into(),
            tags: "tags".into(),
            media_type: "media_type".into(),
            title: "title".into(),
            year: "year".into(),
            season: "season".into(),
            episode: "episode".into(),
            tvdb: "tvdb_id".into(),
            tmdb: "tmdb_id".into(),
            imdb: "imdb_id".into(),
        }
    }
}

/// The first key of a mapping field, for error messages.
fn first_key(keys: &TemplateKeys, fallback: &str) -> String {
    keys.keys()
        .first()
        .map_or_else(|| fallback.to_owned(), Clone::clone)
}

/// Normalises one custom JSON body with the configured key mapping.
pub fn normalise_custom(
    instance: &str,
    m: &CustomMapping,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let event_type = text_of(v, &m.event)
        .ok_or_else(|| ParseError::MissingEventType(first_key(&m.event, "event")))?;
    let path = text_of(v, &m.file_path)
        .ok_or_else(|| ParseError::MissingField(first_key(&m.file_path, "file_path")))?;
    let kind = EventKind::from_name(event_type.trim()).unwrap_or(EventKind::Other);
    let mut ev = NormalizedEvent::new(SourceKind::Custom, instance, kind, &event_type);
    ev.is_upgrade = value_of(v, &m.is_upgrade)
        .and_then(flag)
        .unwrap_or(ev.kind == EventKind::Upgrade);
    ev.download_id = text_of(v, &m.download_id);
    ev.tags = value_of(v, &m.tags).map(strings).unwrap_or_default();
    ev.files.push(FileRef {
        path,
        previous_path: text_of(v, &m.previous_path),
        deleted: ev.kind == EventKind::Delete,
        ..FileRef::default()
    });

    let (season, episode) = (i32_of(v, &m.season), i32_of(v, &m.episode));
    if season.is_some() || episode.is_some() {
        ev.episodes.push(Episode {
            season,
            episode,
            ..Episode::default()
        });
    }
    let media_type = text_of(v, &m.media_type);
    let title = text_of(v, &m.title);
    let ids = MediaIds {
        tvdb: value_of(v, &m.tvdb).and_then(id),
        tmdb: value_of(v, &m.tmdb).and_then(id),
        imdb: text_of(v, &m.imdb),
        ..MediaIds::default()
    };
    if media_type.is_some() || title.is_some() || ids != MediaIds::default() {
        ev.media = Some(Media {
            media_type: media_type
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_else(|| "unknown".into()),
            title,
            year: i32_of(v, &m.year).filter(|y| *y > 0),
            path: None,
            ids,
            library: None,
        });
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn custom_event_uses_our_kind_names_case_insensitively() {
        let ev = normalise_custom(
            "c",
            &CustomMapping::default(),
            &json!({"event": "Upgrade", "file_path": "/tv/a.mkv", "previous_path": "/dl/a.mkv"}),
        )
        .expect("parses");
        assert_eq!(ev.kind, EventKind::Upgrade);
        assert_eq!(ev.event_type, "Upgrade");
        assert!(ev.is_upgrade);
        assert_eq!(ev.files[0].previous_path.as_deref(), Some("/dl/a.mkv"));
        assert!(ev.media.is_none());
    }

    #[test]
    fn custom_unknown_event_is_other() {
        let ev = normalise_custom(
            "c",
            &CustomMapping::default(),
            &json!({"event": "transcoded", "file_path": "/x"}),
        )
        .expect("parses");
        assert_eq!(ev.kind, EventKind::Other);
    }

    #[test]
    fn custom_requires_event_then_file_path() {
        assert_eq!(
            normalise_custom("c", &CustomMapping::default(), &json!({"file_path": "/x"})),
            Err(ParseError::MissingEventType("event".into()))
        );
        assert_eq!(
            normalise_custom(
                "c",
                &CustomMapping::default(),
                &json!({"event": "import", "file_path": ""})
            ),
            Err(ParseError::MissingField("file_path".into()))
        );
    }

    #[test]
    fn custom_accepts_numbers_as_strings() {
        let ev = normalise_custom(
            "c",
            &CustomMapping::default(),
            &json!({"event": "import", "file_path": "/x", "title": "Show", "year": "2015",
                    "tvdb_id": "280619", "season": "3", "episode": 5, "is_upgrade": "false",
                    "tags": "a,b"}),
        )
        .expect("parses");
        let media = ev.media.expect("media");
        assert_eq!(media.year, Some(2015));
        assert_eq!(media.ids.tvdb, Some(280619));
        assert_eq!(media.media_type, "unknown");
        assert_eq!(ev.episodes[0].season, Some(3));
        assert!(!ev.is_upgrade);
        assert_eq!(ev.tags, ["a", "b"]);
    }

    #[test]
    fn custom_keys_match_loosely_and_a_mapping_renames_them() {
        let d = CustomMapping::default();
        let ev = normalise_custom(
            "c",
            &d,
            &json!({"Event": "import", "filePath": "/tv/a.mkv", "TvdbId": "7", "Title": "A"}),
        )
        .expect("loose keys");
        assert_eq!(ev.files[0].path, "/tv/a.mkv");
        assert_eq!(ev.media.expect("media").ids.tvdb, Some(7));

        let m: CustomMapping = serde_json::from_value(json!({
            "event": ["action", "event"], "file_path": "item.path", "title": "item.name"
        }))
        .expect("valid mapping");
        let ev = normalise_custom(
            "c",
            &m,
            &json!({"action": "Upgrade", "item": {"path": "/m/Dune.mkv", "name": "Dune"}}),
        )
        .expect("mapped");
        assert_eq!(ev.kind, EventKind::Upgrade);
        assert_eq!(ev.files[0].path, "/m/Dune.mkv");
        assert_eq!(ev.media.expect("media").title.as_deref(), Some("Dune"));
        assert_eq!(
            normalise_custom("c", &m, &json!({"action": "import"})),
            Err(ParseError::MissingField("item.path".into()))
        );
        assert!(serde_json::from_value::<CustomMapping>(json!({"file": "x"})).is_err());
    }
}
