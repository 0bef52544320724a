//! Outbound request bodies (pure): the relayarr envelope, raw passthrough, Discord and Slack
//! messages, and user templates (minijinja), plus the sample event `relayarr test-hook` sends.
//!
//! Discord and Slack reject a message outright (HTTP 400) when a text is over their limits,
//! and a 400 is not retried, so every text is clipped to its limit here instead:
//! Discord embed title 256, description 4096, ≤ 25 fields, field name 256, value 1024,
//! footer 2048, 6000 in total; Slack header 150, section and context text 3000.
//! Lengths are counted in UTF-16 units, which is never less than characters, so a clipped
//! text passes however the receiver counts.

use std::fmt;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value as JinjaValue};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::config::HookFormat;
use crate::model::{Episode, EventKind, FileRef, Media, MediaIds, NormalizedEvent, SourceKind};

/// The content type of every body we generate unless the hook sets another.
const JSON: &str = "application/json";
/// The template's name in its environment; it appears in error messages.
const TEMPLATE_NAME: &str = "template";

/// Why a body could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// `format = "raw"`, but the event's original body is not available.
    #[error("format \"raw\" needs the sender's original body, and none is stored for this event")]
    MissingRaw,
    /// `format = "template"` without a compiled template.
    #[error("format \"template\" needs `template = \"…\"` on the hook")]
    MissingTemplate,
    /// The template does not parse, uses an unknown filter/test/function, or failed to render.
    #[error("template error: {0}")]
    Template(String),
    /// The receive time is outside what RFC 3339 can express.
    #[error("receive time {0} ms is out of range for an RFC 3339 timestamp")]
    Timestamp(i64),
    /// Serialising the body failed.
    #[error("could not serialise the body: {0}")]
    Json(String),
}

/// An event as it is sent: the normalised event plus its store id and receive time.
#[derive(Clone, Copy, Debug)]
pub struct EventEnvelope<'a> {
    /// The event's store id.
    pub id: &'a str,
    /// When relayarr received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// The normalised event.
    pub event: &'a NormalizedEvent,
}

/// A request body and its content type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedBody {
    /// The `Content-Type` to send.
    pub content_type: String,
    /// The bytes to send.
    pub body: Vec<u8>,
}

/// A parsed, checked `format = "template"` template, owned so a hook can keep it.
///
/// Templates see `id`, `event` (kind), `timestamp` (RFC 3339), `source`, `instance_id`,
/// `data` (the normalised event), `raw` (the original body as text, when stored), and
/// `title` and `summary` (the one-liners Discord and Slack use). Missing fields render as
/// empty rather than failing (`data.media.title` on a health event), and `tojson` turns a
/// value into JSON, quotes included: `{"text": {{ summary|tojson }}}`.
#[derive(Clone)]
pub struct CompiledTemplate {
    env: Environment<'static>,
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTemplate").finish_non_exhaustive()
    }
}

/// Parses `src` and checks it against [`sample_event`], so that syntax errors and unknown
/// filters, tests and functions fail at config load. Errors that depend on the data (a
/// filter given a value it cannot take) only surface when rendering a real event.
pub fn compile_template(src: &str) -> Result<CompiledTemplate, FormatError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // minijinja's own `tojson` needs its `json` feature; this one is all we need of it.
    env.add_filter("tojson", |v: JinjaValue| {
        serde_json::to_string(&v)
            .map(JinjaValue::from_safe_string)
            .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))
    });
    env.add_template_owned(TEMPLATE_NAME, src.to_owned())
        .map_err(template_error)?;
    let compiled = CompiledTemplate { env };

    let sample = sample_event();
    let envelope = EventEnvelope {
        id: "01HQ0000000000000000000000",
        received_at_ms: 1_700_000_000_000,
        event: &sample,
    };
    match compiled.render(template_context(&envelope, Some(b"{}"))?) {
        Err(e) if is_static_error(e.kind()) => Err(template_error(e)),
        _ => Ok(compiled),
    }
}

/// Errors that are the template's own fault whatever the event.
fn is_static_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::TemplateNotFound
            | ErrorKind::BadInclude
            | ErrorKind::TooManyArguments
            | ErrorKind::MissingArgument
    )
}

/// minijinja's message, which names the template and line, plus its detail.
fn template_error(e: minijinja::Error) -> FormatError {
    let msg = e.to_string();
    match e.detail() {
        Some(detail) if !msg.contains(detail) => FormatError::Template(format!("{msg}: {detail}")),
        _ => FormatError::Template(msg),
    }
}

/// What a template sees (see [`CompiledTemplate`]).
fn template_context(env: &EventEnvelope, raw: Option<&[u8]>) -> Result<Value, FormatError> {
    let ev = env.event;
    let mut ctx = json!({
        "id": env.id,
        "event": ev.kind.as_str(),
        "timestamp": rfc3339(env.received_at_ms)?,
        "source": ev.source.as_str(),
        "instance_id": ev.instance,
        "data": ev,
        "title": title(ev),
        "summary": summary(ev),
    });
    if let (Some(raw), Some(obj)) = (raw, ctx.as_object_mut()) {
        obj.insert("raw".into(), String::from_utf8_lossy(raw).into());
    }
    Ok(ctx)
}

impl CompiledTemplate {
    fn render(&self, ctx: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(TEMPLATE_NAME)?.render(ctx)
    }
}

/// Builds the body for `format`. `raw` is the sender's original body (for `raw` and
/// templates); `content_type` is the hook's configured one, and for `raw` should fall back to
/// the original request's (a Plex body is multipart). Default: `application/json`.
pub fn render(
    format: HookFormat,
    template: Option<&CompiledTemplate>,
    env: &EventEnvelope,
    raw: Option<&[u8]>,
    content_type: Option<&str>,
) -> Result<RenderedBody, FormatError> {
    let body = match format {
        HookFormat::Relayarr => serde_json::to_vec(&relayarr_body(env)?)
            .map_err(|e| FormatError::Json(e.to_string()))?,
        HookFormat::Raw => raw.ok_or(FormatError::MissingRaw)?.to_vec(),
        HookFormat::Discord => to_json(&discord_body(env)?)?,
        HookFormat::Slack => to_json(&slack_body(env)?)?,
        HookFormat::Template => template
            .ok_or(FormatError::MissingTemplate)?
            .render(template_context(env, raw)?)
            .map_err(template_error)?
            .into_bytes(),
    };
    Ok(RenderedBody {
        content_type: content_type.unwrap_or(JSON).to_owned(),
        body,
    })
}

fn to_json(v: &Value) -> Result<Vec<u8>, FormatError> {
    serde_json::to_vec(v).map_err(|e| FormatError::Json(e.to_string()))
}

/// RFC 3339 in UTC (`2021-02-25T15:02:10.123Z`) of Unix milliseconds.
fn rfc3339(ms: i64) -> Result<String, FormatError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(FormatError::Timestamp(ms))
}

/// The `relayarr` envelope. A struct, not `json!`, so the keys keep this order on the wire
/// (`json!` sorts them): `id` and `event` then lead the 1 KiB history excerpt.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    id: &'a str,
    event: &'static str,
    timestamp: String,
    source: &'static str,
    instance_id: &'a str,
    data: &'a NormalizedEvent,
}

fn relayarr_body<'a>(env: &EventEnvelope<'a>) -> Result<Envelope<'a>, FormatError> {
    let ev = env.event;
    Ok(Envelope {
        id: env.id,
        event: ev.kind.as_str(),
        timestamp: rfc3339(env.received_at_ms)?,
        source: ev.source.as_str(),
        instance_id: &ev.instance,
        data: ev,
    })
}

// ---------------------------------------------------------------------------------------
// Human-readable text shared by Discord and Slack.

/// `Sonarr`, `Plex`, … for titles.
fn source_label(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Sonarr => "Sonarr",
        SourceKind::Radarr => "Radarr",
        SourceKind::Lidarr => "Lidarr",
        SourceKind::Readarr => "Readarr",
        SourceKind::Whisparr => "Whisparr",
        SourceKind::Plex => "Plex",
        SourceKind::Tautulli => "Tautulli",
        SourceKind::Jellyfin => "Jellyfin",
        SourceKind::Custom => "Custom",
    }
}

/// `Upgrade`, `Series Add`; for unknown types the sender's own name.
fn kind_label(ev: &NormalizedEvent) -> String {
    if ev.kind == EventKind::Other {
        return ev.event_type.clone();
    }
    ev.kind
        .as_str()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Sonarr · Upgrade`.
fn title(ev: &NormalizedEvent) -> String {
    format!("{} · {}", source_label(ev.source), kind_label(ev))
}

/// `S03E05`, `S03`, `#5` (a track), or nothing.
fn episode_code(e: &Episode) -> Option<String> {
    match (e.season, e.episode) {
        (Some(s), Some(n)) => Some(format!("S{s:02}E{n:02}")),
        (Some(s), None) => Some(format!("S{s:02}")),
        (None, Some(n)) => Some(format!("#{n}")),
        (None, None) => None,
    }
}

/// A one-line description of what happened: `The Expanse (2015) — S03E05 Triple Point`, a
/// health message, or the sender's event name when there is nothing better.
pub fn summary(ev: &NormalizedEvent) -> String {
    let detail = |k: &str| ev.details.get(k).filter(|v| !v.trim().is_empty());
    let media_title = ev
        .media
        .as_ref()
        .and_then(|m| m.title.as_deref().map(|t| (t, m.year.filter(|y| *y > 0))));
    if let Some((name, year)) = media_title {
        let mut s = match year {
            Some(y) => format!("{name} ({y})"),
            None => name.to_owned(),
        };
        if let Some(first) = ev.episodes.first() {
            let label: Vec<String> = episode_code(first)
                .into_iter()
                .chain(first.title.clone())
                .collect();
            if !label.is_empty() {
                s.push_str(" — ");
                s.push_str(&label.join(" "));
            }
            if ev.episodes.len() > 1 {
                s.push_str(&format!(" (+{} more)", ev.episodes.len() - 1));
            }
        } else if let Some(part) = detail("album_title")
            .or_else(|| detail("album"))
            .or_else(|| detail("book_title"))
        {
            s.push_str(" — ");
            s.push_str(part);
        }
        return s;
    }
    if let Some(message) = detail("message") {
        return message.clone();
    }
    if let (Some(from), Some(to)) = (detail("previous_version"), detail("new_version")) {
        return format!("{from} → {to}");
    }
    if ev.kind == EventKind::Test {
        let from = ev.sender_instance.as_deref().unwrap_or(&ev.instance);
        return format!("Test from {from}");
    }
    format!("{} {}", source_label(ev.source), ev.event_type)
}

/// One labelled value shown under the summary.
#[derive(Debug, PartialEq)]
struct Fact {
    name: &'static str,
    value: String,
    inline: bool,
}

/// `4.2 GiB`.
fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = bytes.max(0) as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// The labelled details worth showing, in display order; empty values are left out.
fn facts(ev: &NormalizedEvent, summary: &str) -> Vec<Fact> {
    let detail = |k: &str| ev.details.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let current: Vec<&FileRef> = ev.files.iter().filter(|f| !f.deleted).collect();
    let deleted: Vec<&FileRef> = ev.files.iter().filter(|f| f.deleted).collect();
    let paths = |files: &[&FileRef]| -> Option<String> {
        let first = files.first()?;
        Some(match files.len() {
            1 => first.path.clone(),
            n => format!("{} (+{} more)", first.path, n - 1),
        })
    };
    let mut qualities: Vec<&str> = Vec::new();
    for q in deleted.iter().filter_map(|f| f.quality.as_deref()) {
        if !qualities.contains(&q) {
            qualities.push(q);
        }
    }

    let mut out = Vec::new();
    let mut push = |name: &'static str, value: Option<String>, inline: bool| {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            out.push(Fact {
                name,
                value,
                inline,
            });
        }
    };
    push(
        "Quality",
        detail("quality").or_else(|| current.iter().find_map(|f| f.quality.clone())),
        true,
    );
    if ev.kind == EventKind::Upgrade {
        push("Replaced", Some(qualities.join(", ")), true);
    }
    push(
        "Size",
        current.first().and_then(|f| f.size).map(human_size),
        true,
    );
    push("Release", detail("release_title"), false);
    push("Indexer", detail("indexer"), true);
    push("Download client", detail("download_client"), true);
    push("User", detail("user"), true);
    push("Device", detail("device"), true);
    push("Client", detail("client"), true);
    push("Rating", detail("rating"), true);
    push("Artist", detail("artist"), true);
    push("Albums", detail("albums"), false);
    push("Books", detail("books"), false);
    push("Level", detail("level"), true);
    push("Message", detail("message").filter(|m| m != summary), false);
    push("Reason", detail("delete_reason"), true);
    push("Status", detail("download_status_messages"), false);
    if let (Some(from), Some(to)) = (detail("previous_version"), detail("new_version")) {
        let version = format!("{from} → {to}");
        if version != summary {
            push("Version", Some(version), true);
        }
    }
    push("Tags", Some(ev.tags.join(", ")), true);
    let file_label = if ev.kind == EventKind::Delete {
        "Deleted"
    } else {
        "File"
    };
    if ev.kind == EventKind::Delete {
        push(file_label, paths(&deleted), false);
    } else {
        push(file_label, paths(&current), false);
        if ev.kind == EventKind::Rename {
            push(
                "Previously",
                current.first().and_then(|f| f.previous_path.clone()),
                false,
            );
        }
        if ev.kind == EventKind::Upgrade {
            push("Replaced file", paths(&deleted), false);
        }
    }
    push("Wiki", detail("wiki_url"), false);
    out
}

/// Embed colour by kind: green for new media, blue for activity, purple for changes,
/// orange for deletions, red for problems, grey otherwise.
fn color(kind: &EventKind) -> u32 {
    use EventKind::*;
    match kind {
        Import | Upgrade | LibraryNew | SeriesAdd | MovieAdd | ArtistAdd | AuthorAdd
        | HealthRestored | Played => 0x2ECC71,
        Grab | Play | Resume | PlaybackStarted | OnDeck => 0x3498DB,
        Rename | Retag | Pause | Stop | Rated => 0x9B59B6,
        Delete | SeriesDelete | MovieDelete | ArtistDelete | AlbumDelete | AuthorDelete
        | BookDelete => 0xE67E22,
        DownloadFailure
        | ImportFailure
        | Health
        | ManualInteractionRequired
        | DatabaseCorrupted => 0xE74C3C,
        Test | ApplicationUpdate | DatabaseBackup | DeviceNew | Other => 0x95A5A6,
    }
}

/// Length as Discord and Slack may count it (UTF-16 units ≥ characters).
fn text_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` cut to at most `max` UTF-16 units, ending in `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if text_len(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        if used + c.len_utf16() + 1 > max {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

// Discord limits (Embed Limits, discord.com/developers/docs/resources/message).
const DISCORD_TITLE: usize = 256;
const DISCORD_DESCRIPTION: usize = 4096;
const DISCORD_FIELDS: usize = 25;
const DISCORD_FIELD_NAME: usize = 256;
const DISCORD_FIELD_VALUE: usize = 1024;
/// Discord allows 2048; ours is `relayarr · <instance>`, and a shorter cap leaves the
/// 6000 total for the description and fields.
const DISCORD_FOOTER: usize = 256;
const DISCORD_TOTAL: usize = 6000;

fn discord_body(env: &EventEnvelope) -> Result<Value, FormatError> {
    let ev = env.event;
    let title = clip(&title(ev), DISCORD_TITLE);
    let footer = clip(&format!("relayarr · {}", ev.instance), DISCORD_FOOTER);
    let summary = summary(ev);
    let mut fields: Vec<(String, String, bool)> = facts(ev, &summary)
        .into_iter()
        .take(DISCORD_FIELDS)
        .map(|f| {
            (
                clip(f.name, DISCORD_FIELD_NAME),
                clip(&f.value, DISCORD_FIELD_VALUE),
                f.inline,
            )
        })
        .collect();
    let fixed = text_len(&title) + text_len(&footer);
    let fields_len = |fields: &[(String, String, bool)]| -> usize {
        fields
            .iter()
            .map(|(n, v, _)| text_len(n) + text_len(v))
            .sum()
    };
    // Over the total: drop trailing fields first, then shorten the description.
    while fixed + text_len(&summary).min(DISCORD_DESCRIPTION) + fields_len(&fields) > DISCORD_TOTAL
        && !fields.is_empty()
    {
        fields.pop();
    }
    let description = clip(
        &summary,
        DISCORD_DESCRIPTION.min(DISCORD_TOTAL.saturating_sub(fixed + fields_len(&fields))),
    );
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|(name, value, inline)| json!({"name": name, "value": value, "inline": inline}))
        .collect();
    Ok(json!({
        "username": "relayarr",
        // Never let an event's text ping @everyone or a role.
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": title,
            "description": description,
            "color": color(&ev.kind),
            "timestamp": rfc3339(env.received_at_ms)?,
            "fields": fields,
            "footer": {"text": footer},
        }],
    }))
}

// Slack limits (Block Kit reference, docs.slack.dev/reference/block-kit/blocks).
const SLACK_HEADER: usize = 150;
const SLACK_TEXT: usize = 3000;

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack_body(env: &EventEnvelope) -> Result<Value, FormatError> {
    let ev = env.event;
    let title = title(ev);
    let summary = summary(ev);
    let mut section = format!("*{}*", slack_escape(&summary));
    for f in facts(ev, &summary) {
        let value = if matches!(f.name, "File" | "Deleted" | "Previously" | "Replaced file") {
            format!("`{}`", slack_escape(&f.value))
        } else {
            slack_escape(&f.value)
        };
        section.push_str(&format!("\n*{}:* {}", f.name, value));
    }
    let ts = rfc3339(env.received_at_ms)?;
    let unix = env.received_at_ms.div_euclid(1000);
    let context = format!(
        "relayarr · {} · <!date^{unix}^{{date_short_pretty}} {{time}}|{ts}>",
        slack_escape(&ev.instance)
    );
    Ok(json!({
        "text": clip(&slack_escape(&format!("{title}: {summary}")), SLACK_TEXT),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&title, SLACK_HEADER), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(&section, SLACK_TEXT)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&context, SLACK_TEXT)}]},
        ],
    }))
}

/// A realistic Sonarr upgrade (The Expanse S03E05 from HDTV-720p to Bluray-1080p), as the
/// Sonarr parser would produce it. `relayarr test-hook` sends it.
pub fn sample_event() -> NormalizedEvent {
    let mut ev = NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Upgrade, "Download");
    ev.is_upgrade = true;
    ev.sender_instance = Some("Sonarr".into());
    ev.download_id = Some("SABnzbd_nzo_4kq7c2ab".into());
    ev.tags = vec!["sci-fi".into()];
    ev.media = Some(Media {
        media_type: "series".into(),
        title: Some("The Expanse".into()),
        year: Some(2015),
        path: Some("/tv/The Expanse".into()),
        ids: MediaIds {
            tvdb: Some(280_619),
            imdb: Some("tt3230854".into()),
            tvmaze: Some(1825),
            arr: Some(12),
            ..MediaIds::default()
        },
        library: None,
    });
    ev.episodes = vec![Episode {
        season: Some(3),
        episode: Some(5),
        title: Some("Triple Point".into()),
        ..Episode::default()
    }];
    let name = "The Expanse - S03E05 - Triple Point";
    ev.files = vec![
        FileRef {
            path: format!("/tv/The Expanse/Season 03/{name} [Bluray-1080p].mkv"),
            relative_path: Some(format!("Season 03/{name} [Bluray-1080p].mkv")),
            previous_path: Some(
                "/downloads/complete/The.Expanse.S03E05.1080p.BluRay.x264-ROVERS/\
                 The.Expanse.S03E05.1080p.BluRay.x264-ROVERS.mkv"
                    .into(),
            ),
            deleted: false,
            quality: Some("Bluray-1080p".into()),
            size: Some(4_508_876_800),
        },
        FileRef {
            path: format!("/tv/The Expanse/Season 03/{name} [HDTV-720p].mkv"),
            relative_path: Some(format!("Season 03/{name} [HDTV-720p].mkv")),
            previous_path: None,
            deleted: true,
            quality: Some("HDTV-720p".into()),
            size: Some(1_288_490_188),
        },
    ];
    ev.details
        .insert("download_client".into(), "SABnzbd".into());
    ev.details
        .insert("download_client_type".into(), "SABnzbd".into());
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_MS: i64 = 1_614_265_330_123; // 2021-02-25T15:02:10.123Z

    fn envelope(ev: &NormalizedEvent) -> EventEnvelope<'_> {
        EventEnvelope {
            id: "01HQEVENT",
            received_at_ms: AT_MS,
            event: ev,
        }
    }

    fn json_of(body: &RenderedBody) -> Value {
        serde_json::from_slice(&body.body).expect("json body")
    }

    fn render_fmt(format: HookFormat, ev: &NormalizedEvent) -> Value {
        let body = render(format, None, &envelope(ev), None, None).expect("render");
        assert_eq!(body.content_type, "application/json");
        json_of(&body)
    }

    #[test]
    fn format_relayarr_envelope() {
        let ev = sample_event();
        let v = render_fmt(HookFormat::Relayarr, &ev);
        assert_eq!(v["id"], "01HQEVENT");
        assert_eq!(v["event"], "upgrade");
        assert_eq!(v["timestamp"], "2021-02-25T15:02:10.123Z");
        assert_eq!(v["source"], "sonarr");
        assert_eq!(v["instance_id"], "sonarr");
        assert_eq!(v["data"], serde_json::to_value(&ev).expect("ser"));
        assert_eq!(v["data"]["media"]["ids"]["tvdb"], 280_619);
    }

    #[test]
    fn format_raw_passes_bytes_through() {
        let ev = sample_event();
        let raw = b"--boundary\r\nplex\r\n";
        let body = render(
            HookFormat::Raw,
            None,
            &envelope(&ev),
            Some(raw),
            Some("multipart/form-data; boundary=boundary"),
        )
        .expect("render");
        assert_eq!(body.body, raw);
        assert_eq!(body.content_type, "multipart/form-data; boundary=boundary");
        let body =
            render(HookFormat::Raw, None, &envelope(&ev), Some(b"{}"), None).expect("render");
        assert_eq!(body.content_type, "application/json");
        assert_eq!(
            render(HookFormat::Raw, None, &envelope(&ev), None, None),
            Err(FormatError::MissingRaw)
        );
    }

    #[test]
    fn format_summary_and_title() {
        let ev = sample_event();
        assert_eq!(summary(&ev), "The Expanse (2015) — S03E05 Triple Point");
        assert_eq!(title(&ev), "Sonarr · Upgrade");

        let mut health =
            NormalizedEvent::new(SourceKind::Radarr, "radarr", EventKind::Health, "Health");
        health
            .details
            .insert("message".into(), "Indexers unavailable".into());
        assert_eq!(summary(&health), "Indexers unavailable");

        let mut two = sample_event();
        two.episodes.push(Episode {
            season: Some(3),
            episode: Some(6),
            ..Episode::default()
        });
        assert_eq!(
            summary(&two),
            "The Expanse (2015) — S03E05 Triple Point (+1 more)"
        );

        let other = NormalizedEvent::new(
            SourceKind::Sonarr,
            "sonarr",
            EventKind::Other,
            "SeriesRefreshed",
        );
        assert_eq!(summary(&other), "Sonarr SeriesRefreshed");
        assert_eq!(title(&other), "Sonarr · SeriesRefreshed");

        let add = NormalizedEvent::new(
            SourceKind::Sonarr,
            "sonarr",
            EventKind::SeriesAdd,
            "SeriesAdd",
        );
        assert_eq!(title(&add), "Sonarr · Series Add");

        let mut test = NormalizedEvent::new(SourceKind::Radarr, "radarr", EventKind::Test, "Test");
        test.sender_instance = Some("Radarr 4K".into());
        assert_eq!(summary(&test), "Test from Radarr 4K");
    }

    #[test]
    fn format_discord_embed() {
        let ev = sample_event();
        let v = render_fmt(HookFormat::Discord, &ev);
        assert_eq!(v["username"], "relayarr");
        assert_eq!(v["allowed_mentions"], json!({"parse": []}));
        let e = &v["embeds"][0];
        assert_eq!(e["title"], "Sonarr · Upgrade");
        assert_eq!(e["description"], "The Expanse (2015) — S03E05 Triple Point");
        assert_eq!(e["color"], 0x2ECC71);
        assert_eq!(e["timestamp"], "2021-02-25T15:02:10.123Z");
        assert_eq!(e["footer"]["text"], "relayarr · sonarr");
        let fields = e["fields"].as_array().expect("fields");
        let field = |name: &str| {
            fields
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("no field {name}: {fields:?}"))
        };
        assert_eq!(field("Quality")["value"], "Bluray-1080p");
        assert_eq!(field("Quality")["inline"], true);
        assert_eq!(field("Replaced")["value"], "HDTV-720p");
        assert_eq!(field("Size")["value"], "4.2 GiB");
        assert_eq!(field("Download client")["value"], "SABnzbd");
        assert_eq!(field("Tags")["value"], "sci-fi");
        assert_eq!(
            field("File")["value"],
            "/tv/The Expanse/Season 03/The Expanse - S03E05 - Triple Point [Bluray-1080p].mkv"
        );
        assert_eq!(field("File")["inline"], false);
        assert!(field("Replaced file")["value"]
            .as_str()
            .is_some_and(|p| p.ends_with("[HDTV-720p].mkv")));
    }

    fn discord_total(e: &Value) -> usize {
        let s = |v: &Value| v.as_str().map(text_len).unwrap_or(0);
        s(&e["title"])
            + s(&e["description"])
            + s(&e["footer"]["text"])
            + e["fields"]
                .as_array()
                .map(|fs| fs.iter().map(|f| s(&f["name"]) + s(&f["value"])).sum())
                .unwrap_or(0)
    }

    #[test]
    fn format_discord_respects_limits() {
        let mut ev = sample_event();
        let long = "é🎬".repeat(5000);
        ev.instance = long.clone();
        ev.media.as_mut().expect("media").title = Some(long.clone());
        ev.event_type = long.clone();
        ev.kind = EventKind::Other;
        for key in [
            "release_title",
            "indexer",
            "user",
            "device",
            "client",
            "rating",
            "artist",
            "albums",
            "books",
            "level",
            "message",
            "delete_reason",
            "download_status_messages",
            "wiki_url",
        ] {
            ev.details.insert(key.into(), long.clone());
        }
        ev.files[0].path = long.clone();
        let v = render_fmt(HookFormat::Discord, &ev);
        let e = &v["embeds"][0];
        let len = |v: &Value| v.as_str().map(text_len).unwrap_or(0);
        assert!(len(&e["title"]) <= 256);
        assert!(len(&e["description"]) <= 4096);
        assert!(len(&e["footer"]["text"]) <= 256);
        let fields = e["fields"].as_array().expect("fields");
        assert!(fields.len() <= 25);
        assert!(!fields.is_empty());
        for f in fields {
            assert!(len(&f["value"]) <= 1024 && len(&f["value"]) > 0);
        }
        assert!(discord_total(e) <= 6000, "{}", discord_total(e));
        assert!(e["title"].as_str().is_some_and(|t| t.ends_with('…')));
    }

    #[test]
    fn format_discord_total_limit_shortens_the_description_last() {
        let mut ev =
            NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Health, "Health");
        ev.details.insert("message".into(), "x".repeat(10_000));
        let v = render_fmt(HookFormat::Discord, &ev);
        let e = &v["embeds"][0];
        assert_eq!(
            text_len(e["description"].as_str().expect("description")),
            4096
        );
        assert!(discord_total(e) <= 6000);
    }

    #[test]
    fn format_slack_blocks() {
        let mut ev = sample_event();
        ev.details
            .insert("release_title".into(), "A & B <C>".into());
        let v = render_fmt(HookFormat::Slack, &ev);
        assert_eq!(
            v["text"],
            "Sonarr · Upgrade: The Expanse (2015) — S03E05 Triple Point"
        );
        let blocks = v["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[0]["text"]["text"], "Sonarr · Upgrade");
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        let section = blocks[1]["text"]["text"].as_str().expect("section");
        assert!(section.starts_with("*The Expanse (2015) — S03E05 Triple Point*"));
        assert!(section.contains("\n*Quality:* Bluray-1080p"), "{section}");
        assert!(
            section.contains("*Release:* A &amp; B &lt;C&gt;"),
            "{section}"
        );
        assert!(section.contains("*File:* `/tv/The Expanse/"), "{section}");
        assert_eq!(blocks[2]["type"], "context");
        let ctx = blocks[2]["elements"][0]["text"].as_str().expect("context");
        assert!(
            ctx.starts_with("relayarr · sonarr · <!date^1614265330^"),
            "{ctx}"
        );
    }

    #[test]
    fn format_slack_respects_limits() {
        let mut ev = sample_event();
        let long = "<&>".repeat(3000);
        ev.media.as_mut().expect("media").title = Some(long.clone());
        ev.kind = EventKind::Other;
        ev.event_type = long.clone();
        ev.details.insert("message".into(), long);
        let v = render_fmt(HookFormat::Slack, &ev);
        let len = |v: &Value| v.as_str().map(text_len).unwrap_or(usize::MAX);
        assert!(len(&v["blocks"][0]["text"]["text"]) <= 150);
        assert!(len(&v["blocks"][1]["text"]["text"]) <= 3000);
        assert!(len(&v["blocks"][2]["elements"][0]["text"]) <= 3000);
        assert!(len(&v["text"]) <= 3000);
    }

    #[test]
    fn format_clip_counts_utf16_and_marks_the_cut() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("🎬🎬🎬", 4), "🎬…");
        assert_eq!(text_len(&clip("🎬🎬🎬", 4)), 3);
        assert_eq!(clip("abc", 0), "");
    }

    #[test]
    fn format_template_renders_the_context() {
        let t = compile_template(
            r#"{"id": {{ id|tojson }}, "e": "{{ event }}", "src": "{{ source }}", "i": "{{ instance_id }}", "t": "{{ timestamp }}", "title": {{ data.media.title|tojson }}, "tvdb": {{ data.media.ids.tvdb }}, "raw": {{ raw|tojson }}, "s": {{ summary|tojson }}}"#,
        )
        .expect("compile");
        let ev = sample_event();
        let body = render(
            HookFormat::Template,
            Some(&t),
            &envelope(&ev),
            Some(br#"{"eventType":"Download"}"#),
            Some("application/vnd.cms+json"),
        )
        .expect("render");
        assert_eq!(body.content_type, "application/vnd.cms+json");
        let v = json_of(&body);
        assert_eq!(
            v,
            json!({
                "id": "01HQEVENT",
                "e": "upgrade",
                "src": "sonarr",
                "i": "sonarr",
                "t": "2021-02-25T15:02:10.123Z",
                "title": "The Expanse",
                "tvdb": 280_619,
                "raw": "{\"eventType\":\"Download\"}",
                "s": "The Expanse (2015) — S03E05 Triple Point",
            })
        );
    }

    #[test]
    fn format_template_missing_fields_render_empty() {
        let t = compile_template("[{{ data.media.title }}|{{ raw }}]").expect("compile");
        let ev = NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Health, "Health");
        let body =
            render(HookFormat::Template, Some(&t), &envelope(&ev), None, None).expect("render");
        assert_eq!(body.body, b"[|]");
    }

    #[test]
    fn format_template_errors_name_the_problem() {
        let err = compile_template("{{ event ")
            .expect_err("syntax")
            .to_string();
        assert!(err.contains("syntax error"), "{err}");
        assert!(err.contains("line 1") || err.contains(":1"), "{err}");
        let err = compile_template("{{ event|shout }}")
            .expect_err("filter")
            .to_string();
        assert!(
            err.contains("shout") || err.contains("unknown filter"),
            "{err}"
        );
        // Data-dependent errors are left for render time.
        let t = compile_template("{% if data.kind == 'grab' %}{{ 1 // 0 }}{% endif %}ok")
            .expect("compile");
        let mut grab = sample_event();
        grab.kind = EventKind::Grab;
        let err = render(HookFormat::Template, Some(&t), &envelope(&grab), None, None)
            .expect_err("div by zero");
        assert!(matches!(err, FormatError::Template(_)), "{err}");
        assert_eq!(
            render(HookFormat::Template, None, &envelope(&grab), None, None),
            Err(FormatError::MissingTemplate)
        );
    }

    #[test]
    fn format_bad_timestamp_is_an_error() {
        let ev = sample_event();
        let env = EventEnvelope {
            id: "x",
            received_at_ms: i64::MAX,
            event: &ev,
        };
        assert_eq!(
            render(HookFormat::Relayarr, None, &env, None, None),
            Err(FormatError::Timestamp(i64::MAX))
        );
    }

    #[test]
    fn format_sample_event_round_trips() {
        let ev = sample_event();
        let v = serde_json::to_value(&ev).expect("ser");
        assert_eq!(v["kind"], "upgrade");
        assert_eq!(v["files"][1]["deleted"], true);
        let back: NormalizedEvent = serde_json::from_value(v).expect("de");
        assert_eq!(back, ev);
    }
}
