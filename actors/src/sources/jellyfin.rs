//! Jellyfin webhook plugin (Generic destination) bodies.
//!
//! Keys follow the plugin's data object (`Helpers/DataObjectHelpers.cs`): PascalCase, the
//! item's own provider ids as `Provider_<name>` strings, numbers as numbers. With "Send All
//! Properties" the body is exactly that object; with a Handlebars template the user picks
//! the keys, so lookups here fall back to a case-insensitive match.

use serde_json::Value;

use super::lenient::{field_ci, flag, id, int, put, text};
use super::ParseError;
use crate::model::{Episode, EventKind, Media, MediaIds, NormalizedEvent, SourceKind};

/// Normalises one Jellyfin webhook plugin body.
pub fn normalise_jellyfin(instance: &str, v: &Value) -> Result<NormalizedEvent, ParseError> {
    let event_type = get(v, "NotificationType")
        .ok_or_else(|| ParseError::MissingEventType("NotificationType".into()))?;
    let completed = field_ci(v, "PlayedToCompletion").and_then(flag);
    let mut ev = NormalizedEvent::new(
        SourceKind::Jellyfin,
        instance,
        classify(&event_type, completed == Some(true)),
        &event_type,
    );
    ev.sender_instance = get(v, "ServerName");
    put(&mut ev, "user", get(v, "NotificationUsername"));
    put(
        &mut ev,
        "played_to_completion",
        completed.map(|c| c.to_string()),
    );
    put(&mut ev, "device", get(v, "DeviceName"));
    put(&mut ev, "client", get(v, "ClientName"));
    read_item(v, &mut ev);
    Ok(ev)
}

/// A non-blank text value, by exact then case-insensitive key.
fn get(v: &Value, key: &str) -> Option<String> {
    field_ci(v, key).and_then(text)
}

/// An integer by key, else from its zero-padded twin (`SeasonNumber00: "03"`), which is all a
/// template that only copies the padded form provides.
fn number(v: &Value, key: &str) -> Option<i32> {
    [key.to_owned(), format!("{key}00"), format!("{key}000")]
        .iter()
        .find_map(|k| field_ci(v, k).and_then(int))
        .and_then(|n| i32::try_from(n).ok())
}

fn provider_id(v: &Value, name: &str) -> Option<i64> {
    field_ci(v, &format!("Provider_{name}")).and_then(id)
}

/// Maps a `NotificationType` (compared case-insensitively) to our kind.
fn classify(notification: &str, played_to_completion: bool) -> EventKind {
    match notification.to_ascii_lowercase().as_str() {
        "itemadded" => EventKind::LibraryNew,
        "playbackstart" => EventKind::Play,
        "playbackstop" if played_to_completion => EventKind::Played,
        "playbackstop" => EventKind::Stop,
        "itemdeleted" => EventKind::Delete,
        _ => EventKind::Other,
    }
}

fn read_item(v: &Value, ev: &mut NormalizedEvent) {
    let item_type = get(v, "ItemType");
    let name = get(v, "Name");
    // Server, user and plugin notifications carry no item.
    if item_type.is_none() && name.is_none() {
        return;
    }
    let media_type = item_type
        .map(|t| t.to_ascii_lowercase())
        .unwrap_or_else(|| "unknown".into());
    let mut media = Media {
        media_type: media_type.clone(),
        title: name.clone(),
        // For episodes and seasons the plugin already sends the series' production year.
        year: number(v, "Year").filter(|y| *y > 0),
        path: None,
        ids: MediaIds {
            guid: get(v, "ItemId"),
            ..MediaIds::default()
        },
        library: None,
    };
    match media_type.as_str() {
        // `Provider_*` are the item's own ids: on an episode they are the episode's, so they
        // belong to the episode, not to the series `media` describes.
        "episode" | "season" => {
            media.title = get(v, "SeriesName").or(name.clone());
            let is_episode = media_type == "episode";
            ev.episodes.push(Episode {
                season: number(v, "SeasonNumber"),
                episode: if is_episode {
                    number(v, "EpisodeNumber")
                } else {
                    None
                },
                title: name,
                tvdb: if is_episode {
                    provider_id(v, "tvdb")
                } else {
                    None
                },
                air_date: get(v, "PremiereDate"),
            });
            if is_episode {
                put(ev, "episode_tmdb", get(v, "Provider_tmdb"));
                put(ev, "episode_imdb", get(v, "Provider_imdb"));
            }
            put(ev, "series_id", get(v, "SeriesId"));
        }
        _ => {
            media.ids.tvdb = provider_id(v, "tvdb");
            media.ids.tmdb = provider_id(v, "tmdb");
            media.ids.imdb = get(v, "Provider_imdb");
            media.ids.tvmaze = provider_id(v, "tvmaze");
            media.ids.mbid = get(v, "Provider_musicbrainzalbum")
                .or_else(|| get(v, "Provider_musicbrainzartist"));
            put(ev, "artist", get(v, "Artist"));
            put(ev, "album", get(v, "Album"));
        }
    }
    ev.media = Some(media);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jellyfin(v: &Value) -> NormalizedEvent {
        normalise_jellyfin("jellyfin", v).expect("parses")
    }

    #[test]
    fn jellyfin_notification_types_map_case_insensitively() {
        for (name, kind) in [
            ("ItemAdded", EventKind::LibraryNew),
            ("itemadded", EventKind::LibraryNew),
            ("PlaybackStart", EventKind::Play),
            ("PlaybackStop", EventKind::Stop),
            ("ItemDeleted", EventKind::Delete),
            ("UserLockedOut", EventKind::Other),
        ] {
            let ev = jellyfin(&json!({"NotificationType": name}));
            assert_eq!(ev.kind, kind, "{name}");
            assert_eq!(ev.event_type, name);
        }
    }

    #[test]
    fn jellyfin_playback_stop_to_completion_is_played() {
        for done in [json!(true), json!("True"), json!("true")] {
            let ev =
                jellyfin(&json!({"NotificationType": "PlaybackStop", "PlayedToCompletion": done}));
            assert_eq!(ev.kind, EventKind::Played);
        }
        let ev =
            jellyfin(&json!({"NotificationType": "PlaybackStop", "PlayedToCompletion": false}));
        assert_eq!(ev.kind, EventKind::Stop);
    }

    #[test]
    fn jellyfin_missing_notification_type_is_missing_event_type() {
        assert_eq!(
            normalise_jellyfin("j", &json!({"Name": "x"})),
            Err(ParseError::MissingEventType("NotificationType".into()))
        );
    }

    #[test]
    fn jellyfin_episode_ids_go_to_the_episode_and_padded_numbers_are_read() {
        let ev = jellyfin(&json!({
            "notificationType": "ItemAdded", "ServerName": "tycho", "ItemType": "Episode",
            "Name": "Triple Point", "SeriesName": "The Expanse", "Year": 2015, "ItemId": "8e0f",
            "SeasonNumber00": "03", "EpisodeNumber00": "05",
            "Provider_tvdb": "6560810", "Provider_imdb": "tt7200436", "Provider_tmdb": "1482236"
        }));
        let media = ev.media.as_ref().expect("media");
        assert_eq!(media.media_type, "episode");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(media.year, Some(2015));
        assert_eq!(media.ids.guid.as_deref(), Some("8e0f"));
        assert_eq!(media.ids.tvdb, None);
        assert_eq!(ev.episodes[0].tvdb, Some(6560810));
        assert_eq!(ev.episodes[0].season, Some(3));
        assert_eq!(ev.episodes[0].episode, Some(5));
        assert_eq!(ev.details["episode_imdb"], "tt7200436");
        assert_eq!(ev.sender_instance.as_deref(), Some("tycho"));
    }

    #[test]
    fn jellyfin_movie_ids_belong_to_the_media() {
        let ev = jellyfin(&json!({
            "NotificationType": "PlaybackStart", "ItemType": "Movie", "Name": "Dune",
            "Year": 2021, "Provider_tmdb": "438631", "Provider_imdb": "tt1160419",
            "NotificationUsername": "amos"
        }));
        let media = ev.media.expect("media");
        assert_eq!(media.ids.tmdb, Some(438631));
        assert_eq!(media.ids.imdb.as_deref(), Some("tt1160419"));
        assert_eq!(ev.details["user"], "amos");
    }
}
