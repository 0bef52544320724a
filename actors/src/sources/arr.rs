//! Sonarr, Radarr, Lidarr, Readarr and Whisparr payloads (the shared NzbDrone webhook framework).
//!
//! One parser serves all five apps: they share `NzbDrone.Core/Notifications/Webhook` and differ
//! mainly in which media object they carry (`series`, `movie`, `artist`, `author`). The
//! payload's *shape*, not the configured [`SourceKind`], decides how it is read, because one
//! app can send more than one shape: Whisparr v2 is Sonarr-shaped and v3 Radarr-shaped, and
//! Sonarr's `Download` is either one file (`episodeFile`, "On Import") or a whole import
//! (`episodeFiles[]`, "On Import Complete"). The source kind only labels the event.
//!

use serde_json::Value;

use super::lenient;
use super::lenient::{
    field, flag_at, i32_at, id_at, objects, put, strings, text, text_at, year_at,
};
use super::ParseError;
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent, SourceKind};

/// Top-level fields copied verbatim into `details` (JSON key, detail key). Each appears only on
/// the payloads that have it; `deletedFiles` only lands here when it is the boolean of a
/// series/movie/artist/author delete (as a list it holds files, see [`push_files`]).
const TOP_LEVEL_DETAILS: &[(&str, &str)] = &[
    ("applicationUrl", "application_url"),
    ("downloadClient", "download_client"),
    ("downloadClientType", "download_client_type"),
    ("deleteReason", "delete_reason"),
    ("deletedFiles", "deleted_files"),
    ("level", "level"),
    ("message", "message"),
    ("type", "type"),
    ("wikiUrl", "wiki_url"),
    ("previousVersion", "previous_version"),
    ("newVersion", "new_version"),
    ("addMethod", "add_method"),
    ("movieFolderSize", "movie_folder_size"),
    ("downloadStatus", "download_status"),
    // Sonarr "On Import Complete": the download folder and where it went.
    ("sourcePath", "source_path"),
    ("destinationPath", "destination_path"),
    ("fileCount", "file_count"),
    // Lidarr DownloadFailure carries its release flat, not in a `release` object.
    ("quality", "quality"),
    ("releaseTitle", "release_title"),
];

/// Normalises one *arr webhook body (already decoded JSON).
pub fn normalise_arr(
    kind: SourceKind,
    instance: &str,
    v: &Value,
) -> Result<NormalizedEvent, ParseError> {
    let event_type =
        text_at(v, "eventType").ok_or_else(|| ParseError::MissingEventType("eventType".into()))?;
    let mut ev = NormalizedEvent::new(kind, instance, classify(&event_type, v), &event_type);
    ev.is_upgrade = ev.kind == EventKind::Upgrade;
    ev.sender_instance = text_at(v, "instanceName");
    ev.download_id = text_at(v, "downloadId");

    let folder = read_media(v, &mut ev);
    read_episodes(v, &mut ev);
    push_files(v, folder.as_deref(), &mut ev);
    read_details(v, &mut ev);
    Ok(ev)
}

/// Maps an *arr `eventType` (compared case-insensitively) to our kind.
fn classify(event_type: &str, v: &Value) -> EventKind {
    match event_type.to_ascii_lowercase().as_str() {
        "test" => EventKind::Test,
        "grab" => EventKind::Grab,
        // "On Import Complete" has no `isUpgrade`: it reports a whole download, so Import.
        "download" if flag_at(v, "isUpgrade") == Some(true) => EventKind::Upgrade,
        "download" => EventKind::Import,
        "rename" => EventKind::Rename,
        "episodefiledelete" | "moviefiledelete" | "bookfiledelete" => EventKind::Delete,
        "seriesadd" => EventKind::SeriesAdd,
        "seriesdelete" => EventKind::SeriesDelete,
        "movieadded" => EventKind::MovieAdd,
        "moviedelete" => EventKind::MovieDelete,
        "artistadd" => EventKind::ArtistAdd,
        "artistdelete" => EventKind::ArtistDelete,
        "albumdelete" => EventKind::AlbumDelete,
        "authoradded" => EventKind::AuthorAdd,
        "authordelete" => EventKind::AuthorDelete,
        "bookdelete" => EventKind::BookDelete,
        "retag" => EventKind::Retag,
        "downloadfailure" => EventKind::DownloadFailure,
        "importfailure" => EventKind::ImportFailure,
        "health" => EventKind::Health,
        "healthrestored" => EventKind::HealthRestored,
        "applicationupdate" => EventKind::ApplicationUpdate,
        "manualinteractionrequired" => EventKind::ManualInteractionRequired,
        _ => EventKind::Other,
    }
}

/// Fills `media` and `tags` from whichever media object the payload has, plus the album/book
/// it concerns. Returns the media folder, which file paths are resolved against.
fn read_media(v: &Value, ev: &mut NormalizedEvent) -> Option<String> {
    let (media, tags_of) = if let Some(s) = lenient::object(v, "series") {
        let media = Media {
            media_type: "series".into(),
            title: text_at(s, "title"),
            // Absent before Sonarr v4 (and on Whisparr v2); 0 when unknown.
            year: year_at(s, "year"),
            path: text_at(s, "path"),
            ids: MediaIds {
                tvdb: id_at(s, "tvdbId"),
                tmdb: id_at(s, "tmdbId"),
                imdb: text_at(s, "imdbId"),
                tvmaze: id_at(s, "tvMazeId"),
                arr: id_at(s, "id"),
                ..MediaIds::default()
            },
            library: None,
        };
        (media, s)
    } else if let Some(m) = lenient::object(v, "movie") {
        // `remoteMovie` holds the metadata ids; Radarr's Test payload has them only there.
        let remote = lenient::object(v, "remoteMovie");
        let from_remote = |key: &str| remote.and_then(|r| id_at(r, key));
        let media = Media {
            media_type: "movie".into(),
            title: text_at(m, "title"),
            year: year_at(m, "year"),
            path: text_at(m, "folderPath"),
            ids: MediaIds {
                tmdb: id_at(m, "tmdbId").or_else(|| from_remote("tmdbId")),
                imdb: text_at(m, "imdbId").or_else(|| remote.and_then(|r| text_at(r, "imdbId"))),
                arr: id_at(m, "id"),
                ..MediaIds::default()
            },
            library: None,
        };
        // Whisparr v3 (Radarr-shaped): StashDB id and whether the item is a scene or a movie.
        put(ev, "stash_id", text_at(m, "stashId"));
        put(ev, "item_type", text_at(m, "itemType"));
        (media, m)
    } else if let Some(a) = lenient::object(v, "artist") {
        let media = Media {
            media_type: "artist".into(),
            title: text_at(a, "name"),
            year: None,
            path: text_at(a, "path"),
            ids: MediaIds {
                mbid: text_at(a, "mbId"),
                arr: id_at(a, "id"),
                ..MediaIds::default()
            },
            library: None,
        };
        if let Some(album) = lenient::object(v, "album") {
            put(ev, "album_title", text_at(album, "title"));
            put(ev, "album_mbid", text_at(album, "mbId"));
        }
        put(ev, "albums", joined_titles(v, "albums"));
        (media, a)
    } else if let Some(a) = lenient::object(v, "author") {
        // Readarr calls the foreign (Goodreads-era) id `goodreadsId` on the wire.
        let foreign = |x: &Value, alt: &str| text_at(x, "goodreadsId").or_else(|| text_at(x, alt));
        let media = Media {
            media_type: "author".into(),
            title: text_at(a, "name"),
            year: None,
            path: text_at(a, "path"),
            ids: MediaIds {
                foreign: foreign(a, "foreignAuthorId"),
                arr: id_at(a, "id"),
                ..MediaIds::default()
            },
            library: None,
        };
        if let Some(book) = lenient::object(v, "book") {
            put(ev, "book_title", text_at(book, "title"));
            put(ev, "book_foreign_id", foreign(book, "foreignBookId"));
        }
        put(ev, "books", joined_titles(v, "books"));
        (media, a)
    } else {
        return None;
    };
    ev.tags = field(tags_of, "tags").map(strings).unwrap_or_default();
    let folder = media.path.clone();
    ev.media = Some(media);
    folder
}

/// The titles of the objects in the array at `key`, joined with `; ` (Lidarr `albums`,
/// Readarr `books` on Grab).
fn joined_titles(v: &Value, key: &str) -> Option<String> {
    let titles: Vec<String> = objects(v, key)
        .filter_map(|x| text_at(x, "title"))
        .collect();
    (!titles.is_empty()).then(|| titles.join("; "))
}

/// Sonarr/Whisparr v2 `episodes[]` and Lidarr `tracks[]` (a track's number is a string, and
/// may be a vinyl side such as `"A1"`, which is kept only as the title's companion).
fn read_episodes(v: &Value, ev: &mut NormalizedEvent) {
    for e in objects(v, "episodes") {
        ev.episodes.push(Episode {
            season: i32_at(e, "seasonNumber"),
            // Whisparr v2 episodes have no episode number (a scene is dated, not numbered).
            episode: i32_at(e, "episodeNumber"),
            title: text_at(e, "title"),
            tvdb: id_at(e, "tvdbId"),
            air_date: text_at(e, "airDate"),
        });
    }
    for t in objects(v, "tracks") {
        ev.episodes.push(Episode {
            episode: i32_at(t, "trackNumber"),
            title: text_at(t, "title"),
            ..Episode::default()
        });
    }
}

/// Collects every file the payload names, in payload order.
fn push_files(v: &Value, folder: Option<&str>, ev: &mut NormalizedEvent) {
    // On a file-delete event the single file object *is* the deleted file.
    let single_deleted = ev.kind == EventKind::Delete;
    for key in ["episodeFile", "movieFile", "trackFile", "bookFile"] {
        if let Some(f) = lenient::object(v, key) {
            ev.files.extend(file_ref(f, folder, single_deleted));
        }
    }
    for key in [
        "episodeFiles",
        "trackFiles",
        "bookFiles",
        "renamedEpisodeFiles",
        "renamedMovieFiles",
        "renamedTrackFiles",
        "renamedBookFiles",
    ] {
        ev.files
            .extend(objects(v, key).filter_map(|f| file_ref(f, folder, false)));
    }
    // The files an upgrade replaced; on delete events `deletedFiles` is a boolean instead.
    ev.files
        .extend(objects(v, "deletedFiles").filter_map(|f| file_ref(f, folder, true)));
}

/// One *arr file object as a [`FileRef`], or `None` when it names no usable path.
///
/// The path is `folder` + `relativePath` when both are known, which is what current Sonarr
/// and Radarr send as `path` anyway. It is *not* `path` first: Sonarr v3, Whisparr v2 and v3
/// fill `path` on Download with the file's location *before* import (the download folder),
/// and leave it out on Rename. Lidarr and Readarr files have only an absolute `path`.
fn file_ref(f: &Value, folder: Option<&str>, deleted: bool) -> Option<FileRef> {
    let relative = text_at(f, "relativePath");
    let reported = text_at(f, "path");
    let path = match (folder, relative.as_deref()) {
        (Some(folder), Some(rel)) => join_path(folder, rel),
        _ => reported.clone()?,
    };
    let previous_path = text_at(f, "previousPath")
        .or_else(|| text_at(f, "sourcePath"))
        // An older *arr's pre-import `path` is where the file came from.
        .or_else(|| reported.filter(|p| *p != path));
    Some(FileRef {
        path,
        relative_path: relative,
        previous_path,
        deleted,
        quality: text_at(f, "quality"),
        size: lenient::int_at(f, "size"),
    })
}

/// Joins a media folder and a relative file path with the folder's own separator, the way
/// .NET `Path.Combine` does on the sender's OS (backslashes on a Windows host).
fn join_path(folder: &str, relative: &str) -> String {
    let sep = if folder.contains('\\') && !folder.contains('/') {
        '\\'
    } else {
        '/'
    };
    let folder = folder.trim_end_matches(['/', '\\']);
    let relative = relative.trim_start_matches(['/', '\\']);
    format!("{folder}{sep}{relative}")
}

fn read_details(v: &Value, ev: &mut NormalizedEvent) {
    for (key, detail) in TOP_LEVEL_DETAILS {
        put(ev, detail, text_at(v, key));
    }
    if let Some(release) = lenient::object(v, "release") {
        put(ev, "release_title", text_at(release, "releaseTitle"));
        put(ev, "indexer", text_at(release, "indexer"));
        put(ev, "quality", text_at(release, "quality"));
    }
    // ManualInteractionRequired: the stuck download, and why it is stuck.
    if let Some(info) = lenient::object(v, "downloadInfo") {
        put(ev, "release_title", text_at(info, "title"));
        put(ev, "quality", text_at(info, "quality"));
    }
    let status: Vec<String> = objects(v, "downloadStatusMessages")
        .flat_map(|m| field(m, "messages").map(strings).unwrap_or_default())
        .collect();
    if !status.is_empty() {
        put(ev, "download_status_messages", Some(status.join("; ")));
    }
    if let Some(cf) = lenient::object(v, "customFormatInfo") {
        put(
            ev,
            "custom_format_score",
            field(cf, "customFormatScore").and_then(text),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sonarr(v: &Value) -> NormalizedEvent {
        normalise_arr(SourceKind::Sonarr, "sonarr", v).expect("parses")
    }

    #[test]
    fn arr_event_names_compare_case_insensitively_and_keep_the_verbatim_name() {
        for name in ["Download", "download", "DOWNLOAD"] {
            let ev = sonarr(&json!({"eventType": name, "isUpgrade": false}));
            assert_eq!(ev.kind, EventKind::Import);
            assert_eq!(ev.event_type, name);
        }
        let ev = sonarr(&json!({"eventType": "episodefiledelete"}));
        assert_eq!(ev.kind, EventKind::Delete);
    }

    #[test]
    fn arr_unknown_event_type_is_other_not_an_error() {
        let ev = sonarr(&json!({"eventType": "SeriesRefreshed", "series": {"title": "X"}}));
        assert_eq!(ev.kind, EventKind::Other);
        assert_eq!(ev.event_type, "SeriesRefreshed");
        assert_eq!(ev.media.and_then(|m| m.title).as_deref(), Some("X"));
    }

    #[test]
    fn arr_missing_or_blank_event_type_is_missing_event_type() {
        let want = Err(ParseError::MissingEventType("eventType".into()));
        assert_eq!(normalise_arr(SourceKind::Radarr, "r", &json!({})), want);
        assert_eq!(
            normalise_arr(SourceKind::Radarr, "r", &json!({"eventType": null})),
            want
        );
        assert_eq!(
            normalise_arr(SourceKind::Radarr, "r", &json!({"eventType": "  "})),
            want
        );
        // `eventType` is case-sensitive as a key: the *arr apps always spell it this way.
        assert_eq!(
            normalise_arr(SourceKind::Radarr, "r", &json!({"EventType": "Grab"})),
            want
        );
    }

    #[test]
    fn arr_sonarr_per_file_download_upgrade_marks_replaced_files_deleted() {
        let ev = sonarr(&json!({
            "series": {"id": 12, "title": "The Expanse", "path": "/tv/The Expanse", "tvdbId": 280619},
            "episodes": [{"episodeNumber": 5, "seasonNumber": 3, "title": "Triple Point"}],
            "episodeFile": {
                "relativePath": "Season 03/new.mkv",
                "path": "/tv/The Expanse/Season 03/new.mkv",
                "sourcePath": "/downloads/new.mkv"
            },
            "isUpgrade": true,
            "downloadId": "ABC",
            "deletedFiles": [{"relativePath": "Season 03/old.mkv", "path": "/tv/The Expanse/Season 03/old.mkv"}],
            "eventType": "Download",
            "instanceName": "Sonarr"
        }));
        assert_eq!(ev.kind, EventKind::Upgrade);
        assert!(ev.is_upgrade);
        assert_eq!(ev.download_id.as_deref(), Some("ABC"));
        assert_eq!(ev.sender_instance.as_deref(), Some("Sonarr"));
        assert_eq!(ev.files.len(), 2);
        assert_eq!(ev.files[0].path, "/tv/The Expanse/Season 03/new.mkv");
        assert_eq!(
            ev.files[0].previous_path.as_deref(),
            Some("/downloads/new.mkv")
        );
        assert!(!ev.files[0].deleted);
        assert_eq!(ev.files[1].path, "/tv/The Expanse/Season 03/old.mkv");
        assert!(ev.files[1].deleted);
        assert_eq!(ev.episodes[0].season, Some(3));
        assert_eq!(ev.episodes[0].episode, Some(5));
    }

    #[test]
    fn arr_sonarr_import_complete_download_is_import_with_every_file() {
        let ev = sonarr(&json!({
            "series": {"path": "/tv/Show"},
            "episodes": [{"episodeNumber": 1, "seasonNumber": 1}, {"episodeNumber": 2, "seasonNumber": 1}],
            "episodeFiles": [
                {"relativePath": "Season 01/e1.mkv", "path": "/tv/Show/Season 01/e1.mkv"},
                {"relativePath": "Season 01/e2.mkv", "path": "/tv/Show/Season 01/e2.mkv"}
            ],
            "fileCount": 2,
            "sourcePath": "/downloads/Show.S01",
            "destinationPath": "/tv/Show",
            "eventType": "Download"
        }));
        assert_eq!(ev.kind, EventKind::Import);
        assert!(!ev.is_upgrade);
        let paths: Vec<&str> = ev.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/tv/Show/Season 01/e1.mkv", "/tv/Show/Season 01/e2.mkv"]
        );
        assert_eq!(ev.details["file_count"], "2");
        assert_eq!(ev.details["source_path"], "/downloads/Show.S01");
        assert_eq!(ev.episodes.len(), 2);
    }

    #[test]
    fn arr_v3_download_path_is_resolved_against_the_series_folder() {
        // Sonarr v3 puts the pre-import download location in `episodeFile.path`.
        let ev = sonarr(&json!({
            "series": {"path": "/tv/Show", "year": 0, "tvMazeId": 0},
            "episodeFile": {"relativePath": "Season 01/e1.mkv", "path": "/downloads/Show.S01E01/e1.mkv"},
            "isUpgrade": false,
            "eventType": "Download"
        }));
        assert_eq!(ev.files[0].path, "/tv/Show/Season 01/e1.mkv");
        assert_eq!(
            ev.files[0].previous_path.as_deref(),
            Some("/downloads/Show.S01E01/e1.mkv")
        );
        let media = ev.media.expect("media");
        assert_eq!(media.year, None);
        assert_eq!(media.ids.tvmaze, None);
    }

    #[test]
    fn arr_file_path_falls_back_to_folder_plus_relative_path() {
        let ev = normalise_arr(
            SourceKind::Radarr,
            "radarr",
            &json!({
                "movie": {"folderPath": "D:\\Movies\\Dune (2021)\\"},
                "movieFile": {"relativePath": "Dune (2021).mkv"},
                "deleteReason": "manual",
                "eventType": "MovieFileDelete"
            }),
        )
        .expect("parses");
        assert_eq!(ev.kind, EventKind::Delete);
        assert_eq!(ev.files[0].path, "D:\\Movies\\Dune (2021)\\Dune (2021).mkv");
        assert!(ev.files[0].deleted);
        assert_eq!(ev.details["delete_reason"], "manual");
        // Lidarr/Readarr files carry only an absolute path; no folder join happens.
        let ev = normalise_arr(
            SourceKind::Lidarr,
            "lidarr",
            &json!({"artist": {"path": "/music/A"}, "trackFile": {"path": "/music/A/x.flac"}, "eventType": "Retag"}),
        )
        .expect("parses");
        assert_eq!(ev.files[0].path, "/music/A/x.flac");
    }

    #[test]
    fn arr_numbers_and_flags_given_as_strings_are_accepted() {
        let ev = normalise_arr(
            SourceKind::Lidarr,
            "lidarr",
            &json!({
                "artist": {"id": "7", "name": "Artist", "tags": ["a", 5]},
                "tracks": [{"title": "One", "trackNumber": "3"}, {"title": "Side", "trackNumber": "A1"}],
                "isUpgrade": "True",
                "eventType": "Download"
            }),
        )
        .expect("parses");
        assert_eq!(ev.kind, EventKind::Upgrade);
        assert_eq!(ev.media.as_ref().and_then(|m| m.ids.arr), Some(7));
        assert_eq!(ev.tags, ["a", "5"]);
        assert_eq!(ev.episodes[0].episode, Some(3));
        assert_eq!(ev.episodes[1].episode, None);
        assert_eq!(ev.episodes[1].title.as_deref(), Some("Side"));
    }

    #[test]
    fn arr_health_and_update_details_are_kept() {
        let ev = sonarr(&json!({
            "level": "warning", "message": "Indexers unavailable", "type": "IndexerStatusCheck",
            "wikiUrl": "https://wiki.servarr.com/sonarr/system", "eventType": "Health", "instanceName": "Sonarr"
        }));
        assert_eq!(ev.kind, EventKind::Health);
        assert_eq!(ev.details["level"], "warning");
        assert_eq!(ev.details["type"], "IndexerStatusCheck");
        assert_eq!(
            ev.details["wiki_url"],
            "https://wiki.servarr.com/sonarr/system"
        );
        assert!(ev.media.is_none());
        let ev = sonarr(
            &json!({"previousVersion": "4.0.18.2978", "newVersion": "4.0.19.2979", "eventType": "ApplicationUpdate"}),
        );
        assert_eq!(ev.kind, EventKind::ApplicationUpdate);
        assert_eq!(ev.details["previous_version"], "4.0.18.2978");
        assert_eq!(ev.details["new_version"], "4.0.19.2979");
    }

    #[test]
    fn arr_wrongly_typed_fields_are_ignored_without_panicking() {
        let ev = sonarr(&json!({
            "series": "not an object",
            "episodes": {"not": "a list"},
            "episodeFile": [1, 2],
            "deletedFiles": "yes",
            "isUpgrade": {"x": 1},
            "eventType": 17
        }));
        assert_eq!(ev.kind, EventKind::Other);
        assert_eq!(ev.event_type, "17");
        assert!(ev.media.is_none() && ev.episodes.is_empty() && ev.files.is_empty());
    }

    #[test]
    fn lenient_readers_accept_what_senders_send() {
        use super::lenient::{flag, int, strings};
        assert_eq!(int(&json!("03")), Some(3));
        assert_eq!(int(&json!(3.0)), Some(3));
        assert_eq!(int(&json!("3.5")), None);
        assert_eq!(int(&json!(1e300)), None);
        assert_eq!(int(&json!(u64::MAX)), None);
        assert_eq!(flag(&json!("True")), Some(true));
        assert_eq!(flag(&json!("maybe")), None);
        assert_eq!(strings(&json!([{"tag": "kids"}, "4k", ""])), ["kids", "4k"]);
        assert_eq!(strings(&json!("a, b,,")), ["a", "b"]);
    }
}
