//! Criterion micro-benchmarks of the ingest hot path's pure steps: JSON parsing, Sonarr
//! normalisation, serialising the normalised event, and decoding a Plex multipart body.
//! The network, the actors and the store are measured by the `ingest_load` bench.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relayarr::actors::model::SourceKind;
use relayarr::actors::sources::decode::{decode_body, parse_json};
use relayarr::actors::sources::{normalise, ParserOptions};

/// A Sonarr v4 `Download` ("On Import") body, Newtonsoft-indented as Sonarr sends it: the
/// shared `sonarr/Download.http` fixture with one image, one genre, one custom format and
/// part of the overview removed, to land at the typical ~2.6 KB.
const SONARR_DOWNLOAD: &str = r#"{
  "series": {
    "id": 12,
    "title": "The Expanse",
    "titleSlug": "the-expanse",
    "path": "/tv/The Expanse",
    "tvdbId": 280619,
    "tvMazeId": 1825,
    "tmdbId": 63639,
    "imdbId": "tt3230854",
    "type": "standard",
    "year": 2015,
    "genres": [
      "Drama",
      "Science Fiction"
    ],
    "images": [
      {
        "coverType": "poster",
        "url": "/MediaCover/12/poster.jpg?lastWrite=638540412983456789",
        "remoteUrl": "https://artworks.thetvdb.com/banners/posters/280619-7.jpg"
      }
    ],
    "tags": [
      "hd",
      "scifi"
    ],
    "originalLanguage": {
      "id": 1,
      "name": "English"
    }
  },
  "episodes": [
    {
      "id": 1043,
      "episodeNumber": 5,
      "seasonNumber": 3,
      "title": "Triple Point",
      "overview": "Holden and Naomi try to stop the protomolecule from being weaponised.",
      "airDate": "2018-05-09",
      "airDateUtc": "2018-05-10T01:00:00Z",
      "seriesId": 12,
      "tvdbId": 6560810
    }
  ],
  "episodeFile": {
    "id": 5521,
    "relativePath": "Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv",
    "path": "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [WEBDL-1080p]-NTb.mkv",
    "quality": "WEBDL-1080p",
    "qualityVersion": 1,
    "releaseGroup": "NTb",
    "sceneName": "The.Expanse.S03E05.Triple.Point.1080p.AMZN.WEB-DL.DDP5.1.H.264-NTb",
    "size": 2487301120,
    "dateAdded": "2025-06-14T18:22:41.5172934Z",
    "languages": [
      {
        "id": 1,
        "name": "English"
      }
    ],
    "mediaInfo": {
      "audioChannels": 5.1,
      "audioCodec": "EAC3",
      "audioLanguages": [
        "eng"
      ],
      "height": 1080,
      "width": 1920,
      "subtitles": [
        "eng"
      ],
      "videoCodec": "h264",
      "videoDynamicRange": "",
      "videoDynamicRangeType": ""
    },
    "sourcePath": "/downloads/complete/tv/The.Expanse.S03E05.Triple.Point.1080p.AMZN.WEB-DL.DDP5.1.H.264-NTb/The.Expanse.S03E05.Triple.Point.1080p.AMZN.WEB-DL.DDP5.1.H.264-NTb.mkv"
  },
  "isUpgrade": false,
  "downloadClient": "qBittorrent",
  "downloadClientType": "qBittorrent",
  "downloadId": "3F5A9C0E1B7D42A68E0C9B1D2F3A4E5B6C7D8E9F",
  "customFormatInfo": {
    "customFormats": [
      {
        "id": 4,
        "name": "AMZN"
      }
    ],
    "customFormatScore": 1750
  },
  "release": {
    "releaseTitle": "The.Expanse.S03E05.Triple.Point.1080p.AMZN.WEB-DL.DDP5.1.H.264-NTb",
    "indexer": "IPTorrents (Prowlarr)",
    "size": 2487312384,
    "releaseType": "singleEpisode"
  },
  "eventType": "Download",
  "instanceName": "Sonarr",
  "applicationUrl": ""
}"#;

/// The `payload` part of the shared `plex/library.new-episode.http` fixture (Plex sends it
/// on one line).
const PLEX_PAYLOAD: &str = r#"{"event":"library.new","user":true,"owner":true,"Account":{"id":1,"thumb":"https://plex.tv/users/8f2a6c1d9e3b5a7c/avatar?c=1718012345","title":"jholden"},"Server":{"title":"Rocinante","uuid":"7d3c5a1e9b2f4c6d8e0a1b3c5d7e9f1a2b4c6d8e"},"Metadata":{"librarySectionType":"show","ratingKey":"48213","key":"/library/metadata/48213","parentRatingKey":"48207","grandparentRatingKey":"48150","guid":"plex://episode/5d9c1275e98e47001eb84f6f","parentGuid":"plex://season/602e6b6c8d6b24002c0cfa51","grandparentGuid":"plex://show/5d9c086fe98e47001eb0c2f1","grandparentSlug":"the-expanse","type":"episode","title":"Triple Point","grandparentKey":"/library/metadata/48150","parentKey":"/library/metadata/48207","librarySectionTitle":"TV Shows","librarySectionID":2,"librarySectionKey":"/library/sections/2","grandparentTitle":"The Expanse","parentTitle":"Season 3","contentRating":"TV-14","summary":"Holden and Naomi try to stop the protomolecule from being weaponised, while Avasarala races against time.","index":5,"parentIndex":3,"audienceRating":8.4,"year":2018,"thumb":"/library/metadata/48213/thumb/1718383261","art":"/library/metadata/48150/art/1718383190","parentThumb":"/library/metadata/48207/thumb/1718383195","grandparentThumb":"/library/metadata/48150/thumb/1718383190","grandparentArt":"/library/metadata/48150/art/1718383190","grandparentTheme":"/library/metadata/48150/theme/1718383190","duration":2620000,"originallyAvailableAt":"2018-05-09","addedAt":1718383200,"updatedAt":1718383261,"audienceRatingImage":"themoviedb://image.rating","Guid":[{"id":"imdb://tt7200436"},{"id":"tmdb://1482236"},{"id":"tvdb://6560810"}],"Rating":[{"image":"themoviedb://image.rating","value":8.4,"type":"audience"}],"Director":[{"id":131412,"filter":"director=131412","tag":"Breck Eisner","tagKey":"5d7768253c3c2a001fbca9c1"}],"Writer":[{"id":131413,"filter":"writer=131413","tag":"Dan Nowak","tagKey":"5d77683554f42c001f8c5a12"}],"Role":[{"id":131420,"filter":"actor=131420","tag":"Steven Strait","tagKey":"5d776826880197001ec90a3c","role":"James Holden","thumb":"https://metadata-static.plex.tv/4/people/4a1b2c3d4e5f60718293a4b5c6d7e8f9.jpg"},{"id":131421,"filter":"actor=131421","tag":"Dominique Tipper","tagKey":"5d77683554f42c001f8c5a20","role":"Naomi Nagata","thumb":"https://metadata-static.plex.tv/b/people/b1c2d3e4f5a60718293a4b5c6d7e8f90.jpg"}]}}"#;

/// Plex's boundary style: 24 dashes and 22 random characters.
const PLEX_BOUNDARY: &str = "------------------------l2M69i7WdDqgNmO6SfsyNV";

/// Size of the fake `thumb` JPEG; real Plex thumbnails run from a few KB to a few hundred.
const THUMB_BYTES: usize = 10 * 1024;

/// A Plex webhook body: the `payload` JSON part, then a `thumb` part holding a ~10 KB
/// JPEG-looking blob (SOI/APP0 header, pseudo-random scan data, EOI), as Plex frames them.
fn plex_multipart() -> (String, Bytes) {
    let mut thumb = Vec::with_capacity(THUMB_BYTES);
    thumb
        .extend_from_slice(b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    // xorshift64: incompressible, and (at this length) never forms the 46-byte boundary.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while thumb.len() < THUMB_BYTES - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        thumb.extend_from_slice(&x.to_le_bytes());
    }
    thumb.truncate(THUMB_BYTES - 2);
    thumb.extend_from_slice(b"\xFF\xD9");

    let mut body = Vec::with_capacity(PLEX_PAYLOAD.len() + THUMB_BYTES + 512);
    body.extend_from_slice(
        format!(
            "--{PLEX_BOUNDARY}\r\nContent-Disposition: form-data; name=\"payload\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(PLEX_PAYLOAD.as_bytes());
    body.extend_from_slice(
        format!(
            "\r\n--{PLEX_BOUNDARY}\r\nContent-Disposition: form-data; name=\"thumb\"; \
             filename=\"thumb.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&thumb);
    body.extend_from_slice(format!("\r\n--{PLEX_BOUNDARY}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={PLEX_BOUNDARY}"),
        Bytes::from(body),
    )
}

fn sonarr(c: &mut Criterion) {
    let body = SONARR_DOWNLOAD.as_bytes();
    let opts = ParserOptions::default();
    let value = parse_json(body).expect("the Sonarr body is valid JSON");
    let event =
        normalise(SourceKind::Sonarr, "sonarr", &opts, &value).expect("the Sonarr body normalises");

    let mut g = c.benchmark_group("sonarr_download");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_json", |b| b.iter(|| parse_json(black_box(body))));
    // One event per iteration from here on: criterion reports events/s.
    g.throughput(Throughput::Elements(1));
    g.bench_function("normalise", |b| {
        b.iter(|| normalise(SourceKind::Sonarr, "sonarr", &opts, black_box(&value)))
    });
    g.bench_function("to_string_normalised", |b| {
        b.iter(|| serde_json::to_string(black_box(&event)))
    });
    g.finish();
}

fn plex(c: &mut Criterion) {
    let (content_type, body) = plex_multipart();
    // decode_body is async only because multer is; on an in-memory body it never waits, so
    // a current-thread runtime's block_on adds well under a microsecond per iteration.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let decoded = rt
        .block_on(decode_body(Some(&content_type), &body))
        .expect("the Plex body decodes");
    assert_eq!(decoded.json["event"], "library.new");

    let mut g = c.benchmark_group("plex_library_new");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_body_multipart", |b| {
        b.iter(|| {
            rt.block_on(decode_body(
                Some(black_box(&content_type)),
                black_box(&body),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, sonarr, plex);
criterion_main!(benches);
