//! Where a title card for an item comes from: a file written by
//! TitleCardMaker (TCM), or a URL template.
//!
//! # TitleCardMaker naming, as verified in its source
//!
//! Read in `CollinHeist/TitleCardMaker` (naming facts only, no code copied):
//!
//! * `master` at `1d682fdeed0ebf61314e0c6c7908e4abf0de7b4a` ("Release v1.16.0", the CLI/YAML version):
//!   - `modules/TitleCard.py`: `DEFAULT_FILENAME_FORMAT = '{full_name} - S{season:02}E{episode:02}'`,
//!     `DEFAULT_CARD_EXTENSION = '.jpg'`. `get_output_filename` builds
//!     `media_directory / season_folder / sanitize_name(format(...)) + card_extension`.
//!   - `modules/PreferenceParser.py`: `DEFAULT_SEASON_FOLDER_FORMAT = 'Season {season}'`, so **not
//!     zero-padded** (`Season 1`). `get_season_folder`: season 0 is **always `Specials`**, whatever
//!     the format; an empty format means no season folder at all.
//!   - `modules/Show.py`: `media_directory = <library path> / series_info.full_clean_name`, i.e. the
//!     CLI version writes cards into the series folder of the media library itself (overridable
//!     per series with `media_directory`).
//!   - `modules/SeriesInfo.py`: `full_name = f'{name} ({year})'`; a trailing ` (year)` already in the
//!     name is removed first so the year is not doubled; `full_clean_name = sanitize_name(full_name)`.
//!   - `modules/CleanPath.py`: `sanitize_name` replaces `?`→`!`, `<`→``, `>`→``, `:`→` -`, `"`→``,
//!     `|`→``, `*`→`-`, `/`→`+`, `\`→`+`, then keeps the first 254 characters.
//! * `web-ui` at `96b1ce516c8a4950062129858afacf42a7205384` (2024-10-21, the FastAPI version):
//!   - `app/models/preferences.py`: `DEFAULT_CARD_FILENAME_FORMAT =
//!     '{series_full_name} - S{season_number:02}E{episode_number:02}'`,
//!     `DEFAULT_CARD_EXTENSION = '.jpg'`, `card_directory = /config/cards` in Docker,
//!     `season_folder_format = 'Season {season_number}'`, `specials_folder_format = 'Specials'`;
//!     `VALID_IMAGE_EXTENSIONS` = avif, heic, jpg, jpeg, jxl, png, tiff, webp.
//!   - `app/internal/cards.py`: card file = `card_directory / series.path_safe_name /
//!     folder_format / filename`, extension appended, every part sanitised (`CleanPath.sanitize`).
//!     With `library_unique_cards` on, ` [<interface> <library>]` is appended to the filename;
//!     a series can also override its directory. Neither is covered by the default pattern (a
//!     custom `pattern` can express the suffix as a literal).
//!   - `app/models/series.py`: `full_name = f'{name} ({year})'`,
//!     `path_safe_name = sanitize_name(full_name)[:254]`.
//!   - `app/schemas/preferences.py`: the filename format is validated by formatting it with sample
//!     data; the folder formats may use `season_number`, `episode_number`, `absolute_number`.
//!
//! Both versions therefore produce, relative to the card folder:
//! `Show (2020)/Season 1/Show (2020) - S01E05.jpg` and
//! `Show (2020)/Specials/Show (2020) - S00E03.jpg`.
//! In our template syntax that is [`DEFAULT_PATTERN`].
//!
//! # Our template syntax
//!
//! Placeholders: `{title}`, `{year}`, `{full_name}` ("Title (Year)", or "Title" when the year is
//! unknown), `{season}`, `{episode}`, `{season_folder}` (`Specials` for season 0, otherwise
//! `Season N`, TCM's default), `{tvdb}`, `{tmdb}`, `{imdb}`. Numeric placeholders (`year`,
//! `season`, `episode`, `tvdb`, `tmdb`) accept a zero-pad width: `{season:02}`. `{{` and `}}`
//! are literal braces. A file `pattern` may contain `/` for subfolders and has no extension (the
//! `extensions` list is tried in order). Unknown placeholders are rejected when the configuration
//! is loaded.
//!
//! File names: each rendered folder or file name is cleaned with TCM's character map above and cut
//! to 254 characters, so names match what TCM wrote. Because `/` inside a value becomes `+`, a
//! title such as `AC/DC` cannot create a subfolder. A rendered name that is empty, `.` or `..` is
//! refused. URL templates percent-encode every substituted value instead.
//!
//! All file access uses `std::fs` and blocks; call from `spawn_blocking`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Largest card [`read_card`] accepts (10 MiB). Plex cards are usually
/// well under 1 MiB; anything bigger is likely a wrong file.
pub const MAX_CARD_BYTES: u64 = 10 * 1024 * 1024;

/// TCM's default layout (see the module docs) in our template syntax.
pub const DEFAULT_PATTERN: &str =
    "{full_name}/{season_folder}/{full_name} - S{season:02}E{episode:02}";

/// Extensions tried when none are configured, in order. TCM writes `.jpg`
/// unless told otherwise.
pub const DEFAULT_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// TCM's longest folder or file name (characters).
const MAX_NAME_CHARS: usize = 254;

/// Title card settings, as written in the TOML configuration.
///
/// ```toml
/// [title_cards]
/// dir = "/config/cards"          # TCM's card folder as relayarr sees it
/// # pattern = "{full_name}/{season_folder}/{full_name} - S{season:02}E{episode:02}"
/// # url = "http://tcm:4242/cards/{tvdb}/{season}/{episode}.jpg"
/// extensions = ["jpg", "png"]
/// remove_overlay_label = false
/// lock = true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitleCards {
    /// Folder that holds the cards, as relayarr sees it (TCM web UI in
    /// Docker: `/config/cards`; TCM CLI: the media library folder itself).
    /// At least one of `dir` and `url` must be set.
    #[serde(default)]
    pub dir: Option<PathBuf>,

    /// Card path relative to `dir`, without extension; `/` separates
    /// subfolders. Default: TCM's layout,
    /// `{full_name}/{season_folder}/{full_name} - S{season:02}E{episode:02}`.
    /// Placeholders: `{title}`, `{year}`, `{full_name}`, `{season}`,
    /// `{episode}`, `{season_folder}`, `{tvdb}`, `{tmdb}`, `{imdb}`; numbers
    /// can be zero-padded with `{season:02}`. Only valid together with `dir`.
    #[serde(default)]
    pub pattern: Option<String>,

    /// URL template used when no card file is found (or when `dir` is not
    /// set), e.g. `http://tcm:4242/cards/{tvdb}/{season}/{episode}.jpg`.
    /// Same placeholders as `pattern`; values are percent-encoded. Must start
    /// with `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,

    /// File extensions to try, in order, without the dot. Default:
    /// `["jpg", "jpeg", "png", "webp"]`.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,

    /// Remove Kometa's `Overlay` label from the item after uploading the card,
    /// so that Kometa does not restore its own overlaid poster. Default: false.
    #[serde(default)]
    pub remove_overlay_label: bool,

    /// Lock the poster field after uploading, so a Plex metadata refresh does
    /// not replace the card. Default: true.
    #[serde(default = "default_true")]
    pub lock: bool,
}

fn default_extensions() -> Vec<String> {
    DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect()
}

fn default_true() -> bool {
    true
}

impl Default for TitleCards {
    fn default() -> Self {
        TitleCards {
            dir: None,
            pattern: None,
            url: None,
            extensions: default_extensions(),
            remove_overlay_label: false,
            lock: true,
        }
    }
}

/// What is known about the item a card is wanted for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardItem {
    /// Series title (episodes) or movie title. A trailing ` (year)` equal to
    /// `year` is dropped for `{title}` and not repeated in `{full_name}`, as
    /// TCM does.
    pub title: String,
    /// Release year of the series or movie.
    pub year: Option<i32>,
    /// Season number (0 = specials); `None` for movies.
    pub season: Option<i32>,
    /// Episode number; `None` for movies.
    pub episode: Option<i32>,
    /// TheTVDB id.
    pub tvdb: Option<u64>,
    /// TMDb id.
    pub tmdb: Option<u64>,
    /// IMDb id, e.g. `tt0944947`.
    pub imdb: Option<String>,
    /// True for a movie. TCM makes episode cards only, so with the default
    /// pattern a movie never has a card; a custom pattern or URL may serve
    /// movies as long as it uses no season or episode placeholder.
    pub is_movie: bool,
}

/// Where a card was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardRef {
    /// An existing local file.
    File {
        /// Full path of the card file.
        path: PathBuf,
    },
    /// A rendered URL (not checked: fetching it is the caller's job).
    Url {
        /// The URL, with values percent-encoded.
        url: String,
    },
}

/// Errors in the title card configuration, found by [`CardLocator::try_new`].
/// `field` is `"pattern"` or `"url"`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CardConfigError {
    /// Neither `dir` nor `url` is set.
    #[error("title cards: set `dir` (the folder TCM writes cards to) or `url` (a URL template), or both")]
    NoSource,

    /// `pattern` without `dir`.
    #[error("title cards: `pattern` ({pattern:?}) is set but `dir` is not; set `dir` to the card folder")]
    PatternWithoutDir {
        /// The pattern as written.
        pattern: String,
    },

    /// A placeholder name we do not know.
    #[error(
        "title cards: `{field}` {template:?} uses unknown placeholder `{{{name}}}`; known ones are \
         {{title}}, {{year}}, {{full_name}}, {{season}}, {{episode}}, {{season_folder}}, {{tvdb}}, \
         {{tmdb}}, {{imdb}} (write `{{{{` for a literal brace)"
    )]
    UnknownPlaceholder {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// The unknown name.
        name: String,
    },

    /// A format spec other than a zero-pad width.
    #[error(
        "title cards: `{field}` {template:?}: `{{{name}:{spec}}}` is not supported; the only \
         format is a zero-pad width such as `{{{name}:02}}`"
    )]
    BadFormatSpec {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// Placeholder name.
        name: String,
        /// The spec after `:`.
        spec: String,
    },

    /// Padding asked for a text placeholder.
    #[error(
        "title cards: `{field}` {template:?}: `{{{name}:{spec}}}` pads a text value; only year, \
         season, episode, tvdb and tmdb can be zero-padded"
    )]
    PadOnText {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// Placeholder name.
        name: String,
        /// The spec after `:`.
        spec: String,
    },

    /// `{` without a closing `}`.
    #[error(
        "title cards: `{field}` {template:?}: the `{{` at byte {at} is never closed; write `{{{{` \
         for a literal brace"
    )]
    UnclosedBrace {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// Byte offset of the `{`.
        at: usize,
    },

    /// `}` that closes nothing.
    #[error(
        "title cards: `{field}` {template:?}: stray `}}` at byte {at}; write `}}}}` for a literal \
         brace"
    )]
    StrayCloseBrace {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// Byte offset of the `}`.
        at: usize,
    },

    /// `{}` or `{:02}`.
    #[error("title cards: `{field}` {template:?}: empty placeholder at byte {at}; name one, e.g. `{{title}}`")]
    EmptyPlaceholder {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The template as written.
        template: String,
        /// Byte offset of the `{`.
        at: usize,
    },

    /// The pattern is absolute, has a drive letter, or has an empty, `.`
    /// or `..` folder.
    #[error(
        "title cards: `pattern` {pattern:?} must be a relative path below `dir` with no empty, \
         `.` or `..` parts and no leading `/` or drive letter (problem: {part:?})"
    )]
    BadPatternPath {
        /// The pattern as written.
        pattern: String,
        /// The offending part.
        part: String,
    },

    /// The pattern has a backslash.
    #[error("title cards: `pattern` {pattern:?} contains `\\`; use `/` to separate subfolders")]
    BackslashInPattern {
        /// The pattern as written.
        pattern: String,
    },

    /// Empty `extensions`.
    #[error("title cards: `extensions` is empty; list at least one, e.g. [\"jpg\", \"png\"]")]
    NoExtensions,

    /// An extension that is not letters and digits.
    #[error("title cards: extension {ext:?} is not a plain file extension; write it like \"jpg\" (letters and digits)")]
    BadExtension {
        /// The extension as written.
        ext: String,
    },

    /// A URL template that is not http(s).
    #[error("title cards: `url` {url:?} must start with http:// or https://")]
    BadUrl {
        /// The URL template as written.
        url: String,
    },
}

/// Why a template could not be rendered for an item.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CardRenderError {
    /// The item lacks a value the template needs (e.g. a movie has no season).
    #[error("`{field}` needs `{{{placeholder}}}`, but the item has no {placeholder}")]
    Missing {
        /// `"pattern"` or `"url"`.
        field: &'static str,
        /// The placeholder that has no value.
        placeholder: &'static str,
    },
    /// A rendered folder or file name that could escape or is empty.
    #[error("`pattern` renders a folder or file name {part:?}, which is not usable")]
    UnusableName {
        /// The rendered name.
        part: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Title,
    Year,
    FullName,
    Season,
    Episode,
    SeasonFolder,
    Tvdb,
    Tmdb,
    Imdb,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "title" => Field::Title,
            "year" => Field::Year,
            "full_name" => Field::FullName,
            "season" => Field::Season,
            "episode" => Field::Episode,
            "season_folder" => Field::SeasonFolder,
            "tvdb" => Field::Tvdb,
            "tmdb" => Field::Tmdb,
            "imdb" => Field::Imdb,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Year => "year",
            Field::FullName => "full_name",
            Field::Season => "season",
            Field::Episode => "episode",
            Field::SeasonFolder => "season_folder",
            Field::Tvdb => "tvdb",
            Field::Tmdb => "tmdb",
            Field::Imdb => "imdb",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            Field::Year | Field::Season | Field::Episode | Field::Tvdb | Field::Tmdb
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    /// `pad` is the zero-pad width, 0 for none.
    Field {
        field: Field,
        pad: usize,
    },
}

/// Parses a template into literal and placeholder pieces.
fn parse_template(field: &'static str, src: &str) -> Result<Vec<Piece>, CardConfigError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut iter = src.char_indices().peekable();
    while let Some((at, c)) = iter.next() {
        match c {
            '{' if iter.peek().map(|&(_, n)| n) == Some('{') => {
                iter.next();
                lit.push('{');
            }
            '}' if iter.peek().map(|&(_, n)| n) == Some('}') => {
                iter.next();
                lit.push('}');
            }
            '}' => {
                return Err(CardConfigError::StrayCloseBrace {
                    field,
                    template: src.to_owned(),
                    at,
                })
            }
            '{' => {
                let inner_start = at + 1;
                let Some(len) = src[inner_start..].find(['}', '{']) else {
                    return Err(CardConfigError::UnclosedBrace {
                        field,
                        template: src.to_owned(),
                        at,
                    });
                };
                let end = inner_start + len;
                if src[end..].starts_with('{') {
                    return Err(CardConfigError::UnclosedBrace {
                        field,
                        template: src.to_owned(),
                        at,
                    });
                }
                let inner = &src[inner_start..end];
                // Skip the inner text and the closing brace.
                while iter.peek().is_some_and(|&(i, _)| i <= end) {
                    iter.next();
                }
                let (name, spec) = match inner.split_once(':') {
                    Some((n, s)) => (n, Some(s)),
                    None => (inner, None),
                };
                if name.is_empty() {
                    return Err(CardConfigError::EmptyPlaceholder {
                        field,
                        template: src.to_owned(),
                        at,
                    });
                }
                let Some(f) = Field::parse(name) else {
                    return Err(CardConfigError::UnknownPlaceholder {
                        field,
                        template: src.to_owned(),
                        name: name.to_owned(),
                    });
                };
                let pad = match spec {
                    None => 0,
                    Some(spec) => {
                        let width = spec
                            .strip_prefix('0')
                            .filter(|w| !w.is_empty() && w.len() <= 2)
                            .and_then(|w| w.parse::<usize>().ok())
                            .filter(|w| *w > 0);
                        let Some(width) = width else {
                            return Err(CardConfigError::BadFormatSpec {
                                field,
                                template: src.to_owned(),
                                name: name.to_owned(),
                                spec: spec.to_owned(),
                            });
                        };
                        if !f.is_numeric() {
                            return Err(CardConfigError::PadOnText {
                                field,
                                template: src.to_owned(),
                                name: name.to_owned(),
                                spec: spec.to_owned(),
                            });
                        }
                        width
                    }
                };
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Field { field: f, pad });
            }
            other => lit.push(other),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// Splits parsed pieces into path components at `/` in literal text.
fn split_components(pieces: Vec<Piece>) -> Vec<Vec<Piece>> {
    let mut components = vec![Vec::new()];
    for piece in pieces {
        match piece {
            Piece::Lit(text) => {
                let mut parts = text.split('/');
                if let Some(first) = parts.next() {
                    if !first.is_empty() {
                        push_piece(&mut components, Piece::Lit(first.to_owned()));
                    }
                }
                for part in parts {
                    components.push(Vec::new());
                    if !part.is_empty() {
                        push_piece(&mut components, Piece::Lit(part.to_owned()));
                    }
                }
            }
            field => push_piece(&mut components, field),
        }
    }
    components
}

fn push_piece(components: &mut [Vec<Piece>], piece: Piece) {
    if let Some(last) = components.last_mut() {
        last.push(piece);
    }
}

/// A component made only of literal text, if it is.
fn literal_only(component: &[Piece]) -> Option<String> {
    let mut out = String::new();
    for piece in component {
        match piece {
            Piece::Lit(t) => out.push_str(t),
            Piece::Field { .. } => return None,
        }
    }
    Some(out)
}

/// Values of one item, computed once per render.
struct Values<'a> {
    item: &'a CardItem,
    title: &'a str,
}

impl<'a> Values<'a> {
    fn new(item: &'a CardItem) -> Self {
        // TCM drops a trailing " (year)" from the name so that full_name does
        // not repeat the year ("Doctor Who (2005)" + 2005).
        let mut title = item.title.trim();
        if let Some(year) = item.year {
            if let Some(stripped) = title.strip_suffix(&format!(" ({year})")) {
                title = stripped.trim_end();
            }
        }
        Values { item, title }
    }

    fn get(&self, field: Field, pad: usize) -> Option<String> {
        let num = |n: Option<i64>| n.map(|n| format!("{n:0pad$}"));
        match field {
            Field::Title => Some(self.title.to_owned()).filter(|t| !t.is_empty()),
            Field::Year => num(self.item.year.map(i64::from)),
            Field::FullName => {
                if self.title.is_empty() {
                    return None;
                }
                Some(match self.item.year {
                    Some(year) => format!("{} ({year})", self.title),
                    None => self.title.to_owned(),
                })
            }
            Field::Season => num(self.item.season.map(i64::from)),
            Field::Episode => num(self.item.episode.map(i64::from)),
            Field::SeasonFolder => self.item.season.map(|s| {
                if s == 0 {
                    "Specials".to_owned()
                } else {
                    format!("Season {s}")
                }
            }),
            Field::Tvdb => self.item.tvdb.map(|n| format!("{n:0pad$}")),
            Field::Tmdb => self.item.tmdb.map(|n| format!("{n:0pad$}")),
            Field::Imdb => self
                .item
                .imdb
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }
}

fn render_pieces(
    field_name: &'static str,
    pieces: &[Piece],
    values: &Values<'_>,
    encode: bool,
) -> Result<String, CardRenderError> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Lit(t) => out.push_str(t),
            Piece::Field { field, pad } => {
                let v = values.get(*field, *pad).ok_or(CardRenderError::Missing {
                    field: field_name,
                    placeholder: field.name(),
                })?;
                if encode {
                    out.push_str(&percent_encode(&v));
                } else {
                    out.push_str(&v);
                }
            }
        }
    }
    Ok(out)
}

/// TCM's file name cleaning (see the module docs): the same character map,
/// then at most 254 characters.
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '?' => out.push('!'),
            '<' | '>' | '"' | '|' => {}
            ':' => out.push_str(" -"),
            '*' => out.push('-'),
            '/' | '\\' => out.push('+'),
            other => out.push(other),
        }
    }
    match out.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => out[..cut].to_owned(),
        None => out,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a value
/// cannot add path segments, queries or fragments to a URL.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Validated card settings. Build with [`CardLocator::try_new`].
#[derive(Debug, Clone)]
pub struct CardLocator {
    dir: Option<PathBuf>,
    /// Path components of the pattern (only when `dir` is set).
    components: Vec<Vec<Piece>>,
    url: Option<Vec<Piece>>,
    extensions: Vec<String>,
    remove_overlay_label: bool,
    lock: bool,
}

impl CardLocator {
    /// Validates `cfg`: at least one source, templates parse with known
    /// placeholders, the pattern stays below `dir`, extensions are plain.
    pub fn try_new(cfg: &TitleCards) -> Result<CardLocator, CardConfigError> {
        if cfg.dir.is_none() && cfg.url.is_none() {
            return Err(CardConfigError::NoSource);
        }
        if let (None, Some(pattern)) = (&cfg.dir, &cfg.pattern) {
            return Err(CardConfigError::PatternWithoutDir {
                pattern: pattern.clone(),
            });
        }

        let components = match &cfg.dir {
            Some(_) => parse_pattern(cfg.pattern.as_deref().unwrap_or(DEFAULT_PATTERN))?,
            None => Vec::new(),
        };

        let url = match &cfg.url {
            Some(u) => {
                let lower = u.trim_start().to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(CardConfigError::BadUrl { url: u.clone() });
                }
                Some(parse_template("url", u.trim())?)
            }
            None => None,
        };

        if cfg.extensions.is_empty() {
            return Err(CardConfigError::NoExtensions);
        }
        let mut extensions = Vec::with_capacity(cfg.extensions.len());
        for ext in &cfg.extensions {
            let clean = ext.trim().trim_start_matches('.');
            if clean.is_empty() || !clean.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(CardConfigError::BadExtension { ext: ext.clone() });
            }
            extensions.push(clean.to_owned());
        }

        Ok(CardLocator {
            dir: cfg.dir.clone(),
            components,
            url,
            extensions,
            remove_overlay_label: cfg.remove_overlay_label,
            lock: cfg.lock,
        })
    }

    /// Whether to remove Kometa's `Overlay` label after an upload.
    pub fn remove_overlay_label(&self) -> bool {
        self.remove_overlay_label
    }

    /// Whether to lock the poster field after an upload.
    pub fn lock(&self) -> bool {
        self.lock
    }

    /// The card files that would be tried for `item`, in order (one per
    /// extension). Empty when no `dir` is configured. Touches no files.
    pub fn candidate_paths(&self, item: &CardItem) -> Result<Vec<PathBuf>, CardRenderError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let values = Values::new(item);
        let mut base = dir.clone();
        let mut stem = String::new();
        let last = self.components.len().saturating_sub(1);
        for (i, component) in self.components.iter().enumerate() {
            let name = sanitize_name(&render_pieces("pattern", component, &values, false)?);
            if name.trim().is_empty() || name == "." || name == ".." {
                return Err(CardRenderError::UnusableName { part: name });
            }
            if i == last {
                stem = name;
            } else {
                base.push(name);
            }
        }
        Ok(self
            .extensions
            .iter()
            .map(|ext| base.join(format!("{stem}.{ext}")))
            .collect())
    }

    /// The rendered URL for `item`, if a URL template is configured.
    pub fn card_url(&self, item: &CardItem) -> Result<Option<String>, CardRenderError> {
        match &self.url {
            Some(pieces) => render_pieces("url", pieces, &Values::new(item), true).map(Some),
            None => Ok(None),
        }
    }

    /// Finds the card for `item`: the first existing file among
    /// [`candidate_paths`](Self::candidate_paths), else the URL template if
    /// set, else `None` (also when a needed value is missing).
    pub fn locate(&self, item: &CardItem) -> Option<CardRef> {
        self.locate_explained(item).0
    }

    /// Like [`locate`](Self::locate), with one human-readable line per step
    /// (for a CLI tester).
    pub fn locate_explained(&self, item: &CardItem) -> (Option<CardRef>, Vec<String>) {
        let mut explain = Vec::new();
        match self.candidate_paths(item) {
            Ok(paths) => {
                for path in paths {
                    if path.is_file() {
                        explain.push(format!("found card file {}", path.display()));
                        return (Some(CardRef::File { path }), explain);
                    }
                    explain.push(format!("no file at {}", path.display()));
                }
            }
            Err(e) => explain.push(format!("card file not looked for: {e}")),
        }
        match self.card_url(item) {
            Ok(Some(url)) => {
                explain.push(format!("using card URL {url}"));
                (Some(CardRef::Url { url }), explain)
            }
            Ok(None) => {
                explain.push("no card found".to_owned());
                (None, explain)
            }
            Err(e) => {
                explain.push(format!("card URL not rendered: {e}"));
                explain.push("no card found".to_owned());
                (None, explain)
            }
        }
    }
}

/// Parses and checks a file pattern, returning its path components.
fn parse_pattern(pattern: &str) -> Result<Vec<Vec<Piece>>, CardConfigError> {
    if pattern.contains('\\') {
        return Err(CardConfigError::BackslashInPattern {
            pattern: pattern.to_owned(),
        });
    }
    let bad = |part: &str| CardConfigError::BadPatternPath {
        pattern: pattern.to_owned(),
        part: part.to_owned(),
    };
    let b = pattern.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(bad(&pattern[..2]));
    }
    let components = split_components(parse_template("pattern", pattern)?);
    for component in &components {
        if let Some(text) = literal_only(component) {
            if text.trim().is_empty() || text == "." || text == ".." {
                return Err(bad(&text));
            }
        }
    }
    Ok(components)
}

/// Content type for an image file extension (case-insensitive).
pub fn content_type_for(ext: &str) -> Option<&'static str> {
    Some(match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "heic" => "image/heic",
        "jxl" => "image/jxl",
        "tif" | "tiff" => "image/tiff",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        _ => return None,
    })
}

/// Reads a card file: its bytes, their SHA-256 (lower-case hex, to remember
/// what was uploaded) and the content type guessed from the extension.
///
/// Fails with [`io::ErrorKind::FileTooLarge`] beyond [`MAX_CARD_BYTES`],
/// [`io::ErrorKind::InvalidInput`] for something that is not a regular file
/// and [`io::ErrorKind::InvalidData`] for an empty file. Blocking.
pub fn read_card(path: &Path) -> io::Result<(Vec<u8>, String, Option<&'static str>)> {
    read_card_capped(path, MAX_CARD_BYTES)
}

fn read_card_capped(path: &Path, max: u64) -> io::Result<(Vec<u8>, String, Option<&'static str>)> {
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "title card {} is {size} bytes or more; the limit is {max} bytes",
                path.display()
            ),
        )
    };
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("title card {} is not a regular file", path.display()),
        ));
    }
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    // The file may grow between the size check and the read (TCM rewriting
    // it), so the read itself is capped too.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > max {
        return Err(too_large(read));
    }
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("title card {} is empty", path.display()),
        ));
    }
    let hash = hex::encode(Sha256::digest(&bytes));
    let content_type = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(content_type_for);
    Ok((bytes, hash, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn episode(title: &str, year: Option<i32>, season: i32, episode: i32) -> CardItem {
        CardItem {
            title: title.into(),
            year,
            season: Some(season),
            episode: Some(episode),
            tvdb: Some(12345),
            tmdb: Some(678),
            imdb: Some("tt0944947".into()),
            is_movie: false,
        }
    }

    fn cfg_dir(dir: &Path) -> TitleCards {
        TitleCards {
            dir: Some(dir.to_path_buf()),
            ..TitleCards::default()
        }
    }

    fn touch(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(path, bytes).expect("write");
    }

    #[test]
    fn default_layout_finds_tcm_card() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let card = tmp
            .path()
            .join("Show (2020)/Season 1/Show (2020) - S01E05.jpg");
        touch(&card, b"jpeg");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        assert_eq!(
            loc.locate(&episode("Show", Some(2020), 1, 5)),
            Some(CardRef::File { path: card })
        );
    }

    #[test]
    fn default_layout_specials_and_padding() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        let paths = loc
            .candidate_paths(&episode("Show", Some(2020), 0, 3))
            .expect("renders");
        assert_eq!(
            paths[0],
            tmp.path()
                .join("Show (2020)/Specials/Show (2020) - S00E03.jpg")
        );
        let paths = loc
            .candidate_paths(&episode("Show", Some(2020), 12, 105))
            .expect("renders");
        assert_eq!(
            paths[0],
            tmp.path()
                .join("Show (2020)/Season 12/Show (2020) - S12E105.jpg")
        );
    }

    #[test]
    fn extension_order_and_png_fallback() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let png = tmp
            .path()
            .join("Show (2020)/Season 1/Show (2020) - S01E02.png");
        touch(&png, b"png");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        let item = episode("Show", Some(2020), 1, 2);
        assert_eq!(loc.locate(&item), Some(CardRef::File { path: png.clone() }));
        // Once a jpg exists it wins (listed first).
        let jpg = png.with_extension("jpg");
        touch(&jpg, b"jpg");
        assert_eq!(loc.locate(&item), Some(CardRef::File { path: jpg }));
        let exts: Vec<String> = loc
            .candidate_paths(&item)
            .expect("renders")
            .iter()
            .filter_map(|p| p.extension().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(exts, ["jpg", "jpeg", "png", "webp"]);
    }

    #[test]
    fn missing_card_is_none_and_explained() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        let (found, explain) = loc.locate_explained(&episode("Show", Some(2020), 1, 1));
        assert_eq!(found, None);
        assert_eq!(explain.len(), 5, "{explain:?}");
        assert_eq!(explain.last().map(String::as_str), Some("no card found"));
    }

    #[test]
    fn a_directory_is_not_a_card() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp
            .path()
            .join("Show (2020)/Season 1/Show (2020) - S01E01.jpg");
        fs::create_dir_all(&d).expect("mkdir");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        assert_eq!(loc.locate(&episode("Show", Some(2020), 1, 1)), None);
    }

    #[test]
    fn tcm_sanitising_and_year_handling() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        // `:` → ` -`, `?` → `!`, `/` → `+`, `"` dropped; year not doubled.
        let item = episode("What If...? Star Trek: \"AC/DC\" (1999)", Some(1999), 1, 1);
        let p = loc.candidate_paths(&item).expect("renders");
        assert_eq!(
            p[0],
            tmp.path().join(
                "What If...! Star Trek - AC+DC (1999)/Season 1/What If...! Star Trek - AC+DC (1999) - S01E01.jpg"
            )
        );
        // Without a year, full_name is the bare title.
        let item = episode("Show", None, 2, 3);
        let p = loc.candidate_paths(&item).expect("renders");
        assert_eq!(p[0], tmp.path().join("Show/Season 2/Show - S02E03.jpg"));
    }

    #[test]
    fn sanitize_name_matches_tcm_map_and_length() {
        assert_eq!(sanitize_name(r#"a?b<c>d:e"f|g*h/i\j"#), "a!bcd -efg-h+i+j");
        let long = "é".repeat(300);
        assert_eq!(sanitize_name(&long).chars().count(), 254);
    }

    #[test]
    fn dot_dot_title_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = TitleCards {
            pattern: Some("{title}/{season}x{episode}".into()),
            ..cfg_dir(tmp.path())
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        let err = loc
            .candidate_paths(&episode("..", None, 1, 1))
            .expect_err("refused");
        assert_eq!(err, CardRenderError::UnusableName { part: "..".into() });
        assert_eq!(loc.locate(&episode("..", None, 1, 1)), None);
    }

    #[test]
    fn custom_pattern_with_ids_and_padding() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let card = tmp.path().join("12345/S001/E0007-tt0944947.webp");
        touch(&card, b"webp");
        let cfg = TitleCards {
            pattern: Some("{tvdb}/S{season:03}/E{episode:04}-{imdb}".into()),
            extensions: vec![".webp".into()],
            ..cfg_dir(tmp.path())
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        assert_eq!(
            loc.locate(&episode("Show", Some(2020), 1, 7)),
            Some(CardRef::File { path: card })
        );
    }

    #[test]
    fn literal_braces_in_pattern() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = TitleCards {
            pattern: Some("{{x}} {title}".into()),
            ..cfg_dir(tmp.path())
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        let p = loc
            .candidate_paths(&episode("S", None, 1, 1))
            .expect("renders");
        assert_eq!(p[0], tmp.path().join("{x} S.jpg"));
    }

    #[test]
    fn movie_with_default_pattern_has_no_card_but_custom_pattern_works() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let movie = CardItem {
            title: "Film".into(),
            year: Some(2001),
            tmdb: Some(99),
            is_movie: true,
            ..CardItem::default()
        };
        let loc = CardLocator::try_new(&cfg_dir(tmp.path())).expect("valid");
        assert_eq!(
            loc.candidate_paths(&movie).expect_err("refused"),
            CardRenderError::Missing {
                field: "pattern",
                placeholder: "season_folder"
            }
        );
        assert_eq!(loc.locate(&movie), None);

        let card = tmp.path().join("movies/Film (2001) {tmdb-99}.png");
        touch(&card, b"png");
        let cfg = TitleCards {
            pattern: Some("movies/{full_name} {{tmdb-{tmdb}}}".into()),
            ..cfg_dir(tmp.path())
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        assert_eq!(loc.locate(&movie), Some(CardRef::File { path: card }));
    }

    #[test]
    fn url_template_rendering_and_encoding() {
        let cfg = TitleCards {
            url: Some(
                "http://tcm:4242/cards/{tvdb}/{season}/{episode:02}.jpg?t={full_name}".into(),
            ),
            ..TitleCards::default()
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        let item = episode("Law & Order: SVU/ä", Some(1999), 3, 4);
        assert_eq!(
            loc.locate(&item),
            Some(CardRef::Url {
                url: "http://tcm:4242/cards/12345/3/04.jpg?t=Law%20%26%20Order%3A%20SVU%2F%C3%A4%20%281999%29"
                    .into()
            })
        );
        // Missing value → no card.
        let item = CardItem {
            tvdb: None,
            ..episode("S", None, 1, 1)
        };
        assert_eq!(loc.locate(&item), None);
    }

    #[test]
    fn file_first_then_url_fallback() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = TitleCards {
            url: Some("https://cards.example/{tvdb}/{season}/{episode}".into()),
            ..cfg_dir(tmp.path())
        };
        let loc = CardLocator::try_new(&cfg).expect("valid");
        let item = episode("Show", Some(2020), 1, 5);
        assert_eq!(
            loc.locate(&item),
            Some(CardRef::Url {
                url: "https://cards.example/12345/1/5".into()
            })
        );
        let card = tmp
            .path()
            .join("Show (2020)/Season 1/Show (2020) - S01E05.jpeg");
        touch(&card, b"x");
        assert_eq!(loc.locate(&item), Some(CardRef::File { path: card }));
    }

    #[test]
    fn bad_templates_are_rejected_with_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let with_pattern = |p: &str| {
            CardLocator::try_new(&TitleCards {
                pattern: Some(p.into()),
                ..cfg_dir(tmp.path())
            })
            .expect_err("refused")
        };
        let err = with_pattern("{full_name}/{series_name}");
        assert!(
            matches!(&err, CardConfigError::UnknownPlaceholder { field: "pattern", name, .. } if name == "series_name"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`{series_name}`"), "{err}");
        assert!(matches!(
            with_pattern("{title:>5}"),
            CardConfigError::BadFormatSpec { .. }
        ));
        assert!(matches!(
            with_pattern("{season:2}"),
            CardConfigError::BadFormatSpec { .. }
        ));
        assert!(matches!(
            with_pattern("{title:02}"),
            CardConfigError::PadOnText { .. }
        ));
        assert!(matches!(
            with_pattern("{title"),
            CardConfigError::UnclosedBrace { at: 0, .. }
        ));
        assert!(matches!(
            with_pattern("{ti{tle}"),
            CardConfigError::UnclosedBrace { at: 0, .. }
        ));
        assert!(matches!(
            with_pattern("a}b"),
            CardConfigError::StrayCloseBrace { at: 1, .. }
        ));
        assert!(matches!(
            with_pattern("{}"),
            CardConfigError::EmptyPlaceholder { .. }
        ));
        assert!(matches!(
            with_pattern("/abs/{title}"),
            CardConfigError::BadPatternPath { .. }
        ));
        assert!(matches!(
            with_pattern("../{title}"),
            CardConfigError::BadPatternPath { .. }
        ));
        assert!(matches!(
            with_pattern("a//{title}"),
            CardConfigError::BadPatternPath { .. }
        ));
        assert!(matches!(
            with_pattern("{title}/"),
            CardConfigError::BadPatternPath { .. }
        ));
        assert!(matches!(
            with_pattern("C:{title}"),
            CardConfigError::BadPatternPath { .. }
        ));
        assert!(matches!(
            with_pattern(r"{title}\x"),
            CardConfigError::BackslashInPattern { .. }
        ));

        let err = CardLocator::try_new(&TitleCards {
            url: Some("http://x/{tvdb_id}".into()),
            ..TitleCards::default()
        })
        .expect_err("refused");
        assert!(
            matches!(&err, CardConfigError::UnknownPlaceholder { field: "url", name, .. } if name == "tvdb_id")
        );
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            CardLocator::try_new(&TitleCards::default()).expect_err("refused"),
            CardConfigError::NoSource
        );
        assert!(matches!(
            CardLocator::try_new(&TitleCards {
                pattern: Some("{title}".into()),
                url: Some("http://x/{tvdb}".into()),
                ..TitleCards::default()
            })
            .expect_err("refused"),
            CardConfigError::PatternWithoutDir { .. }
        ));
        assert!(matches!(
            CardLocator::try_new(&TitleCards {
                url: Some("ftp://x/{tvdb}".into()),
                ..TitleCards::default()
            })
            .expect_err("refused"),
            CardConfigError::BadUrl { .. }
        ));
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            CardLocator::try_new(&TitleCards {
                extensions: vec![],
                ..cfg_dir(tmp.path())
            })
            .expect_err("refused"),
            CardConfigError::NoExtensions
        );
        assert_eq!(
            CardLocator::try_new(&TitleCards {
                extensions: vec!["jpg".into(), "../x".into()],
                ..cfg_dir(tmp.path())
            })
            .expect_err("refused"),
            CardConfigError::BadExtension { ext: "../x".into() }
        );
    }

    #[derive(Debug, Deserialize)]
    struct Cfg {
        title_cards: TitleCards,
    }

    #[test]
    fn toml_defaults_and_fields() {
        let cfg: Cfg = toml::from_str("[title_cards]\ndir = \"/config/cards\"\n").expect("parses");
        assert_eq!(
            cfg.title_cards.dir.as_deref(),
            Some(Path::new("/config/cards"))
        );
        assert_eq!(cfg.title_cards.extensions, ["jpg", "jpeg", "png", "webp"]);
        assert!(cfg.title_cards.lock);
        assert!(!cfg.title_cards.remove_overlay_label);
        assert_eq!(cfg.title_cards.pattern, None);
        let loc = CardLocator::try_new(&cfg.title_cards).expect("valid");
        assert!(loc.lock());
        assert!(!loc.remove_overlay_label());

        let cfg: Cfg = toml::from_str(
            r#"
            [title_cards]
            url = "http://tcm:4242/cards/{tvdb}/{season}/{episode}.jpg"
            extensions = ["png"]
            remove_overlay_label = true
            lock = false
            "#,
        )
        .expect("parses");
        let loc = CardLocator::try_new(&cfg.title_cards).expect("valid");
        assert!(loc.remove_overlay_label());
        assert!(!loc.lock());

        let err =
            toml::from_str::<Cfg>("[title_cards]\ndirectory = \"/x\"\n").expect_err("refused");
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn read_card_hash_and_type() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("c.JPG");
        fs::write(&p, b"abc").expect("write");
        let (bytes, hash, ct) = read_card(&p).expect("reads");
        assert_eq!(bytes, b"abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ct, Some("image/jpeg"));
        let p = tmp.path().join("c.webp");
        fs::write(&p, b"abc").expect("write");
        assert_eq!(read_card(&p).expect("reads").2, Some("image/webp"));
        let p = tmp.path().join("c.bin");
        fs::write(&p, b"abc").expect("write");
        assert_eq!(read_card(&p).expect("reads").2, None);
    }

    #[test]
    fn read_card_size_cap() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("big.png");
        let f = File::create(&p).expect("create");
        f.set_len(MAX_CARD_BYTES + 1).expect("sparse file");
        drop(f);
        let err = read_card(&p).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        // Exactly at the cap is fine.
        let f = File::create(&p).expect("create");
        f.set_len(MAX_CARD_BYTES).expect("sparse file");
        drop(f);
        assert_eq!(read_card(&p).expect("reads").0.len() as u64, MAX_CARD_BYTES);
        // The capped reader also stops a small limit.
        fs::write(&p, b"12345").expect("write");
        assert_eq!(
            read_card_capped(&p, 4).expect_err("refused").kind(),
            io::ErrorKind::FileTooLarge
        );
    }

    #[test]
    fn read_card_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_card(&tmp.path().join("nope.jpg"))
                .expect_err("refused")
                .kind(),
            io::ErrorKind::NotFound
        );
        let p = tmp.path().join("empty.jpg");
        fs::write(&p, b"").expect("write");
        assert_eq!(
            read_card(&p).expect_err("refused").kind(),
            io::ErrorKind::InvalidData
        );
        let err = read_card(tmp.path()).expect_err("refused");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::IsADirectory
            ),
            "{err:?}"
        );
    }
}
