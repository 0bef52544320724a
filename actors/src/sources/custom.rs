//! Custom JSON from any sender: `event` and `file_path` are required.
//!
//! The format is ours, for scripts and tools without a webhook of their own:
//!
//! ```json
//! {"event": "import", "file_path": "/tv/Show/Season 01/e1.mkv", "title": "Show",
//!  "media_type": "series", "tvdb_id": 123, "season": 1, "episode": 1, "tags": ["hd"]}
//! ```
//!
//! `event` may be one of our own kind names (`import`, `upgrade`, `delete`, …), which sets
//! the kind; any other name is kept with kind `other`.

use serde_json::Value;

use super::lenient::{field, flag_at, i32_at, id_at, strings, text_at, year_at};
use super::ParseError;
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent, SourceKind};

/// Normalises one custom JSON body.
pub fn normalise_custom(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let event_type =
        text_at(v, "event").ok_or_else(|| ParseError::MissingEventType("event".into()))?;
    let path =
        text_at(v, "file_path").ok_or_else(|| ParseError::MissingField("file_path".into()))?;
    let kind = EventKind::from_name(event_type.trim()).unwrap_or(EventKind::Other);
    let mut ev = NormalizedEvent::new(SourceKind::Custom, instance, kind, &event_type);
    ev.is_upgrade = flag_at(v, "is_upgrade").unwrap_or(ev.kind == EventKind::Upgrade);
    ev.download_id = text_at(v, "download_id");
    ev.tags = field(v, "tags").map(strings).unwrap_or_default();
    ev.files.push(FileRef {
        path,
        previous_path: text_at(v, "previous_path"),
        deleted: ev.kind == EventKind::Delete,
        ..FileRef::default()
    });

    let (season, episode) = (i32_at(v, "season"), i32_at(v, "episode"));
    if season.is_some() || episode.is_some() {
        ev.episodes.push(Episode {
            season,
            episode,
            ..Episode::default()
        });
    }
    let media_type = text_at(v, "media_type");
    let title = text_at(v, "title");
    let ids = MediaIds {
        tvdb: id_at(v, "tvdb_id"),
        tmdb: id_at(v, "tmdb_id"),
        imdb: text_at(v, "imdb_id"),
        ..MediaIds::default()
    };
    if media_type.is_some() || title.is_some() || ids != MediaIds::default() {
        ev.media = Some(Media {
            media_type: media_type
                .map(|t| t.to_ascii_lowercase())
                .unwrap_or_else(|| "unknown".into()),
            title,
            year: year_at(v, "year"),
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
        let ev = normalise_custom("c", &json!({"event": "transcoded", "file_path": "/x"}))
            .expect("parses");
        assert_eq!(ev.kind, EventKind::Other);
    }

    #[test]
    fn custom_requires_event_then_file_path() {
        assert_eq!(
            normalise_custom("c", &json!({"file_path": "/x"})),
            Err(ParseError::MissingEventType("event".into()))
        );
        assert_eq!(
            normalise_custom("c", &json!({"event": "import", "file_path": ""})),
            Err(ParseError::MissingField("file_path".into()))
        );
    }

    #[test]
    fn custom_accepts_numbers_as_strings() {
        let ev = normalise_custom(
            "c",
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
}
