//! Path mapping between what a sender (Sonarr, Radarr) sees and what a target
//! (Plex) sees, plus the choice of the Plex library section for a path.
//!
//! Sonarr and Plex usually run in different containers or on different
//! machines, so the same file has several names: `/tv/Show (2020)/Season 01/x.mkv`
//! for Sonarr, `/data/tv/Show (2020)/Season 01/x.mkv` for Plex, and possibly
//! `D:\TV\Show\…` or `\\nas\media\tv\Show\…` when Sonarr runs on Windows.
//!
//! The flow is:
//! 1. [`normalise`] the incoming path (separators, UNC, trailing slash);
//! 2. [`PathMapper::map`] applies the first matching [`PathRewrite`] rule;
//! 3. [`parent_folder`] gives the folder Plex should scan (Plex wants a
//!    directory, not a file);
//! 4. [`pick_section`] picks the section whose location is the longest prefix
//!    of the mapped path.
//!
//! Everything here is pure string work: nothing touches the file system, so
//! the functions can run on any thread and are cheap to test.
//!
//! Numbering: indices stored in structs ([`Mapped::rule`], error `index`
//! fields) are 0-based positions in the rule slice; every human-readable text
//! (explain lines, error messages) counts rules from 1, the way a user counts
//! the `[[…]]` entries in the TOML file.

use regex::Regex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One path rewrite rule, as written in the TOML configuration.
///
/// Exactly one of `from` (plain prefix) or `regex` (pattern) must be set.
/// Rules are tried in the order they are listed and the **first** rule that
/// matches wins; later rules are not tried. First-match (rather than
/// longest-match) was chosen because it is predictable and lets users put a
/// specific rule (`/tv/anime`) before a general one (`/tv`), the same way
/// firewall or routing tables are read.
///
/// Prefix form:
/// ```toml
/// [[path_rewrite]]
/// from = "/tv"
/// to = "/data/tv"
/// ```
/// Regex form (captures can be used in `to` as `$name` or `${name}`):
/// ```toml
/// [[path_rewrite]]
/// regex = '^/mnt/(?P<disk>\w+)/tv/'
/// to = "/data/$disk/tv/"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRewrite {
    /// Folder prefix as the sender writes it, e.g. `"/tv"`, `'D:\TV'` or
    /// `'\\nas\media\tv'`. It is normalised like incoming paths (backslashes
    /// become `/`, trailing slash dropped) and only matches whole path
    /// components: `"/tv"` matches `/tv/Show` but not `/tvshows/Show`.
    /// Windows-looking paths (drive letter or UNC) match case-insensitively,
    /// POSIX paths case-sensitively. Do not combine with `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,

    /// Regular expression (Rust `regex` syntax) tried against the normalised
    /// path, i.e. with `/` separators. The first match is replaced by `to`.
    /// Anchor it with `^` to match at the start; add `(?i)` for
    /// case-insensitive matching. In TOML, prefer single-quoted strings so
    /// that `\w` needs no escaping. Do not combine with `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,

    /// Replacement: the folder as the target (Plex) sees it, e.g.
    /// `"/data/tv"`. For a `regex` rule it may use captures (`$1`, `$disk`,
    /// `${disk}`; write `$$` for a literal `$`). Must not be empty.
    pub to: String,
}

/// Errors found while compiling rewrite rules. `index` is the 0-based
/// position of the offending rule; the message counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathMapError {
    /// Both `from` and `regex` were given.
    #[error(
        "path rule {}: both `from` ({from:?}) and `regex` ({regex:?}) are set; \
         keep exactly one: `from` for a plain folder prefix, `regex` for a pattern",
        index + 1
    )]
    BothFromAndRegex {
        /// 0-based rule position.
        index: usize,
        /// The `from` value.
        from: String,
        /// The `regex` value.
        regex: String,
    },

    /// Neither `from` nor `regex` was given.
    #[error(
        "path rule {} (to = {to:?}): neither `from` nor `regex` is set; add \
         `from = \"/tv\"` for a folder prefix or `regex = '^/mnt/(?P<disk>\\w+)/'` for a pattern",
        index + 1
    )]
    NeitherFromNorRegex {
        /// 0-based rule position.
        index: usize,
        /// The rule's `to` value, to help find the rule.
        to: String,
    },

    /// `from` is empty (or only whitespace).
    #[error(
        "path rule {}: `from` is empty; set it to the folder prefix the sender uses, \
         e.g. `from = \"/tv\"` (use `from = \"/\"` to match every absolute path)",
        index + 1
    )]
    EmptyFrom {
        /// 0-based rule position.
        index: usize,
    },

    /// `to` is empty (or only whitespace).
    #[error(
        "path rule {} ({rule}): `to` is empty; set it to the folder the target sees, \
         e.g. `to = \"/data/tv\"`",
        index + 1
    )]
    EmptyTo {
        /// 0-based rule position.
        index: usize,
        /// The `from` or `regex` value, to help find the rule.
        rule: String,
    },

    /// The regular expression does not compile.
    #[error(
        "path rule {}: `regex` {regex:?} is not a valid regular expression: {message}; \
         fix the pattern (in TOML, single quotes avoid doubling backslashes: '^/mnt/(\\w+)/')",
        index + 1
    )]
    BadRegex {
        /// 0-based rule position.
        index: usize,
        /// The pattern as written.
        regex: String,
        /// The regex crate's explanation.
        message: String,
    },

    /// `to` refers to a capture group the regex does not define. The regex
    /// crate would silently replace it with nothing, so this is caught early.
    #[error(
        "path rule {}: `to` ({to:?}) uses capture `{name}`, but `regex` {regex:?} has no such \
         group; name a group like `(?P<{name}>...)`, fix the name, write `${{name}}` when the \
         name is followed by letters, digits or `_`, or `$$` for a literal `$`",
        index + 1
    )]
    UnknownCapture {
        /// 0-based rule position.
        index: usize,
        /// The pattern as written.
        regex: String,
        /// The replacement as written.
        to: String,
        /// The capture name or number that does not exist.
        name: String,
    },
}

/// How one compiled rule matches.
#[derive(Debug, Clone)]
enum Matcher {
    /// Normalised folder prefix.
    Prefix(String),
    /// Compiled pattern.
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct CompiledRule {
    matcher: Matcher,
    /// Normalised replacement for prefix rules, raw replacement for regex
    /// rules (normalising first could mangle `$` references).
    to: String,
    /// Human description, e.g. `prefix "/tv" → "/data/tv"`.
    describe: String,
}

/// Ordered, validated rewrite rules. Build with [`PathMapper::try_new`].
#[derive(Debug, Clone, Default)]
pub struct PathMapper {
    rules: Vec<CompiledRule>,
}

/// The result of [`PathMapper::map`], with a human-readable trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The path exactly as received.
    pub input: String,
    /// The path after [`normalise`].
    pub normalised: String,
    /// The mapped path (normalised). Equal to `normalised` when no rule matched.
    pub output: String,
    /// 0-based index of the rule that matched, if any.
    pub rule: Option<usize>,
    /// One line per step, for people (a CLI prints them). Rules are counted from 1.
    pub explain: Vec<String>,
}

/// A Plex library section as far as section choice needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionView {
    /// Section key (`/library/sections/{key}`).
    pub key: String,
    /// Section title, e.g. "TV Shows".
    pub title: String,
    /// Section type as Plex reports it: `show`, `movie`, `artist`, `photo`.
    pub kind: String,
    /// `Location/@path` values, as Plex sees them.
    pub locations: Vec<String>,
}

/// The outcome of [`pick_section`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionChoice<'a> {
    /// The chosen section, if any location matched.
    pub section: Option<&'a SectionView>,
    /// The location (as written in the section) that decided the choice.
    pub location: Option<&'a str>,
    /// Every candidate considered and why it won or lost.
    pub explain: Vec<String>,
}

impl PathMapper {
    /// Validates and compiles `rules`, keeping their order.
    ///
    /// Errors name the rule (counted from 1 in the message) and the fix.
    pub fn try_new(rules: &[PathRewrite]) -> Result<PathMapper, PathMapError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            compiled.push(compile_rule(index, rule)?);
        }
        Ok(PathMapper { rules: compiled })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (every path is used as it is).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Normalises `path` and applies the first matching rule.
    pub fn map(&self, path: &str) -> Mapped {
        let normalised = normalise(path);
        let mut explain = Vec::new();
        if normalised == path {
            explain.push(format!("path {path:?} needs no normalising"));
        } else {
            explain.push(format!("normalised {path:?} to {normalised:?}"));
        }

        let windows = is_windows_like(&normalised);
        for (index, rule) in self.rules.iter().enumerate() {
            let n = index + 1;
            let hit = match &rule.matcher {
                Matcher::Prefix(from) => match prefix_match(&normalised, from, windows) {
                    PrefixMatch::Yes(len) => {
                        let how = if windows {
                            " (case-insensitive: Windows path)"
                        } else {
                            ""
                        };
                        explain.push(format!("rule {n} ({}) matched{how}", rule.describe));
                        Some(join_prefix(&rule.to, &normalised[len..]))
                    }
                    PrefixMatch::NotAtBoundary => {
                        explain.push(format!(
                            "rule {n} ({}) did not match: the path continues the last \
                             folder name of {from:?} instead of starting a new one",
                            rule.describe
                        ));
                        None
                    }
                    PrefixMatch::No => {
                        explain.push(format!("rule {n} ({}) did not match", rule.describe));
                        None
                    }
                },
                Matcher::Regex(re) => match re.captures(&normalised) {
                    Some(caps) => {
                        let whole = caps.get(0).map_or("", |m| m.as_str());
                        let named: Vec<String> = re
                            .capture_names()
                            .flatten()
                            .filter_map(|name| {
                                caps.name(name).map(|m| format!("{name}={:?}", m.as_str()))
                            })
                            .collect();
                        let with = if named.is_empty() {
                            String::new()
                        } else {
                            format!(" with {}", named.join(", "))
                        };
                        explain.push(format!(
                            "rule {n} ({}) matched {whole:?}{with}",
                            rule.describe
                        ));
                        // `replace` only replaces the first match, which is
                        // what the documentation promises.
                        Some(normalise(&re.replace(&normalised, rule.to.as_str())))
                    }
                    None => {
                        explain.push(format!("rule {n} ({}) did not match", rule.describe));
                        None
                    }
                },
            };
            if let Some(output) = hit {
                explain.push(format!("result: {output:?}"));
                let total = self.rules.len();
                if n < total {
                    let skipped = if n + 1 == total {
                        format!("rule {total} was")
                    } else {
                        format!("rules {}–{total} were", n + 1)
                    };
                    explain.push(format!("{skipped} not tried: the first matching rule wins"));
                }
                return Mapped {
                    input: path.to_owned(),
                    normalised,
                    output,
                    rule: Some(index),
                    explain,
                };
            }
        }

        explain.push("no rule matched; the path is used as it is".to_owned());
        Mapped {
            input: path.to_owned(),
            output: normalised.clone(),
            normalised,
            rule: None,
            explain,
        }
    }
}

fn compile_rule(index: usize, rule: &PathRewrite) -> Result<CompiledRule, PathMapError> {
    match (&rule.from, &rule.regex) {
        (Some(from), Some(regex)) => Err(PathMapError::BothFromAndRegex {
            index,
            from: from.clone(),
            regex: regex.clone(),
        }),
        (None, None) => Err(PathMapError::NeitherFromNorRegex {
            index,
            to: rule.to.clone(),
        }),
        (Some(from), None) => {
            if from.trim().is_empty() {
                return Err(PathMapError::EmptyFrom { index });
            }
            if rule.to.trim().is_empty() {
                return Err(PathMapError::EmptyTo {
                    index,
                    rule: format!("from = {from:?}"),
                });
            }
            let from_n = normalise(from);
            let to_n = normalise(&rule.to);
            Ok(CompiledRule {
                describe: format!("prefix {from_n:?} → {to_n:?}"),
                matcher: Matcher::Prefix(from_n),
                to: to_n,
            })
        }
        (None, Some(pattern)) => {
            if rule.to.trim().is_empty() {
                return Err(PathMapError::EmptyTo {
                    index,
                    rule: format!("regex = {pattern:?}"),
                });
            }
            let re = Regex::new(pattern).map_err(|e| PathMapError::BadRegex {
                index,
                regex: pattern.clone(),
                message: e.to_string(),
            })?;
            for name in capture_refs(&rule.to) {
                let known = match name.parse::<usize>() {
                    Ok(i) => i < re.captures_len(),
                    Err(_) => re.capture_names().flatten().any(|n| n == name),
                };
                if !known {
                    return Err(PathMapError::UnknownCapture {
                        index,
                        regex: pattern.clone(),
                        to: rule.to.clone(),
                        name,
                    });
                }
            }
            Ok(CompiledRule {
                describe: format!("regex {pattern:?} → {:?}", rule.to),
                matcher: Matcher::Regex(re),
                to: rule.to.clone(),
            })
        }
    }
}

/// Capture references in a regex replacement string, following the regex
/// crate's rules: `$$` is a literal `$`, `${name}` is braced, and `$name`
/// takes the longest run of `[A-Za-z0-9_]`. A `$` followed by anything else
/// is literal.
fn capture_refs(to: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let bytes = to.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => match to[i + 2..].find('}') {
                Some(end) => {
                    refs.push(to[i + 2..i + 2 + end].to_owned());
                    i += 3 + end;
                }
                None => i += 1,
            },
            _ => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                if end > start {
                    refs.push(to[start..end].to_owned());
                }
                i = end.max(i + 1);
            }
        }
    }
    refs
}

/// Normalises a path for comparison and rewriting:
///
/// - backslashes become `/`;
/// - a UNC lead `\\server\share` becomes `//server/share` (the double slash is
///   kept; any path starting with two separators is treated as UNC);
/// - drive letters are kept as they are (`D:\TV` → `D:/TV`);
/// - runs of separators collapse to one (except the UNC lead);
/// - a trailing separator is dropped, except for a root (`/`, `D:/`, `//`).
///
/// Nothing else is resolved: `.` and `..` stay as they are, and no case is
/// changed. Prefix matching elsewhere only happens at component boundaries,
/// so `..` cannot make `/tv` match `/tvshows`.
pub fn normalise(path: &str) -> String {
    let replaced = path.replace('\\', "/");
    let (lead, body) = if replaced.starts_with("//") {
        ("//", replaced.trim_start_matches('/'))
    } else if replaced.starts_with('/') {
        ("/", replaced.trim_start_matches('/'))
    } else {
        ("", replaced.as_str())
    };

    let mut out = String::with_capacity(replaced.len());
    out.push_str(lead);
    let mut prev_slash = !lead.is_empty();
    for c in body.chars() {
        if c == '/' {
            if !prev_slash {
                out.push('/');
            }
            prev_slash = true;
        } else {
            out.push(c);
            prev_slash = false;
        }
    }
    if out.ends_with('/') && !is_root(&out) {
        out.pop();
    }
    out
}

/// True for `/`, `//` and a drive root such as `D:/`.
fn is_root(normalised: &str) -> bool {
    normalised == "/"
        || normalised == "//"
        || (is_drive_prefixed(normalised) && normalised.len() == 3)
}

/// `X:/…` or bare `X:`.
fn is_drive_prefixed(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b.len() == 2 || b[2] == b'/')
}

/// Drive-letter or UNC path (after normalisation). These are compared
/// case-insensitively because Windows file systems are.
fn is_windows_like(normalised: &str) -> bool {
    normalised.starts_with("//") || is_drive_prefixed(normalised)
}

#[derive(Debug, PartialEq, Eq)]
enum PrefixMatch {
    /// Matched; the value is the byte length of the matched part of the path.
    Yes(usize),
    /// The characters matched but the path continues the last component
    /// (`/tv` against `/tvshows`).
    NotAtBoundary,
    No,
}

/// Is `prefix` a prefix of `path` ending at a component boundary? Both must
/// be normalised. Case-insensitive comparison works per character so that
/// byte offsets into `path` stay correct even when case mapping changes
/// lengths.
fn prefix_match(path: &str, prefix: &str, case_insensitive: bool) -> PrefixMatch {
    let mut chars = path.char_indices();
    let mut consumed = 0;
    for pc in prefix.chars() {
        let Some((i, c)) = chars.next() else {
            return PrefixMatch::No;
        };
        let same = c == pc || (case_insensitive && c.to_lowercase().eq(pc.to_lowercase()));
        if !same {
            return PrefixMatch::No;
        }
        consumed = i + c.len_utf8();
    }
    let rest = &path[consumed..];
    // A prefix that ends in `/` is a root (`/`, `D:/`), so anything after it
    // starts a new component.
    if rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/') {
        PrefixMatch::Yes(consumed)
    } else {
        PrefixMatch::NotAtBoundary
    }
}

/// Appends the unmatched rest of a path (empty or starting at a component)
/// to a normalised replacement.
fn join_prefix(to: &str, rest: &str) -> String {
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return to.to_owned();
    }
    if to.ends_with('/') {
        format!("{to}{rest}")
    } else {
        format!("{to}/{rest}")
    }
}

/// The folder to scan for a file: the parent of the normalised `path`.
///
/// Never returns an empty string: the parent of `/x.mkv` is `/`, of
/// `D:/x.mkv` is `D:/`, a root is its own parent, a UNC share root
/// (`//server/share`) is its own parent, and a bare relative name (`x.mkv`)
/// gives `.`.
pub fn parent_folder(path: &str) -> String {
    let n = normalise(path);
    if n.is_empty() {
        return ".".to_owned();
    }
    if is_root(&n) {
        return n;
    }
    if let Some(unc) = n.strip_prefix("//") {
        // `//server` and `//server/share` are roots of a UNC tree.
        if unc.split('/').count() <= 2 {
            return n;
        }
    }
    if is_drive_prefixed(&n) && n.len() == 2 {
        return format!("{n}/");
    }
    match n.rfind('/') {
        None => ".".to_owned(),
        Some(0) => "/".to_owned(),
        // `D:/x.mkv` → `D:/`
        Some(2) if is_drive_prefixed(&n) => n[..3].to_owned(),
        Some(i) => n[..i].to_owned(),
    }
}

struct Candidate<'a> {
    section: &'a SectionView,
    location: &'a str,
    /// Length in characters of the normalised location.
    len: usize,
    normalised_location: String,
}

fn label(s: &SectionView) -> String {
    format!("{:?} (key {})", s.title, s.key)
}

/// Chooses the library section for `path` (the path as Plex sees it, i.e.
/// after [`PathMapper::map`]).
///
/// The section whose location is the longest prefix of the path, at a
/// component boundary, wins; trailing slashes on locations do not matter.
/// When two sections share the same best length, the one listed first wins.
///
/// `kind` (`Some("show")` for an episode, `Some("movie")` for a movie)
/// restricts the choice to sections of that kind when at least one of them
/// matches; otherwise any matching section is used, and the explanation says
/// so.
pub fn pick_section<'a>(
    path: &str,
    sections: &'a [SectionView],
    kind: Option<&str>,
) -> SectionChoice<'a> {
    let norm = normalise(path);
    let windows = is_windows_like(&norm);
    let mut explain = Vec::new();
    match kind {
        Some(k) => explain.push(format!(
            "choosing a section for {norm:?}, preferring kind {k:?}"
        )),
        None => explain.push(format!("choosing a section for {norm:?}")),
    }

    // Best (longest) matching location per section, in section order.
    let mut matching: Vec<Candidate<'a>> = Vec::new();
    for section in sections {
        if section.locations.is_empty() {
            explain.push(format!("{}: has no locations", label(section)));
            continue;
        }
        let mut best: Option<Candidate<'a>> = None;
        for location in &section.locations {
            let ln = normalise(location);
            if ln.is_empty() {
                explain.push(format!(
                    "{}: location {location:?} is empty; ignored",
                    label(section)
                ));
                continue;
            }
            match prefix_match(&norm, &ln, windows) {
                PrefixMatch::Yes(_) => {
                    let len = ln.chars().count();
                    explain.push(format!(
                        "{}: location {ln:?} matches ({len} chars)",
                        label(section)
                    ));
                    if best.as_ref().is_none_or(|b| len > b.len) {
                        best = Some(Candidate {
                            section,
                            location: location.as_str(),
                            len,
                            normalised_location: ln,
                        });
                    }
                }
                PrefixMatch::NotAtBoundary => explain.push(format!(
                    "{}: location {ln:?} does not match (it stops in the middle of a folder name)",
                    label(section)
                )),
                PrefixMatch::No => explain.push(format!(
                    "{}: location {ln:?} does not match",
                    label(section)
                )),
            }
        }
        if let Some(b) = best {
            matching.push(b);
        }
    }

    if matching.is_empty() {
        explain.push(format!(
            "no section has a location that contains {norm:?}; check the path mapping"
        ));
        return SectionChoice {
            section: None,
            location: None,
            explain,
        };
    }

    let pool: Vec<&Candidate<'a>> = match kind {
        Some(k) => {
            let (of_kind, other): (Vec<&Candidate<'a>>, Vec<&Candidate<'a>>) = matching
                .iter()
                .partition(|c| c.section.kind.eq_ignore_ascii_case(k));
            if of_kind.is_empty() {
                explain.push(format!(
                    "no matching section is of kind {k:?}; falling back to any matching section"
                ));
                other
            } else {
                for c in &other {
                    explain.push(format!(
                        "{} is set aside: kind {:?}, not {k:?}",
                        label(c.section),
                        c.section.kind
                    ));
                }
                of_kind
            }
        }
        None => matching.iter().collect(),
    };

    // First candidate with the greatest length; later equal ones lose.
    let mut winner = pool[0];
    for c in &pool[1..] {
        if c.len > winner.len {
            winner = *c;
        }
    }
    explain.push(format!(
        "{} wins: longest matching location {:?} ({} chars)",
        label(winner.section),
        winner.normalised_location,
        winner.len
    ));
    for c in pool {
        if std::ptr::eq(c, winner) {
            continue;
        }
        if c.len == winner.len {
            explain.push(format!(
                "{} loses the tie: its location {:?} is as long as the winner's ({} chars) \
                 and {} is listed first",
                label(c.section),
                c.normalised_location,
                c.len,
                label(winner.section)
            ));
        } else {
            explain.push(format!(
                "{} loses: location {:?} ({} chars) is shorter than {:?} ({} chars)",
                label(c.section),
                c.normalised_location,
                c.len,
                winner.normalised_location,
                winner.len
            ));
        }
    }

    SectionChoice {
        section: Some(winner.section),
        location: Some(winner.location),
        explain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(from: &str, to: &str) -> PathRewrite {
        PathRewrite {
            from: Some(from.into()),
            regex: None,
            to: to.into(),
        }
    }

    fn regex(re: &str, to: &str) -> PathRewrite {
        PathRewrite {
            from: None,
            regex: Some(re.into()),
            to: to.into(),
        }
    }

    fn mapper(rules: &[PathRewrite]) -> PathMapper {
        PathMapper::try_new(rules).expect("rules compile")
    }

    fn section(key: &str, title: &str, kind: &str, locations: &[&str]) -> SectionView {
        SectionView {
            key: key.into(),
            title: title.into(),
            kind: kind.into(),
            locations: locations.iter().map(|s| s.to_string()).collect(),
        }
    }

    // ---- normalise ---------------------------------------------------------

    #[test]
    fn normalise_posix_unchanged() {
        assert_eq!(
            normalise("/tv/Show (2020)/Season 01/x.mkv"),
            "/tv/Show (2020)/Season 01/x.mkv"
        );
    }

    #[test]
    fn normalise_backslashes_and_drive() {
        assert_eq!(
            normalise(r"D:\TV\Show\Season 01\x.mkv"),
            "D:/TV/Show/Season 01/x.mkv"
        );
        assert_eq!(normalise(r"d:\tv\"), "d:/tv");
    }

    #[test]
    fn normalise_unc_keeps_double_lead() {
        assert_eq!(
            normalise(r"\\nas\media\tv\Show\x.mkv"),
            "//nas/media/tv/Show/x.mkv"
        );
        assert_eq!(normalise(r"\\\nas\\media\\"), "//nas/media");
        assert_eq!(normalise("//nas/media/"), "//nas/media");
    }

    #[test]
    fn normalise_collapses_separators_and_trailing_slash() {
        assert_eq!(normalise("/data//tv///Show/"), "/data/tv/Show");
        assert_eq!(normalise(r"/data\/tv"), "/data/tv");
        assert_eq!(normalise("relative//dir/"), "relative/dir");
    }

    #[test]
    fn normalise_keeps_roots() {
        assert_eq!(normalise("/"), "/");
        assert_eq!(normalise("///"), "//");
        assert_eq!(normalise(r"D:\"), "D:/");
        assert_eq!(normalise("D:"), "D:");
        assert_eq!(normalise(""), "");
    }

    #[test]
    fn normalise_leaves_dots_alone() {
        assert_eq!(normalise("/tv/../tvshows/./x"), "/tv/../tvshows/./x");
    }

    // ---- prefix rules ------------------------------------------------------

    #[test]
    fn prefix_maps_at_component_boundary() {
        let m = mapper(&[prefix("/tv", "/data/tv")]);
        let r = m.map("/tv/Show (2020)/Season 01/x.mkv");
        assert_eq!(r.output, "/data/tv/Show (2020)/Season 01/x.mkv");
        assert_eq!(r.rule, Some(0));
        // The prefix itself maps too.
        assert_eq!(m.map("/tv").output, "/data/tv");
        assert_eq!(m.map("/tv/").output, "/data/tv");
    }

    #[test]
    fn prefix_does_not_match_inside_a_component() {
        let m = mapper(&[prefix("/tv", "/data/tv")]);
        let r = m.map("/tvshows/Show/x.mkv");
        assert_eq!(r.rule, None);
        assert_eq!(r.output, "/tvshows/Show/x.mkv");
        assert!(
            r.explain
                .iter()
                .any(|l| l.contains("continues the last folder name")),
            "{:?}",
            r.explain
        );
    }

    #[test]
    fn prefix_with_trailing_slashes_in_config() {
        let m = mapper(&[prefix("/tv/", "/data/tv/")]);
        assert_eq!(m.map("/tv/Show/x.mkv").output, "/data/tv/Show/x.mkv");
        assert_eq!(m.map("/tv").output, "/data/tv");
    }

    #[test]
    fn root_prefix_and_root_target() {
        let m = mapper(&[prefix("/", "/data")]);
        assert_eq!(m.map("/tv/x.mkv").output, "/data/tv/x.mkv");
        let m = mapper(&[prefix("/media", "/")]);
        assert_eq!(m.map("/media/tv/x.mkv").output, "/tv/x.mkv");
        assert_eq!(m.map("/media").output, "/");
    }

    #[test]
    fn posix_prefix_is_case_sensitive() {
        let m = mapper(&[prefix("/tv", "/data/tv")]);
        assert_eq!(m.map("/TV/Show/x.mkv").rule, None);
    }

    #[test]
    fn windows_drive_maps_to_posix_case_insensitively() {
        let m = mapper(&[prefix(r"D:\TV", "/data/tv")]);
        let r = m.map(r"d:\tv\Show\Season 01\x.mkv");
        assert_eq!(r.output, "/data/tv/Show/Season 01/x.mkv");
        assert!(r.explain[1].contains("case-insensitive"), "{:?}", r.explain);
        // The rest of the path keeps its case.
        assert_eq!(m.map(r"D:\TV\MiXeD\x.mkv").output, "/data/tv/MiXeD/x.mkv");
        // Boundary still applies.
        assert_eq!(m.map(r"D:\TVShows\x.mkv").rule, None);
    }

    #[test]
    fn unc_maps_to_posix() {
        let m = mapper(&[prefix(r"\\nas\media\tv", "/data/tv")]);
        let r = m.map(r"\\NAS\Media\tv\Show\Season 01\x.mkv");
        assert_eq!(r.output, "/data/tv/Show/Season 01/x.mkv");
        assert_eq!(r.normalised, "//NAS/Media/tv/Show/Season 01/x.mkv");
        // A UNC rule written with forward slashes is the same rule.
        let m = mapper(&[prefix("//nas/media/tv", "/data/tv")]);
        assert_eq!(
            m.map(r"\\nas\media\tv\Show\x.mkv").output,
            "/data/tv/Show/x.mkv"
        );
    }

    #[test]
    fn non_ascii_case_insensitive_prefix_keeps_offsets() {
        // 'İ' lowercases to two chars; comparison must not break byte offsets.
        let m = mapper(&[prefix(r"D:\Séries", "/data/series")]);
        assert_eq!(
            m.map(r"d:\SÉRIES\Été\x.mkv").output,
            "/data/series/Été/x.mkv"
        );
        assert_eq!(m.map(r"D:\İ\x").rule, None);
    }

    // ---- regex rules -------------------------------------------------------

    #[test]
    fn regex_with_named_capture() {
        let m = mapper(&[regex(r"^/mnt/(?P<disk>\w+)/tv/", "/data/$disk/tv/")]);
        let r = m.map("/mnt/disk3/tv/Show/x.mkv");
        assert_eq!(r.output, "/data/disk3/tv/Show/x.mkv");
        assert_eq!(r.rule, Some(0));
        assert!(
            r.explain.iter().any(|l| l.contains(r#"disk="disk3""#)),
            "{:?}",
            r.explain
        );
    }

    #[test]
    fn regex_with_numbered_and_braced_captures() {
        let m = mapper(&[regex(r"^/mnt/(\w+)/(tv|movies)", "/data/${1}_x/$2")]);
        assert_eq!(
            m.map("/mnt/d1/movies/M (2001)/m.mkv").output,
            "/data/d1_x/movies/M (2001)/m.mkv"
        );
    }

    #[test]
    fn regex_runs_on_normalised_windows_path() {
        let m = mapper(&[regex(r"(?i)^[a-z]:/TV/", "/data/tv/")]);
        assert_eq!(m.map(r"E:\tv\Show\x.mkv").output, "/data/tv/Show/x.mkv");
    }

    #[test]
    fn regex_output_is_normalised() {
        let m = mapper(&[regex(r"^/tv", "/data/tv/")]);
        // "/data/tv/" + "/Show" would give a double slash.
        assert_eq!(m.map("/tv/Show").output, "/data/tv/Show");
    }

    #[test]
    fn regex_literal_dollar() {
        let m = mapper(&[regex(r"^/tv", "/data/$$money")]);
        assert_eq!(m.map("/tv/x").output, "/data/$money/x");
    }

    // ---- ordering ----------------------------------------------------------

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            prefix("/tv/anime", "/data/anime"),
            prefix("/tv", "/data/tv"),
            prefix("/tv", "/never"),
        ];
        let m = mapper(&rules);
        let r = m.map("/tv/anime/Show/x.mkv");
        assert_eq!(r.output, "/data/anime/Show/x.mkv");
        assert_eq!(r.rule, Some(0));
        assert!(
            r.explain
                .iter()
                .any(|l| l == "rules 2–3 were not tried: the first matching rule wins"),
            "{:?}",
            r.explain
        );
        let r = m.map("/tv/Show/x.mkv");
        assert_eq!(r.output, "/data/tv/Show/x.mkv");
        assert_eq!(r.rule, Some(1));
        assert!(
            r.explain
                .iter()
                .any(|l| l == "rule 3 was not tried: the first matching rule wins"),
            "{:?}",
            r.explain
        );
    }

    #[test]
    fn general_rule_first_shadows_specific_one() {
        // Documented behaviour: order matters, not specificity.
        let m = mapper(&[
            prefix("/tv", "/data/tv"),
            prefix("/tv/anime", "/data/anime"),
        ]);
        assert_eq!(m.map("/tv/anime/x").output, "/data/tv/anime/x");
    }

    #[test]
    fn mixed_rules_in_order() {
        let m = mapper(&[
            regex(r"^/mnt/(?P<disk>disk\d)/tv", "/data/$disk/tv"),
            prefix(r"D:\TV", "/data/tv"),
        ]);
        assert_eq!(m.map(r"D:\TV\S\x.mkv").rule, Some(1));
        assert_eq!(
            m.map("/mnt/disk2/tv/S/x.mkv").output,
            "/data/disk2/tv/S/x.mkv"
        );
    }

    // ---- explain text ------------------------------------------------------

    #[test]
    fn explain_lines_for_a_match() {
        let m = mapper(&[
            prefix("/movies", "/data/movies"),
            prefix(r"D:\TV", "/data/tv"),
        ]);
        let r = m.map(r"D:\TV\Show");
        assert_eq!(
            r.explain,
            vec![
                r#"normalised "D:\\TV\\Show" to "D:/TV/Show""#.to_string(),
                r#"rule 1 (prefix "/movies" → "/data/movies") did not match"#.to_string(),
                r#"rule 2 (prefix "D:/TV" → "/data/tv") matched (case-insensitive: Windows path)"#
                    .to_string(),
                r#"result: "/data/tv/Show""#.to_string(),
            ]
        );
    }

    #[test]
    fn explain_lines_for_no_match() {
        let m = mapper(&[prefix("/tv", "/data/tv")]);
        let r = m.map("/movies/M/m.mkv");
        assert_eq!(r.output, "/movies/M/m.mkv");
        assert_eq!(
            r.explain,
            vec![
                r#"path "/movies/M/m.mkv" needs no normalising"#.to_string(),
                r#"rule 1 (prefix "/tv" → "/data/tv") did not match"#.to_string(),
                "no rule matched; the path is used as it is".to_string(),
            ]
        );
    }

    #[test]
    fn no_rules_passes_normalised_path_through() {
        let m = PathMapper::try_new(&[]).expect("empty is fine");
        assert!(m.is_empty());
        let r = m.map(r"D:\TV\x.mkv");
        assert_eq!(r.output, "D:/TV/x.mkv");
        assert_eq!(r.rule, None);
        assert_eq!(r.input, r"D:\TV\x.mkv");
    }

    // ---- errors ------------------------------------------------------------

    #[test]
    fn error_both_from_and_regex() {
        let rule = PathRewrite {
            from: Some("/tv".into()),
            regex: Some("^/tv".into()),
            to: "/data".into(),
        };
        let err = PathMapper::try_new(&[prefix("/a", "/b"), rule]).expect_err("refused");
        assert!(matches!(
            err,
            PathMapError::BothFromAndRegex { index: 1, .. }
        ));
        let msg = err.to_string();
        assert!(msg.starts_with("path rule 2:"), "{msg}");
        assert!(msg.contains("keep exactly one"), "{msg}");
    }

    #[test]
    fn error_neither_from_nor_regex() {
        let rule = PathRewrite {
            from: None,
            regex: None,
            to: "/data".into(),
        };
        let err = PathMapper::try_new(&[rule]).expect_err("refused");
        assert_eq!(
            err,
            PathMapError::NeitherFromNorRegex {
                index: 0,
                to: "/data".into()
            }
        );
        assert!(err.to_string().contains("add `from = \"/tv\"`"), "{err}");
    }

    #[test]
    fn error_empty_to_and_from() {
        let err = PathMapper::try_new(&[prefix("/tv", " ")]).expect_err("refused");
        assert!(matches!(err, PathMapError::EmptyTo { index: 0, .. }));
        assert!(err.to_string().contains("`to` is empty"), "{err}");
        let err = PathMapper::try_new(&[regex("^/tv", "")]).expect_err("refused");
        assert!(matches!(err, PathMapError::EmptyTo { index: 0, .. }));
        let err = PathMapper::try_new(&[prefix("", "/data")]).expect_err("refused");
        assert_eq!(err, PathMapError::EmptyFrom { index: 0 });
    }

    #[test]
    fn error_bad_regex() {
        let err = PathMapper::try_new(&[
            prefix("/a", "/b"),
            prefix("/c", "/d"),
            regex("^/mnt/(", "/x"),
        ])
        .expect_err("refused");
        match &err {
            PathMapError::BadRegex { index, regex, .. } => {
                assert_eq!(*index, 2);
                assert_eq!(regex, "^/mnt/(");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("path rule 3:"), "{err}");
    }

    #[test]
    fn error_unknown_capture() {
        let err = PathMapper::try_new(&[regex(r"^/mnt/(?P<disk>\w+)/", "/data/$disk_tv/")])
            .expect_err("refused");
        assert!(
            matches!(&err, PathMapError::UnknownCapture { name, .. } if name == "disk_tv"),
            "{err:?}"
        );
        assert!(err.to_string().contains("${name}"), "{err}");
        let err = PathMapper::try_new(&[regex(r"^/mnt/(\w+)/", "/data/$2/")]).expect_err("refused");
        assert!(matches!(&err, PathMapError::UnknownCapture { name, .. } if name == "2"));
        // Braced form accepted.
        assert!(
            PathMapper::try_new(&[regex(r"^/mnt/(?P<disk>\w+)/", "/data/${disk}_tv/")]).is_ok()
        );
    }

    #[test]
    fn capture_refs_parsing() {
        assert_eq!(capture_refs("/a/$x/${y}z/$$/$1$"), vec!["x", "y", "1"]);
        assert!(capture_refs("no refs").is_empty());
        assert!(capture_refs("${unclosed").is_empty());
    }

    // ---- TOML config -------------------------------------------------------

    #[derive(Debug, Deserialize)]
    struct Cfg {
        #[serde(default)]
        path_rewrite: Vec<PathRewrite>,
    }

    #[test]
    fn toml_both_rule_forms() {
        let cfg: Cfg = toml::from_str(
            r#"
            [[path_rewrite]]
            from = "/tv"
            to = "/data/tv"

            [[path_rewrite]]
            regex = '^/mnt/(?P<disk>\w+)/tv/'
            to = "/data/$disk/tv/"

            [[path_rewrite]]
            from = 'D:\TV'
            to = "/data/tv"
            "#,
        )
        .expect("parses");
        assert_eq!(cfg.path_rewrite.len(), 3);
        assert_eq!(
            cfg.path_rewrite[1].regex.as_deref(),
            Some(r"^/mnt/(?P<disk>\w+)/tv/")
        );
        let m = mapper(&cfg.path_rewrite);
        assert_eq!(m.len(), 3);
        assert_eq!(m.map("/mnt/d2/tv/S/x").output, "/data/d2/tv/S/x");
        assert_eq!(m.map(r"D:\TV\S\x").output, "/data/tv/S/x");
    }

    #[test]
    fn toml_rejects_unknown_field() {
        let err = toml::from_str::<Cfg>(
            r#"
            [[path_rewrite]]
            form = "/tv"
            to = "/data/tv"
            "#,
        )
        .expect_err("refused");
        assert!(err.to_string().contains("form"), "{err}");
    }

    #[test]
    fn toml_missing_to_is_a_parse_error() {
        let err = toml::from_str::<Cfg>("[[path_rewrite]]\nfrom = \"/tv\"\n").expect_err("refused");
        assert!(err.to_string().contains("to"), "{err}");
    }

    #[test]
    fn toml_semantic_errors_come_from_try_new() {
        let cfg: Cfg = toml::from_str(
            r#"
            [[path_rewrite]]
            from = "/tv"
            regex = "^/tv"
            to = "/data/tv"
            "#,
        )
        .expect("parses; validation is try_new's job");
        assert!(matches!(
            PathMapper::try_new(&cfg.path_rewrite),
            Err(PathMapError::BothFromAndRegex { index: 0, .. })
        ));
    }

    // ---- parent_folder -----------------------------------------------------

    #[test]
    fn parent_folder_cases() {
        assert_eq!(
            parent_folder("/data/tv/Show/Season 01/x.mkv"),
            "/data/tv/Show/Season 01"
        );
        assert_eq!(parent_folder("/x.mkv"), "/");
        assert_eq!(parent_folder("/"), "/");
        assert_eq!(parent_folder("/data/tv/Show/"), "/data/tv");
        assert_eq!(parent_folder(r"D:\TV\x.mkv"), "D:/TV");
        assert_eq!(parent_folder(r"D:\x.mkv"), "D:/");
        assert_eq!(parent_folder("D:/"), "D:/");
        assert_eq!(parent_folder("D:"), "D:/");
        assert_eq!(parent_folder(r"\\nas\media\tv\x.mkv"), "//nas/media/tv");
        assert_eq!(parent_folder(r"\\nas\media\x.mkv"), "//nas/media");
        assert_eq!(parent_folder(r"\\nas\media"), "//nas/media");
        assert_eq!(parent_folder("x.mkv"), ".");
        assert_eq!(parent_folder(""), ".");
        assert_eq!(parent_folder("a/b.mkv"), "a");
    }

    // ---- pick_section ------------------------------------------------------

    fn library() -> Vec<SectionView> {
        vec![
            section("1", "Movies", "movie", &["/data/movies"]),
            section("2", "TV Shows", "show", &["/data/tv/"]),
            section("3", "Anime", "show", &["/data/tv/anime", "/data/anime"]),
        ]
    }

    #[test]
    fn pick_longest_location() {
        let lib = library();
        let c = pick_section("/data/tv/Show/Season 01", &lib, None);
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("2"));
        assert_eq!(c.location, Some("/data/tv/"));
        assert!(
            c.explain.contains(
                &r#""TV Shows" (key 2): location "/data/tv" matches (8 chars)"#.to_string()
            ),
            "{:?}",
            c.explain
        );
        assert!(
            c.explain.contains(
                &r#""Movies" (key 1): location "/data/movies" does not match"#.to_string()
            ),
            "{:?}",
            c.explain
        );
    }

    #[test]
    fn pick_nested_location_wins() {
        let lib = library();
        let c = pick_section("/data/tv/anime/Show/Season 01", &lib, Some("show"));
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("3"));
        assert_eq!(c.location, Some("/data/tv/anime"));
        assert!(
            c.explain.contains(
                &r#""Anime" (key 3) wins: longest matching location "/data/tv/anime" (14 chars)"#
                    .to_string()
            ),
            "{:?}",
            c.explain
        );
        assert!(c.explain.contains(&r#""TV Shows" (key 2) loses: location "/data/tv" (8 chars) is shorter than "/data/tv/anime" (14 chars)"#.to_string()), "{:?}", c.explain);
    }

    #[test]
    fn pick_respects_component_boundary() {
        let lib = vec![section("2", "TV", "show", &["/data/tv"])];
        let c = pick_section("/data/tvshows/x", &lib, None);
        assert!(c.section.is_none());
        assert!(
            c.explain
                .iter()
                .any(|l| l.contains("middle of a folder name")),
            "{:?}",
            c.explain
        );
    }

    #[test]
    fn pick_no_match() {
        let lib = library();
        let c = pick_section("/srv/other/x", &lib, None);
        assert!(c.section.is_none());
        assert!(c.location.is_none());
        assert!(
            c.explain
                .last()
                .is_some_and(|l| l.starts_with("no section has a location")),
            "{:?}",
            c.explain
        );
        let c = pick_section("/x", &[], None);
        assert!(c.section.is_none());
    }

    #[test]
    fn pick_tie_goes_to_first_and_is_explained() {
        let lib = vec![
            section("5", "TV A", "show", &["/data/tv"]),
            section("6", "TV B", "show", &["/data/tv/"]),
        ];
        let c = pick_section("/data/tv/S", &lib, None);
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("5"));
        assert!(
            c.explain
                .iter()
                .any(|l| l.starts_with(r#""TV B" (key 6) loses the tie"#)),
            "{:?}",
            c.explain
        );
    }

    #[test]
    fn pick_kind_preference() {
        // A movie section at /data that would otherwise be shorter but a
        // show section matches: with kind "movie", the movie section wins.
        let lib = vec![
            section("1", "Everything", "movie", &["/data"]),
            section("2", "TV", "show", &["/data/tv"]),
        ];
        let c = pick_section("/data/tv/S/x.mkv", &lib, Some("movie"));
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("1"));
        assert!(
            c.explain
                .contains(&r#""TV" (key 2) is set aside: kind "show", not "movie""#.to_string()),
            "{:?}",
            c.explain
        );
        let c = pick_section("/data/tv/S/x.mkv", &lib, Some("show"));
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("2"));
    }

    #[test]
    fn pick_kind_fallback_is_explained() {
        let lib = vec![section("2", "TV", "show", &["/data/tv"])];
        let c = pick_section("/data/tv/M (2001)/m.mkv", &lib, Some("movie"));
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("2"));
        assert!(
            c.explain
                .iter()
                .any(|l| l.contains("falling back to any matching section")),
            "{:?}",
            c.explain
        );
    }

    #[test]
    fn pick_windows_locations() {
        let lib = vec![section("7", "TV", "show", &[r"P:\Media\TV\"])];
        let c = pick_section(r"p:\media\tv\Show\Season 1", &lib, None);
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("7"));
        assert_eq!(c.location, Some(r"P:\Media\TV\"));
    }

    #[test]
    fn pick_sections_without_locations_or_empty_ones() {
        let lib = vec![
            section("1", "Empty", "show", &[]),
            section("2", "Blank", "show", &[""]),
            section("3", "Root", "show", &["/"]),
        ];
        let c = pick_section("/x/y", &lib, None);
        assert_eq!(c.section.map(|s| s.key.as_str()), Some("3"));
        assert!(c
            .explain
            .contains(&r#""Empty" (key 1): has no locations"#.to_string()));
        assert!(c.explain.iter().any(|l| l.contains("is empty; ignored")));
    }

    #[test]
    fn map_then_pick_then_parent() {
        let m = mapper(&[prefix(r"\\nas\media\tv", "/data/tv")]);
        let mapped = m.map(r"\\nas\media\tv\Show (2020)\Season 01\x.mkv");
        let folder = parent_folder(&mapped.output);
        assert_eq!(folder, "/data/tv/Show (2020)/Season 01");
        let lib = library();
        let c = pick_section(&folder, &lib, Some("show"));
        assert_eq!(c.section.map(|s| s.title.as_str()), Some("TV Shows"));
    }
}
