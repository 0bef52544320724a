//! Plex Media Server webhooks: the JSON of the multipart `payload` part.
//!
//! Plex is closed source; the shape follows Plex's webhook support article and PMS's
//! `/library/metadata` JSON, which `Metadata` mirrors. Keys that differ only by case are
//! distinct fields here (`guid` is the Plex guid string, `Guid` the external-id list;
//! `rating` the user's rating, `Rating` the critic/audience list), so every lookup is exact.

use serde_json::Value;

use super::lenient::{field, i32_at, object, objects, put, strings, text_at, year_at};
use super::ParseError;
use crate::model::{Episode, EventKind, Media, MediaIds, NormalizedEvent, SourceKind};

/// Normalises the decoded `payload` JSON of one Plex webhook.
pub fn normalise_plex(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let event_type =
        text_at(v, "event").ok_or_else(|| ParseError::MissingEventType("event".into()))?;
    let mut ev = NormalizedEvent::new(
        SourceKind::Plex,
        instance,
        classify(&event_type),
        &event_type,
    );
    ev.sender_instance = object(v, "Server").and_then(|s| text_at(s, "title"));
    put(
        &mut ev,
        "user",
        object(v, "Account").and_then(|a| text_at(a, "title")),
    );
    put(
        &mut ev,
        "player",
        object(v, "Player").and_then(|p| text_at(p, "title")),
    );
    // media.rate: the user's 0–10 rating, top level (not `Metadata.Rating`).
    put(&mut ev, "rating", text_at(v, "rating"));
    if let Some(m) = object(v, "Metadata") {
        read_metadata(m, &mut ev);
    }
    Ok(ev)
}

/// Maps a Plex `event` (compared case-insensitively) to our kind.
fn classify(event: &str) -> EventKind {
    match event.to_ascii_lowercase().as_str() {
        "library.new" => EventKind::LibraryNew,
        "library.on.deck" => EventKind::OnDeck,
        "media.play" => EventKind::Play,
        "media.pause" => EventKind::Pause,
        "media.resume" => EventKind::Resume,
        "media.stop" => EventKind::Stop,
        "media.scrobble" => EventKind::Played,
        "media.rate" => EventKind::Rated,
        "playback.started" => EventKind::PlaybackStarted,
        "admin.database.backup" => EventKind::DatabaseBackup,
        "admin.database.corrupted" => EventKind::DatabaseCorrupted,
        "device.new" => EventKind::DeviceNew,
        _ => EventKind::Other,
    }
}

/// External ids from the `Guid` list (`tvdb://…`, `tmdb://…`, `imdb://…`) or, on items
/// still matched by a legacy agent, from the `guid` string itself.
#[derive(Default)]
struct ExternalIds {
    tvdb: Option<i64>,
    tmdb: Option<i64>,
    imdb: Option<String>,
}

fn external_ids(m: &Value) -> ExternalIds {
    let mut ids = ExternalIds::default();
    for g in objects(m, "Guid") {
        let Some(id) = text_at(g, "id") else { continue };
        if let Some(n) = id.strip_prefix("tvdb://") {
            ids.tvdb = ids.tvdb.or_else(|| n.parse().ok());
        } else if let Some(n) = id.strip_prefix("tmdb://") {
            ids.tmdb = ids.tmdb.or_else(|| n.parse().ok());
        } else if let Some(n) = id.strip_prefix("imdb://") {
            ids.imdb = ids.imdb.or_else(|| Some(n.to_owned()));
        }
    }
    ids
}

/// The id in a legacy agent guid such as `com.plexapp.agents.thetvdb://280619/3/5?lang=en`
/// (the *show* id for an episode) or `com.plexapp.agents.imdb://tt0111161?lang=en`.
fn legacy_guid_ids(guid: &str) -> ExternalIds {
    let mut ids = ExternalIds::default();
    let Some((agent, rest)) = guid.split_once("://") else {
        return ids;
    };
    let first = rest.split(['/', '?']).next().unwrap_or_default();
    match agent.rsplit('.').next().unwrap_or_default() {
        "thetvdb" | "tvdb" => ids.tvdb = first.parse().ok(),
        "themoviedb" | "tmdb" => ids.tmdb = first.parse().ok(),
        "imdb" if first.starts_with("tt") => ids.imdb = Some(first.to_owned()),
        _ => {}
    }
    ids
}

fn read_metadata(m: &Value, ev: &mut NormalizedEvent) {
    let media_type = text_at(m, "type")
        .map(|t| t.to_ascii_lowercase())
        .unwrap_or_else(|| "unknown".into());
    let guid = text_at(m, "guid");
    let item_ids = external_ids(m);
    let legacy = guid.as_deref().map(legacy_guid_ids).unwrap_or_default();
    let mut media = Media {
        media_type: media_type.clone(),
        title: text_at(m, "title"),
        year: None,
        path: None,
        ids: MediaIds {
            // The rating key and guid identify the item the event is about, even when
            // `media` describes its show.
            plex_rating_key: text_at(m, "ratingKey"),
            guid,
            ..MediaIds::default()
        },
        library: text_at(m, "librarySectionTitle").or_else(|| text_at(m, "librarySectionID")),
    };
    match media_type.as_str() {
        // `Guid` on an episode holds the *episode's* ids and `year` its air year, so they
        // go to the episode; `media` is the show, which the payload names but does not id
        // (except through a legacy `thetvdb://show/season/episode` guid).
        "episode" => {
            media.title = text_at(m, "grandparentTitle").or_else(|| text_at(m, "title"));
            media.ids.tvdb = legacy.tvdb;
            ev.episodes.push(Episode {
                season: i32_at(m, "parentIndex"),
                episode: i32_at(m, "index"),
                title: text_at(m, "title"),
                tvdb: item_ids.tvdb,
                air_date: text_at(m, "originallyAvailableAt"),
            });
            put(ev, "episode_tmdb", item_ids.tmdb.map(|n| n.to_string()));
            put(ev, "episode_imdb", item_ids.imdb);
            put(ev, "show_rating_key", text_at(m, "grandparentRatingKey"));
        }
        "season" => {
            media.title = text_at(m, "parentTitle").or_else(|| text_at(m, "title"));
            ev.episodes.push(Episode {
                season: i32_at(m, "index"),
                title: text_at(m, "title"),
                ..Episode::default()
            });
            put(ev, "show_rating_key", text_at(m, "parentRatingKey"));
        }
        _ => {
            media.year = year_at(m, "year");
            media.ids.tvdb = item_ids.tvdb.or(legacy.tvdb);
            media.ids.tmdb = item_ids.tmdb.or(legacy.tmdb);
            media.ids.imdb = item_ids.imdb.or(legacy.imdb);
            if media_type == "track" {
                put(ev, "artist", text_at(m, "grandparentTitle"));
                put(ev, "album", text_at(m, "parentTitle"));
            }
        }
    }
    ev.tags = field(m, "Label")
        .or_else(|| field(m, "label"))
        .map(strings)
        .unwrap_or_default();
    ev.media = Some(media);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plex(v: &Value) -> NormalizedEvent {
        normalise_plex("plex", v).expect("parses")
    }

    #[test]
    fn plex_events_map_case_insensitively() {
        let cases = [
            ("library.new", EventKind::LibraryNew),
            ("Library.On.Deck", EventKind::OnDeck),
            ("media.play", EventKind::Play),
            ("media.pause", EventKind::Pause),
            ("media.resume", EventKind::Resume),
            ("media.stop", EventKind::Stop),
            ("MEDIA.SCROBBLE", EventKind::Played),
            ("media.rate", EventKind::Rated),
            ("playback.started", EventKind::PlaybackStarted),
            ("admin.database.backup", EventKind::DatabaseBackup),
            ("admin.database.corrupted", EventKind::DatabaseCorrupted),
            ("device.new", EventKind::DeviceNew),
            ("media.transcode", EventKind::Other),
        ];
        for (name, kind) in cases {
            let ev = plex(&json!({"event": name}));
            assert_eq!(ev.kind, kind, "{name}");
            assert_eq!(ev.event_type, name);
        }
    }

    #[test]
    fn plex_missing_event_is_missing_event_type() {
        assert_eq!(
            normalise_plex("plex", &json!({"Event": "media.play"})),
            Err(ParseError::MissingEventType("event".into()))
        );
    }

    #[test]
    fn plex_episode_puts_show_in_media_and_episode_ids_in_episode() {
        let ev = plex(&json!({
            "event": "media.scrobble",
            "rating": 8,
            "Account": {"title": "jholden"},
            "Server": {"title": "Rocinante"},
            "Metadata": {
                "type": "episode", "title": "Triple Point", "grandparentTitle": "The Expanse",
                "parentIndex": 3, "index": 5, "year": 2018, "ratingKey": "48213",
                "guid": "plex://episode/5d9c", "librarySectionID": 2,
                "Guid": [{"id": "imdb://tt7200436"}, {"id": "tmdb://1482236"}, {"id": "tvdb://6560810"}],
                "Rating": [{"value": 8.4}],
                "Label": [{"tag": "watched-together"}]
            }
        }));
        let media = ev.media.as_ref().expect("media");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(media.year, None);
        assert_eq!(media.ids.tvdb, None);
        assert_eq!(media.ids.plex_rating_key.as_deref(), Some("48213"));
        assert_eq!(media.ids.guid.as_deref(), Some("plex://episode/5d9c"));
        assert_eq!(media.library.as_deref(), Some("2"));
        assert_eq!(ev.episodes[0].tvdb, Some(6560810));
        assert_eq!(ev.episodes[0].season, Some(3));
        assert_eq!(ev.episodes[0].episode, Some(5));
        assert_eq!(ev.details["episode_imdb"], "tt7200436");
        assert_eq!(ev.details["rating"], "8");
        assert_eq!(ev.details["user"], "jholden");
        assert_eq!(ev.sender_instance.as_deref(), Some("Rocinante"));
        assert_eq!(ev.tags, ["watched-together"]);
    }

    #[test]
    fn plex_movie_takes_ids_from_guid_list_or_legacy_guid() {
        let ev = plex(&json!({"event": "library.new", "Metadata": {
            "type": "movie", "title": "Dune", "year": "2021", "ratingKey": 7,
            "Guid": [{"id": "tmdb://438631"}, {"id": "imdb://tt1160419"}]
        }}));
        let media = ev.media.expect("media");
        assert_eq!(media.year, Some(2021));
        assert_eq!(media.ids.tmdb, Some(438631));
        assert_eq!(media.ids.imdb.as_deref(), Some("tt1160419"));
        assert_eq!(media.ids.plex_rating_key.as_deref(), Some("7"));

        let ev = plex(&json!({"event": "media.play", "Metadata": {
            "type": "episode", "grandparentTitle": "Show",
            "guid": "com.plexapp.agents.thetvdb://280619/3/5?lang=en"
        }}));
        assert_eq!(ev.media.and_then(|m| m.ids.tvdb), Some(280619));
    }

    #[test]
    fn plex_server_events_without_metadata_have_no_media() {
        let ev = plex(
            &json!({"event": "admin.database.backup", "Server": {"title": "R"}, "Metadata": null}),
        );
        assert!(ev.media.is_none());
        assert!(ev.files.is_empty());
    }
}
