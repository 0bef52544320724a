//! Jellyfin webhook plugin (Generic destination) bodies, read through a configurable key
//! mapping.
//!
//! Keys follow the plugin's data object (`Helpers/DataObjectHelpers.cs`, variable list in
//! the plugin's `README.md`): PascalCase, the item's own provider ids as `Provider_<name>`
//! strings, numbers as numbers. With "Send All Properties" the body is exactly that object;
//! with a Handlebars template the user picks the keys, and every value comes out as text.
//! So a [`JellyfinMapping`] names the keys, with defaults that cover the plugin's names and
//! the usual hand-written ones, and every key is matched loosely (see `sources/keys.rs`):
//! `NotificationType`, `notificationType` and `notification_type` all work without config.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{i32_of, loose, text_of, value_of};
use super::lenient::{flag, id, put};
use super::tautulli::TemplateKeys;
use super::ParseError;
use crate::model::{Episode, EventKind, Media, MediaIds, NormalizedEvent, SourceKind};

/// Which keys of the Jellyfin plugin's body (or of your Handlebars template) hold what.
/// Each field is one key or a list tried in order; keys match case-insensitively and
/// ignoring `_`, `-` and spaces, and `a.b` reaches into nested objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JellyfinMapping {
    /// `{{NotificationType}}`: `ItemAdded`, `PlaybackStart`, `PlaybackStop`, …. Required;
    /// when missing, the error names the first key. Default
    /// `["NotificationType", "Event", "EventType"]`.
    pub event: TemplateKeys,
    /// `{{ItemType}}`: `Movie`, `Episode`, `Season`, `Series`, `Audio`, …. Default
    /// `["ItemType", "MediaType"]`. When absent, a body with a series name is taken as an
    /// episode (or a season, without an episode number).
    pub item_type: TemplateKeys,
    /// `{{Name}}`: the item's own name (an episode's title). Default `["Name", "ItemName"]`.
    pub name: TemplateKeys,
    /// `{{SeriesName}}`: the show of an episode or season; becomes the media title.
    /// Default `["SeriesName", "Series", "ShowName"]`.
    pub series_name: TemplateKeys,
    /// `{{SeasonNumber}}` (the padded `…00`/`…000` twins are tried too). Default
    /// `["SeasonNumber", "Season"]`.
    pub season: TemplateKeys,
    /// `{{EpisodeNumber}}` (padded twins tried too). Default `["EpisodeNumber", "Episode"]`.
    pub episode: TemplateKeys,
    /// `{{Year}}`: production year; on episodes and seasons the plugin sends the series'
    /// year. Default `Year`.
    pub year: TemplateKeys,
    /// `{{ItemId}}`: Jellyfin's item id, kept as the media guid. Default `ItemId`.
    pub item_id: TemplateKeys,
    /// `{{SeriesId}}`, kept as the `series_id` detail. Default `SeriesId`.
    pub series_id: TemplateKeys,
    /// `{{PremiereDate}}`: an episode's air date. Default `PremiereDate`.
    pub premiere_date: TemplateKeys,
    /// `{{ServerName}}`: kept as the event's sender instance. Default `ServerName`.
    pub server: TemplateKeys,
    /// `{{NotificationUsername}}`, kept as the `user` detail. Default
    /// `["NotificationUsername", "Username"]`.
    pub user: TemplateKeys,
    /// `{{PlayedToCompletion}}`: turns a `PlaybackStop` into a `played` event. Default
    /// `PlayedToCompletion`.
    pub played_to_completion: TemplateKeys,
    /// `{{DeviceName}}`, kept as the `device` detail. Default `DeviceName`.
    pub device: TemplateKeys,
    /// `{{ClientName}}`, kept as the `client` detail. Default `ClientName`.
    pub client: TemplateKeys,
    /// `{{Provider_tvdb}}`: the *item's own* TVDB id (an episode's, on an episode). Default
    /// `["Provider_tvdb", "TvdbId"]`.
    pub tvdb: TemplateKeys,
    /// `{{Provider_tmdb}}`. Default `["Provider_tmdb", "TmdbId"]`.
    pub tmdb: TemplateKeys,
    /// `{{Provider_imdb}}`. Default `["Provider_imdb", "ImdbId"]`.
    pub imdb: TemplateKeys,
    /// `{{Provider_tvmaze}}`. Default `["Provider_tvmaze", "TvMazeId"]`.
    pub tvmaze: TemplateKeys,
    /// MusicBrainz id of an album or artist. Default
    /// `["Provider_musicbrainzalbum", "Provider_musicbrainzartist"]`.
    pub musicbrainz: TemplateKeys,
    /// `{{Artist}}`, kept as the `artist` detail. Default `Artist`.
    pub artist: TemplateKeys,
    /// `{{Album}}`, kept as the `album` detail. Default `Album`.
    pub album: TemplateKeys,
}

impl Default for JellyfinMapping {
    fn default() -> Self {
        JellyfinMapping {
            event: TemplateKeys::new(["NotificationType", "Event", "EventType"]),
            item_type: TemplateKeys::new(["ItemType", "MediaType"]),
            name: TemplateKeys::new(["Name", "ItemName"]),
            series_name: TemplateKeys::new(["SeriesName", "Series", "ShowName"]),
            season: TemplateKeys::new(["SeasonNumber", "Season"]),
            episode: TemplateKeys::new(["EpisodeNumber", "Episode"]),
            year: "Year".into(),
            item_id: "ItemId".into(),
            series_id: "SeriesId".into(),
            premiere_date: "PremiereDate".into(),
            server: "ServerName".into(),
            user: TemplateKeys::new(["NotificationUsername", "Username"]),
            played_to_completion: "PlayedToCompletion".into(),
            device: "DeviceName".into(),
            client: "ClientName".into(),
            tvdb: TemplateKeys::new(["Provider_tvdb", "TvdbId"]),
            tmdb: TemplateKeys::new(["Provider_tmdb", "TmdbId"]),
            imdb: TemplateKeys::new(["Provider_imdb", "ImdbId"]),
            tvmaze: TemplateKeys::new(["Provider_tvmaze", "TvMazeId"]),
            musicbrainz: TemplateKeys::new([
                "Provider_musicbrainzalbum",
                "Provider_musicbrainzartist",
            ]),
            artist: "Artist".into(),
            album: "Album".into(),
        }
    }
}

/// Normalises one Jellyfin webhook plugin body with the configured key mapping.
pub fn normalise_jellyfin(
    instance: &str,
    mapping: &JellyfinMapping,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let event_type = text_of(v, &mapping.event).ok_or_else(|| {
        let first = mapping.event.keys().first().map(String::as_str);
        ParseError::MissingEventType(first.unwrap_or("NotificationType").to_owned())
    })?;
    let completed = value_of(v, &mapping.played_to_completion).and_then(flag);
    let mut ev = NormalizedEvent::new(
        SourceKind::Jellyfin,
        instance,
        classify(&event_type, completed == Some(true)),
        &event_type,
    );
    ev.sender_instance = text_of(v, &mapping.server);
    put(&mut ev, "user", text_of(v, &mapping.user));
    put(
        &mut ev,
        "played_to_completion",
        completed.map(|c| c.to_string()),
    );
    put(&mut ev, "device", text_of(v, &mapping.device));
    put(&mut ev, "client", text_of(v, &mapping.client));
    read_item(v, mapping, &mut ev);
    Ok(ev)
}

fn provider_id(v: &Value, keys: &TemplateKeys) -> Option<i64> {
    value_of(v, keys).and_then(id)
}

/// Maps a `NotificationType` to our kind. Compared in loose form, so `ItemAdded`,
/// `itemadded` and `item_added` are the same.
fn classify(notification: &str, played_to_completion: bool) -> EventKind {
    match loose(notification).as_str() {
        "itemadded" => EventKind::LibraryNew,
        "playbackstart" => EventKind::Play,
        "playbackstop" if played_to_completion => EventKind::Played,
        "playbackstop" => EventKind::Stop,
        "itemdeleted" => EventKind::Delete,
        _ => EventKind::Other,
    }
}

fn read_item(v: &Value, m: &JellyfinMapping, ev: &mut NormalizedEvent) {
    let name = text_of(v, &m.name);
    let series = text_of(v, &m.series_name);
    let episode_number = i32_of(v, &m.episode);
    let item_type = text_of(v, &m.item_type)
        .map(|t| t.to_ascii_lowercase())
        // A template that leaves out `{{ItemType}}` (the plugin's own MQTT sample does) but
        // names a series is about an episode, or a season when it has no episode number.
        .or_else(|| {
            series.as_ref().map(|_| {
                if episode_number.is_some() {
                    "episode".to_owned()
                } else {
                    "season".to_owned()
                }
            })
        });
    // Server, user and plugin notifications carry no item.
    if item_type.is_none() && name.is_none() {
        return;
    }
    let media_type = item_type.unwrap_or_else(|| "unknown".into());
    let mut media = Media {
        media_type: media_type.clone(),
        title: name.clone(),
        // For episodes and seasons the plugin already sends the series' production year.
        year: i32_of(v, &m.year).filter(|y| *y > 0),
        path: None,
        ids: MediaIds {
            guid: text_of(v, &m.item_id),
            ..MediaIds::default()
        },
        library: None,
    };
    match media_type.as_str() {
        // `Provider_*` are the item's own ids: on an episode they are the episode's, so they
        // belong to the episode, not to the series `media` describes.
        "episode" | "season" => {
            media.title = series.or(name.clone());
            let is_episode = media_type == "episode";
            ev.episodes.push(Episode {
                season: i32_of(v, &m.season),
                episode: if is_episode { episode_number } else { None },
                title: name,
                tvdb: if is_episode {
                    provider_id(v, &m.tvdb)
                } else {
                    None
                },
                air_date: text_of(v, &m.premiere_date),
            });
            if is_episode {
                put(ev, "episode_tmdb", text_of(v, &m.tmdb));
                put(ev, "episode_imdb", text_of(v, &m.imdb));
            }
            put(ev, "series_id", text_of(v, &m.series_id));
        }
        _ => {
            media.ids.tvdb = provider_id(v, &m.tvdb);
            media.ids.tmdb = provider_id(v, &m.tmdb);
            media.ids.imdb = text_of(v, &m.imdb);
            media.ids.tvmaze = provider_id(v, &m.tvmaze);
            media.ids.mbid = text_of(v, &m.musicbrainz);
            put(ev, "artist", text_of(v, &m.artist));
            put(ev, "album", text_of(v, &m.album));
        }
    }
    ev.media = Some(media);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jellyfin(v: &Value) -> NormalizedEvent {
        normalise_jellyfin("jellyfin", &JellyfinMapping::default(), v).expect("parses")
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
            normalise_jellyfin("j", &JellyfinMapping::default(), &json!({"Name": "x"})),
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

    #[test]
    fn jellyfin_template_spellings_normalise_alike_without_config() {
        let pascal = json!({
            "NotificationType": "ItemAdded", "ItemType": "Episode", "Name": "Triple Point",
            "SeriesName": "The Expanse", "SeasonNumber": "3", "EpisodeNumber": "5",
            "Year": "2015", "Provider_tvdb": "6560810", "ServerName": "tycho"
        });
        let snake = json!({
            "notification_type": "ItemAdded", "item_type": "Episode", "name": "Triple Point",
            "series_name": "The Expanse", "season_number": "3", "episode_number": "5",
            "year": "2015", "provider_tvdb": "6560810", "server_name": "tycho"
        });
        let camel = json!({
            "event": "item_added", "itemType": "episode", "itemName": "Triple Point",
            "seriesName": "The Expanse", "seasonNumber00": "03", "episodeNumber00": "05",
            "year": 2015, "tvdbId": 6560810, "serverName": "tycho"
        });
        let want = jellyfin(&pascal);
        assert_eq!(want.kind, EventKind::LibraryNew);
        assert_eq!(want.episodes[0].tvdb, Some(6560810));
        for (label, v) in [("snake_case", snake), ("camelCase", camel)] {
            let ev = jellyfin(&v);
            assert_eq!(ev.kind, want.kind, "{label}");
            assert_eq!(ev.media, want.media, "{label}");
            assert_eq!(ev.episodes, want.episodes, "{label}");
            assert_eq!(ev.sender_instance, want.sender_instance, "{label}");
        }
    }

    #[test]
    fn jellyfin_configured_mapping_reads_the_users_own_keys() {
        let mapping: JellyfinMapping = serde_json::from_value(json!({
            "event": "trigger", "name": ["title", "Name"], "series_name": "show.title",
            "season": "s", "episode": "e", "tvdb": "ids.tvdb"
        }))
        .expect("valid mapping");
        assert_eq!(mapping.year.keys(), ["Year"], "unset fields keep defaults");
        let ev = normalise_jellyfin(
            "j",
            &mapping,
            &json!({
                "trigger": "PlaybackStop", "PlayedToCompletion": "True", "ItemType": "Episode",
                "title": "Triple Point", "show": {"title": "The Expanse"}, "s": "3", "e": "5",
                "ids": {"tvdb": "6560810"}
            }),
        )
        .expect("parses");
        assert_eq!(ev.kind, EventKind::Played);
        assert_eq!(ev.event_type, "PlaybackStop");
        let media = ev.media.expect("media");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(ev.episodes[0].title.as_deref(), Some("Triple Point"));
        assert_eq!(
            (ev.episodes[0].season, ev.episodes[0].episode),
            (Some(3), Some(5))
        );
        assert_eq!(ev.episodes[0].tvdb, Some(6560810));
        // A configured event key replaces the defaults: `NotificationType` no longer counts.
        assert_eq!(
            normalise_jellyfin("j", &mapping, &json!({"NotificationType": "ItemAdded"})),
            Err(ParseError::MissingEventType("trigger".into()))
        );
    }

    #[test]
    fn jellyfin_mapping_rejects_unknown_fields() {
        let err = serde_json::from_value::<JellyfinMapping>(json!({"evnt": "x"}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("evnt"), "{err}");
    }

    #[test]
    fn jellyfin_template_without_item_type_but_with_a_series_is_an_episode() {
        // The plugin's Templates/Mqtt.handlebars leaves ItemType out.
        let ev = jellyfin(&json!({
            "NotificationType": "PlaybackStart", "Name": "Triple Point",
            "SeriesName": "The Expanse", "SeasonNumber": "3", "EpisodeNumber": "5"
        }));
        let media = ev.media.expect("media");
        assert_eq!(media.media_type, "episode");
        assert_eq!(media.title.as_deref(), Some("The Expanse"));
        assert_eq!(ev.episodes[0].episode, Some(5));
    }
}
