//! Tautulli webhook agent bodies: user-templated JSON, fields mapped by config.
//!
//! Tautulli has no fixed schema: the body is the user's per-trigger "JSON Data" template with
//! every `{parameter}` substituted as a *string* (`"3"`, `""` when unknown), so a
//! [`TautulliMapping`] names which template key holds each value. The defaults assume the
//! common habit of naming each key after its Tautulli parameter (`"show_name": "{show_name}"`,
//! names from `plexpy/common.py` `NOTIFICATION_PARAMETERS`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient::{field, i32_at, id_at, put, strings, text_at, year_at};
use super::ParseError;
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent, SourceKind};

/// One template key, or several tried in order (the first present, non-blank one wins).
/// Written in config as a string (`"show_name"`) or a list (`["action", "event"]`); an empty
/// list turns the field off. Several keys help because Tautulli templates are per trigger, so
/// one user's "play" and "created" templates may spell a key differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OneOrMany", into = "OneOrMany")]
pub struct TemplateKeys(Vec<String>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for TemplateKeys {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(k) => TemplateKeys(vec![k]),
            OneOrMany::Many(ks) => TemplateKeys(ks),
        }
    }
}

impl From<TemplateKeys> for OneOrMany {
    fn from(k: TemplateKeys) -> Self {
        match <[String; 1]>::try_from(k.0) {
            Ok([one]) => OneOrMany::One(one),
            Err(many) => OneOrMany::Many(many),
        }
    }
}

impl TemplateKeys {
    /// Keys tried in order.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        TemplateKeys(keys.into_iter().map(Into::into).collect())
    }

    /// The keys, in the order they are tried.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// The first of these keys that holds a value in `v`.
    fn find<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        // Blank strings are Tautulli's "unknown" (a parameter with no value substitutes "").
        self.0
            .iter()
            .find_map(|k| field(v, k).filter(|x| text_at(v, k).is_some() || x.is_array()))
    }

    fn text(&self, v: &Value) -> Option<String> {
        self.0.iter().find_map(|k| text_at(v, k))
    }

    fn int<T>(&self, v: &Value, read: fn(&Value, &str) -> Option<T>) -> Option<T> {
        self.0.iter().find_map(|k| read(v, k))
    }
}

impl From<&str> for TemplateKeys {
    fn from(k: &str) -> Self {
        TemplateKeys(vec![k.to_owned()])
    }
}

/// Which JSON fields of the user's Tautulli template hold what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TautulliMapping {
    /// The notification action (`{action}`: `play`, `stop`, `created`, `watched`, …).
    /// Required; when missing, the error names the first key. Default `["action", "event"]`.
    pub event: TemplateKeys,
    /// `{media_type}`: `movie`, `episode`, `season`, `show`, `track`, …. Default `media_type`.
    pub media_type: TemplateKeys,
    /// `{title}`: the item's full title (for an episode, "Show - Episode"). Default `title`.
    pub title: TemplateKeys,
    /// `{show_name}`: the show of an episode or season; becomes the media title. Default
    /// `show_name`.
    pub show: TemplateKeys,
    /// `{episode_name}`: the episode's own title. Default `episode_name`.
    pub episode_title: TemplateKeys,
    /// `{season_num}`. Default `season_num`.
    pub season: TemplateKeys,
    /// `{episode_num}`. Default `episode_num`.
    pub episode: TemplateKeys,
    /// `{year}`: the item's year. For an episode this is its air year, so it is not used as
    /// the show's year (see `show_year`). Default `year`.
    pub year: TemplateKeys,
    /// `{show_year}`: the show's year, used as the media year of episodes and seasons.
    /// Default `show_year`.
    pub show_year: TemplateKeys,
    /// `{rating_key}`: the Plex rating key of the item. Default `rating_key`.
    pub rating_key: TemplateKeys,
    /// `{file}`: the item's absolute path on the Plex server. Default `file`.
    pub file: TemplateKeys,
    /// `{thetvdb_id}`: for an episode or season, the *show's* id. Default `thetvdb_id`.
    pub tvdb: TemplateKeys,
    /// `{themoviedb_id}`: for an episode or season, the show's id. Default `themoviedb_id`.
    pub tmdb: TemplateKeys,
    /// `{imdb_id}`. Default `imdb_id`.
    pub imdb: TemplateKeys,
    /// `{library_name}`. Default `library_name`.
    pub library: TemplateKeys,
    /// `{username}` (or `{user}`, the friendly name); kept as the `user` detail. Default
    /// `username`.
    pub user: TemplateKeys,
    /// `{server_name}`: the Plex server, kept as the event's sender instance. Default
    /// `server_name`.
    pub server: TemplateKeys,
    /// `{labels}`: the item's Plex labels, a comma-separated string. Default `labels`.
    pub labels: TemplateKeys,
}

impl Default for TautulliMapping {
    fn default() -> Self {
        TautulliMapping {
            // `action` is Tautulli's own name; `event` is what many templates call it.
            event: TemplateKeys::new(["action", "event"]),
            media_type: "media_type".into(),
            title: "title".into(),
            show: "show_name".into(),
            episode_title: "episode_name".into(),
            season: "season_num".into(),
            episode: "episode_num".into(),
            year: "year".into(),
            show_year: "show_year".into(),
            rating_key: "rating_key".into(),
            file: "file".into(),
            tvdb: "thetvdb_id".into(),
            tmdb: "themoviedb_id".into(),
            imdb: "imdb_id".into(),
            library: "library_name".into(),
            user: "username".into(),
            server: "server_name".into(),
            labels: "labels".into(),
        }
    }
}

/// Normalises one Tautulli webhook body using the configured field mapping.
pub fn normalise_tautulli(
    instance: &str,
    mapping: &TautulliMapping,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let event_type = mapping.event.text(v).ok_or_else(|| {
        let first = mapping.event.keys().first().map(String::as_str);
        ParseError::MissingEventType(first.unwrap_or("action").to_owned())
    })?;
    let mut ev = NormalizedEvent::new(
        SourceKind::Tautulli,
        instance,
        classify(&event_type),
        &event_type,
    );
    ev.sender_instance = mapping.server.text(v);
    put(&mut ev, "user", mapping.user.text(v));
    ev.tags = mapping.labels.find(v).map(strings).unwrap_or_default();
    if let Some(path) = mapping.file.text(v) {
        ev.files.push(FileRef {
            path,
            ..FileRef::default()
        });
    }

    let media_type = mapping.media_type.text(v).map(|t| t.to_ascii_lowercase());
    let title = mapping.title.text(v);
    let show = mapping.show.text(v);
    let is_tv_child = matches!(media_type.as_deref(), Some("episode" | "season"));
    if is_tv_child {
        ev.episodes.push(Episode {
            season: mapping.season.int(v, i32_at),
            episode: mapping.episode.int(v, i32_at),
            title: mapping.episode_title.text(v),
            ..Episode::default()
        });
    }
    let ids = MediaIds {
        tvdb: mapping.tvdb.int(v, id_at),
        tmdb: mapping.tmdb.int(v, id_at),
        imdb: mapping.imdb.text(v),
        plex_rating_key: mapping.rating_key.text(v),
        ..MediaIds::default()
    };
    let library = mapping.library.text(v);
    if media_type.is_some() || title.is_some() || show.is_some() || ids != MediaIds::default() {
        ev.media = Some(Media {
            media_type: media_type.unwrap_or_else(|| "unknown".into()),
            title: if is_tv_child { show.or(title) } else { title },
            year: if is_tv_child {
                mapping.show_year.int(v, year_at)
            } else {
                mapping.year.int(v, year_at)
            },
            path: None,
            ids,
            library,
        });
    }
    Ok(ev)
}

/// Maps a Tautulli action (compared case-insensitively) to our kind.
fn classify(action: &str) -> EventKind {
    match action.to_ascii_lowercase().as_str() {
        "created" => EventKind::LibraryNew,
        "watched" => EventKind::Played,
        "play" => EventKind::Play,
        "stop" => EventKind::Stop,
        "pause" => EventKind::Pause,
        "resume" => EventKind::Resume,
        _ => EventKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tautulli(v: &Value) -> NormalizedEvent {
        normalise_tautulli("tautulli", &TautulliMapping::default(), v).expect("parses")
    }

    #[test]
    fn tautulli_default_mapping_reads_string_values() {
        let ev = tautulli(&json!({
            "event": "created", "media_type": "episode", "title": "The Expanse - Triple Point",
            "show_name": "The Expanse", "episode_name": "Triple Point", "season_num": "3",
            "episode_num": "5", "year": "2018", "show_year": "", "thetvdb_id": "280619",
            "themoviedb_id": "63639", "imdb_id": "tt3230854", "rating_key": "48213",
            "library_name": "TV Shows", "file": "/tv/x.mkv", "server_name": "Rocinante",
            "username": "", "labels": "hd, scifi"
        }));
        assert_eq!(ev.kind, EventKind::LibraryNew);
        let media = ev.media.as_ref().expect("media");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(media.year, None, "an episode's `year` is not the show's");
        assert_eq!(media.ids.tvdb, Some(280619));
        assert_eq!(media.ids.plex_rating_key.as_deref(), Some("48213"));
        assert_eq!(ev.episodes[0].season, Some(3));
        assert_eq!(ev.episodes[0].episode, Some(5));
        assert_eq!(ev.files[0].path, "/tv/x.mkv");
        assert_eq!(ev.sender_instance.as_deref(), Some("Rocinante"));
        assert!(!ev.details.contains_key("user"), "blank means absent");
        assert_eq!(ev.tags, ["hd", "scifi"]);
    }

    #[test]
    fn tautulli_actions_map_case_insensitively_and_unknown_is_other() {
        for (action, kind) in [
            ("Play", EventKind::Play),
            ("stop", EventKind::Stop),
            ("PAUSE", EventKind::Pause),
            ("resume", EventKind::Resume),
            ("watched", EventKind::Played),
            ("created", EventKind::LibraryNew),
            ("buffer", EventKind::Other),
        ] {
            let ev = tautulli(&json!({"action": action}));
            assert_eq!(ev.kind, kind, "{action}");
            assert_eq!(ev.event_type, action);
            assert!(ev.media.is_none());
        }
    }

    #[test]
    fn tautulli_missing_action_names_the_first_mapped_key() {
        let err = normalise_tautulli("t", &TautulliMapping::default(), &json!({"action": ""}));
        assert_eq!(err, Err(ParseError::MissingEventType("action".into())));
        let mapping = TautulliMapping {
            event: "trigger".into(),
            ..TautulliMapping::default()
        };
        let err = normalise_tautulli("t", &mapping, &json!({"action": "play"}));
        assert_eq!(err, Err(ParseError::MissingEventType("trigger".into())));
    }

    #[test]
    fn tautulli_mapping_accepts_a_key_or_a_list_and_rejects_unknown_fields() {
        let m: TautulliMapping =
            serde_json::from_value(json!({"event": "trigger", "title": ["name", "title"]}))
                .expect("valid mapping");
        assert_eq!(m.event.keys(), ["trigger"]);
        assert_eq!(m.title.keys(), ["name", "title"]);
        assert_eq!(m.show.keys(), ["show_name"], "unset fields keep defaults");
        assert!(serde_json::from_value::<TautulliMapping>(json!({"evnt": "x"})).is_err());
        let back = serde_json::to_value(&m).expect("serialise");
        assert_eq!(back["event"], "trigger");
        assert_eq!(back["title"], json!(["name", "title"]));
    }

    #[test]
    fn tautulli_movie_uses_year_and_literal_numbers_and_nulls() {
        let ev = tautulli(&json!({
            "action": "watched", "media_type": "movie", "title": "Dune", "year": 2021,
            "themoviedb_id": 438631, "imdb_id": null, "file": null
        }));
        let media = ev.media.expect("media");
        assert_eq!(media.year, Some(2021));
        assert_eq!(media.ids.tmdb, Some(438631));
        assert_eq!(media.ids.imdb, None);
        assert!(ev.files.is_empty() && ev.episodes.is_empty());
    }
}
