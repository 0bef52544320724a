//! The normalised event: the one typed shape every sender's payload is turned into.
//!
//! Field names are stable: they are what hooks, filters and the admin API see. Everything
//! is optional except the event's identity (source, instance, kind, event_type), because
//! the senders omit fields between versions (Sonarr v3 has no `series.year`, Tautulli sends
//! whatever its template says).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Which sender family produced an event. Decides the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Sonarr (TV).
    Sonarr,
    /// Radarr (movies).
    Radarr,
    /// Lidarr (music).
    Lidarr,
    /// Readarr (books).
    Readarr,
    /// Whisparr (v2 Sonarr-shaped, v3 Radarr-shaped).
    Whisparr,
    /// Plex Media Server webhooks (multipart with a `payload` part).
    Plex,
    /// Tautulli notification agents (JSON from its webhook template).
    Tautulli,
    /// The Jellyfin webhook plugin.
    Jellyfin,
    /// Our own JSON format for scripts and tools (keys renamed per source by a `CustomMapping`).
    Custom,
}

impl SourceKind {
    /// Every kind, in the order the parsers and error messages list them.
    pub const ALL: [SourceKind; 9] = [
        SourceKind::Sonarr,
        SourceKind::Radarr,
        SourceKind::Lidarr,
        SourceKind::Readarr,
        SourceKind::Whisparr,
        SourceKind::Plex,
        SourceKind::Tautulli,
        SourceKind::Jellyfin,
        SourceKind::Custom,
    ];

    /// The lowercase name used in config, routes and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Sonarr => "sonarr",
            SourceKind::Radarr => "radarr",
            SourceKind::Lidarr => "lidarr",
            SourceKind::Readarr => "readarr",
            SourceKind::Whisparr => "whisparr",
            SourceKind::Plex => "plex",
            SourceKind::Tautulli => "tautulli",
            SourceKind::Jellyfin => "jellyfin",
            SourceKind::Custom => "custom",
        }
    }

    /// The *arr family shares one payload framework (NzbDrone `Notifications/Webhook`).
    pub fn is_arr(self) -> bool {
        matches!(
            self,
            SourceKind::Sonarr
                | SourceKind::Radarr
                | SourceKind::Lidarr
                | SourceKind::Readarr
                | SourceKind::Whisparr
        )
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened, across all senders. Serialised as a snake_case string; an event type we
/// do not know is kept as `other` (with the sender's own name in [`NormalizedEvent::event_type`]),
/// because the *arr apps add event types between versions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The sender's "Test" button (also run by Sonarr/Radarr on Save).
    Test,
    /// *arr `Grab`: a release was sent to the download client.
    Grab,
    /// A file imported that did not replace another one.
    Import,
    /// A file imported that replaced an existing one (`isUpgrade: true`).
    Upgrade,
    /// *arr `Rename`: files were renamed on disk.
    Rename,
    /// A media file was deleted (`EpisodeFileDelete`, `MovieFileDelete`, `BookFileDelete`,
    /// Jellyfin `ItemDeleted`).
    Delete,
    /// Sonarr `SeriesAdd`.
    SeriesAdd,
    /// Sonarr `SeriesDelete`.
    SeriesDelete,
    /// Radarr `MovieAdded`.
    MovieAdd,
    /// Radarr `MovieDelete`.
    MovieDelete,
    /// Lidarr `ArtistAdd`.
    ArtistAdd,
    /// Lidarr `ArtistDelete`.
    ArtistDelete,
    /// Lidarr `AlbumDelete`.
    AlbumDelete,
    /// Readarr `AuthorAdded`.
    AuthorAdd,
    /// Readarr `AuthorDelete`.
    AuthorDelete,
    /// Readarr `BookDelete`.
    BookDelete,
    /// Lidarr/Readarr `Retag`: file tags were rewritten.
    Retag,
    /// *arr `DownloadFailure`.
    DownloadFailure,
    /// *arr `ImportFailure`.
    ImportFailure,
    /// *arr `Health`: a health check started failing.
    Health,
    /// *arr `HealthRestored`.
    HealthRestored,
    /// *arr `ApplicationUpdate`.
    ApplicationUpdate,
    /// *arr `ManualInteractionRequired`: an import waits for a person.
    ManualInteractionRequired,
    /// Plex `library.new`, Tautulli `created`, Jellyfin `ItemAdded`.
    LibraryNew,
    /// Plex `library.on.deck`.
    OnDeck,
    /// Playback started: Plex `media.play`, Tautulli `play`, Jellyfin `PlaybackStart`.
    Play,
    /// Plex `media.pause`, Tautulli `pause`.
    Pause,
    /// Plex `media.resume`, Tautulli `resume`.
    Resume,
    /// Playback stopped before the end: Plex `media.stop`, Tautulli `stop`, Jellyfin
    /// `PlaybackStop`.
    Stop,
    /// Watched to the end: Plex `media.scrobble`, Tautulli `watched`.
    Played,
    /// Plex `media.rate`.
    Rated,
    /// Plex `playback.started`: a user of a shared server started playing (sent to the owner).
    PlaybackStarted,
    /// Plex `admin.database.backup`.
    DatabaseBackup,
    /// Plex `admin.database.corrupted`.
    DatabaseCorrupted,
    /// Plex `device.new`.
    DeviceNew,
    /// Anything else; the sender's name is in `event_type`.
    Other,
}

impl EventKind {
    /// Every kind, `Other` last.
    pub const ALL: [EventKind; 36] = [
        EventKind::Test,
        EventKind::Grab,
        EventKind::Import,
        EventKind::Upgrade,
        EventKind::Rename,
        EventKind::Delete,
        EventKind::SeriesAdd,
        EventKind::SeriesDelete,
        EventKind::MovieAdd,
        EventKind::MovieDelete,
        EventKind::ArtistAdd,
        EventKind::ArtistDelete,
        EventKind::AlbumDelete,
        EventKind::AuthorAdd,
        EventKind::AuthorDelete,
        EventKind::BookDelete,
        EventKind::Retag,
        EventKind::DownloadFailure,
        EventKind::ImportFailure,
        EventKind::Health,
        EventKind::HealthRestored,
        EventKind::ApplicationUpdate,
        EventKind::ManualInteractionRequired,
        EventKind::LibraryNew,
        EventKind::OnDeck,
        EventKind::Play,
        EventKind::Pause,
        EventKind::Resume,
        EventKind::Stop,
        EventKind::Played,
        EventKind::Rated,
        EventKind::PlaybackStarted,
        EventKind::DatabaseBackup,
        EventKind::DatabaseCorrupted,
        EventKind::DeviceNew,
        EventKind::Other,
    ];

    /// Our snake_case name, as in JSON, filters and config.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Test => "test",
            EventKind::Grab => "grab",
            EventKind::Import => "import",
            EventKind::Upgrade => "upgrade",
            EventKind::Rename => "rename",
            EventKind::Delete => "delete",
            EventKind::SeriesAdd => "series_add",
            EventKind::SeriesDelete => "series_delete",
            EventKind::MovieAdd => "movie_add",
            EventKind::MovieDelete => "movie_delete",
            EventKind::ArtistAdd => "artist_add",
            EventKind::ArtistDelete => "artist_delete",
            EventKind::AlbumDelete => "album_delete",
            EventKind::AuthorAdd => "author_add",
            EventKind::AuthorDelete => "author_delete",
            EventKind::BookDelete => "book_delete",
            EventKind::Retag => "retag",
            EventKind::DownloadFailure => "download_failure",
            EventKind::ImportFailure => "import_failure",
            EventKind::Health => "health",
            EventKind::HealthRestored => "health_restored",
            EventKind::ApplicationUpdate => "application_update",
            EventKind::ManualInteractionRequired => "manual_interaction_required",
            EventKind::LibraryNew => "library_new",
            EventKind::OnDeck => "on_deck",
            EventKind::Play => "play",
            EventKind::Pause => "pause",
            EventKind::Resume => "resume",
            EventKind::Stop => "stop",
            EventKind::Played => "played",
            EventKind::Rated => "rated",
            EventKind::PlaybackStarted => "playback_started",
            EventKind::DatabaseBackup => "database_backup",
            EventKind::DatabaseCorrupted => "database_corrupted",
            EventKind::DeviceNew => "device_new",
            EventKind::Other => "other",
        }
    }

    /// Parses one of our own kind names (as written in `as_str`), case-insensitively.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .cloned()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(EventKind::from_name(&s).unwrap_or(EventKind::Other))
    }
}

/// External ids of the media item. Absent ids are omitted from JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaIds {
    /// TheTVDB id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvdb: Option<i64>,
    /// TMDB id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmdb: Option<i64>,
    /// IMDb id (`tt…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imdb: Option<String>,
    /// TVmaze id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvmaze: Option<i64>,
    /// MusicBrainz id (Lidarr artist/album).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbid: Option<String>,
    /// Goodreads/foreign id (Readarr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign: Option<String>,
    /// The *arr's own database id (`series.id`, `movie.id`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arr: Option<i64>,
    /// Plex `ratingKey` of the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plex_rating_key: Option<String>,
    /// Plex `guid` (e.g. `plex://episode/…`) or Jellyfin item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
}

/// The top-level media item: a series, movie, artist, author, or a Plex/Jellyfin item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// `series`, `movie`, `artist`, `album`, `author`, `book`, `episode`, `season`, `show`,
    /// `track`, … (lower-case, as the sender names it).
    #[serde(rename = "type")]
    pub media_type: String,
    /// As the sender titles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Release year, when the sender knows it (Sonarr v3 sends none for series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
    /// The item's folder on the sender's filesystem (series/movie/artist path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every external id the sender gave.
    #[serde(default)]
    pub ids: MediaIds,
    /// Plex library section id / title, Jellyfin library name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
}

/// One episode (Sonarr/Whisparr v2), track (Lidarr), or Plex/Jellyfin episode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Season number (0 for specials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<i32>,
    /// Episode number within the season.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<i32>,
    /// The episode's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// TheTVDB episode id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvdb: Option<i64>,
    /// First air date as sent (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub air_date: Option<String>,
}

/// A file the event is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Absolute path on the sender's filesystem.
    pub path: String,
    /// The path relative to the item's folder, when the sender gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_path: Option<String>,
    /// For renames: the path before. For imports: the download's source path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
    /// True when this file was removed (`deletedFiles[]`, file-delete events).
    #[serde(default)]
    pub deleted: bool,
    /// The quality name as the *arr sends it (`Bluray-1080p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// The normalised form of one received webhook. Built by a pure parser
/// (`sources::normalise`), then given an id and a receive time by the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    /// Which sender family sent it.
    pub source: SourceKind,
    /// The configured source name (`sonarr`, `sonarr-4k`, …).
    pub instance: String,
    /// What happened, in our vocabulary.
    pub kind: EventKind,
    /// The sender's own event name, verbatim (`Download`, `library.new`, `ItemAdded`).
    pub event_type: String,
    /// The media item, when the event is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// Episodes (or tracks) concerned, in the sender's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub episodes: Vec<Episode>,
    /// Files concerned: imported, renamed or deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRef>,
    /// The download client's id (*arr `downloadId`), shared by a grab and its import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_id: Option<String>,
    /// True when an import replaced an existing file.
    #[serde(default)]
    pub is_upgrade: bool,
    /// Sonarr/Radarr tags (labels, v4.0.4.1650+) or Plex/Jellyfin labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The sender's `instanceName` (*arr), server title (Plex), server name (Jellyfin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_instance: Option<String>,
    /// Free-form detail worth keeping: health message, delete reason, Plex user, rating, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// Query parameters of the request that matter downstream (`library`, `trigger_on`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl NormalizedEvent {
    /// A bare event with only its identity set; parsers fill in the rest.
    pub fn new(source: SourceKind, instance: &str, kind: EventKind, event_type: &str) -> Self {
        NormalizedEvent {
            source,
            instance: instance.to_owned(),
            kind,
            event_type: event_type.to_owned(),
            media: None,
            episodes: Vec::new(),
            files: Vec::new(),
            download_id: None,
            is_upgrade: false,
            tags: Vec::new(),
            sender_instance: None,
            details: BTreeMap::new(),
            params: BTreeMap::new(),
        }
    }

    /// One event standing for a debounced group (a season pack): the newest event, with the
    /// episodes, files and tags of every event in the group, each once, in arrival order.
    /// `None` for an empty group.
    pub fn merged(events: &[&NormalizedEvent]) -> Option<NormalizedEvent> {
        let mut out = (*events.last()?).clone();
        out.episodes.clear();
        out.files.clear();
        out.tags.clear();
        for ev in events {
            for e in &ev.episodes {
                if !out
                    .episodes
                    .iter()
                    .any(|x| (x.season, x.episode, &x.title) == (e.season, e.episode, &e.title))
                {
                    out.episodes.push(e.clone());
                }
            }
            for f in &ev.files {
                if !out
                    .files
                    .iter()
                    .any(|x| x.path == f.path && x.deleted == f.deleted)
                {
                    out.files.push(f.clone());
                }
            }
            for t in &ev.tags {
                if !out.tags.contains(t) {
                    out.tags.push(t.clone());
                }
            }
            out.is_upgrade |= ev.is_upgrade;
        }
        Some(out)
    }

    /// One line for people: the title (and year), then the episodes as `SxxEyy` (the first
    /// three, then how many more), or the sender's event name when there is no media.
    pub fn summary(&self) -> String {
        let mut out = match self.media.as_ref().and_then(|m| m.title.as_deref()) {
            Some(t) => match self.media.as_ref().and_then(|m| m.year) {
                Some(y) if !t.ends_with(&format!("({y})")) => format!("{t} ({y})"),
                _ => t.to_owned(),
            },
            None => self.event_type.clone(),
        };
        let eps: Vec<String> = self
            .episodes
            .iter()
            .filter_map(|e| Some(format!("S{:02}E{:02}", e.season?, e.episode?)))
            .collect();
        if !eps.is_empty() {
            out.push(' ');
            out.push_str(&eps.iter().take(3).cloned().collect::<Vec<_>>().join(", "));
            if eps.len() > 3 {
                out.push_str(&format!(" +{} more", eps.len() - 3));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_case_insensitively() {
        for k in EventKind::ALL.iter() {
            assert_eq!(EventKind::from_name(k.as_str()).as_ref(), Some(k));
            assert_eq!(
                EventKind::from_name(&k.as_str().to_uppercase()).as_ref(),
                Some(k)
            );
        }
        assert_eq!(EventKind::from_name("nope"), None);
    }

    #[test]
    fn event_serialises_kind_as_string_and_omits_empty_fields() {
        let ev = NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Upgrade, "Download");
        let v = serde_json::to_value(&ev).expect("serialise");
        assert_eq!(v["kind"], "upgrade");
        assert_eq!(v["source"], "sonarr");
        assert!(v.get("files").is_none());
        let back: NormalizedEvent = serde_json::from_value(v).expect("deserialise");
        assert_eq!(back, ev);
    }

    #[test]
    fn summary_names_the_title_and_episodes() {
        let mut ev =
            NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Import, "Download");
        assert_eq!(ev.summary(), "Download");
        ev.media = Some(Media {
            title: Some("Show".into()),
            year: Some(2020),
            ..Media::default()
        });
        ev.episodes = (1..=5)
            .map(|n| Episode {
                season: Some(1),
                episode: Some(n),
                ..Episode::default()
            })
            .collect();
        assert_eq!(ev.summary(), "Show (2020) S01E01, S01E02, S01E03 +2 more");
        ev.episodes.truncate(1);
        assert_eq!(ev.summary(), "Show (2020) S01E01");
    }
}
