//! Which events a hook receives: the `events = …` filter of a `[[hook]]` (pure).
//!
//! Criteria are ANDed across fields and ORed within a list; an empty list (or one holding
//! `"*"`) places no constraint. Compile once with [`EventFilter::compile`] (config
//! validation does, so a bad glob fails at load) and match with [`CompiledFilter::matches`].

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{EventKind, NormalizedEvent, SourceKind};

/// What is wrong with a filter. Each variant names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A path glob does not compile.
    #[error("invalid path glob {pattern:?} in events.paths: {error}")]
    Glob {
        /// The glob as written.
        pattern: String,
        /// Why globset refused it.
        error: String,
    },
    /// `sources` names no source kind we know.
    #[error(
        "unknown source kind {name:?} in events.sources: expected one of {known} \
         (to match a configured source name such as \"sonarr-4k\", use events.instances)"
    )]
    UnknownSource {
        /// The name as written.
        name: String,
        /// The source kinds there are, comma-separated.
        known: String,
    },
    /// A list holds an empty string.
    #[error("empty entry in events.{field}: remove it, or write \"*\" for any")]
    Empty {
        /// The list holding the empty entry (`kinds`, `paths`, …).
        field: &'static str,
    },
}

/// `events = "*"` or `events = { kinds = [...], sources = [...], instances = [...],
/// tags = [...], paths = [...] }`. Every list defaults to empty, meaning any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilterTable {
    kinds: Vec<String>,
    sources: Vec<String>,
    instances: Vec<String>,
    tags: Vec<String>,
    paths: Vec<String>,
}

/// Which events go to a hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventFilter {
    /// Our kind names (`upgrade`, `series_add`, …) or a sender's own event name
    /// (`Download`, `library.new`), case-insensitive. Unknown event types (`other`) pass
    /// only when listed explicitly: as `other` or by the sender's name. `"*"` or empty:
    /// every known kind.
    pub kinds: Vec<String>,
    /// Source kinds (`sonarr`, `plex`, …), case-insensitive.
    pub sources: Vec<String>,
    /// Configured source names (`sonarr-4k`), case-insensitive.
    pub instances: Vec<String>,
    /// Passes when the event carries any of these tags (case-insensitive).
    pub tags: Vec<String>,
    /// Globs over the event's file paths and media folder. `*` stays within one path
    /// component, `**` crosses them: `/tv/**`, `**/*.mkv`.
    pub paths: Vec<String>,
}

impl From<FilterTable> for EventFilter {
    fn from(t: FilterTable) -> Self {
        EventFilter {
            kinds: t.kinds,
            sources: t.sources,
            instances: t.instances,
            tags: t.tags,
            paths: t.paths,
        }
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FilterVisitor;

        impl<'de> Visitor<'de> for FilterVisitor {
            type Value = EventFilter;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"*\" or a table with kinds, sources, instances, tags, paths")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventFilter, E> {
                if v.trim() == "*" {
                    Ok(EventFilter::default())
                } else {
                    Err(E::custom(format!(
                        "invalid events filter {v:?}: write \"*\" for all events, or a table \
                         such as {{ kinds = [\"upgrade\"], sources = [\"sonarr\"] }}"
                    )))
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventFilter, A::Error> {
                FilterTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EventFilter::from)
            }
        }

        d.deserialize_any(FilterVisitor)
    }
}

impl EventFilter {
    /// Validates the filter and builds its matcher (the glob set is built here, once).
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        let kinds = Criterion::new(&self.kinds, "kinds")?;
        let sources = Criterion::new(&self.sources, "sources")?;
        if let Criterion::AnyOf(names) = &sources {
            if let Some(name) = names
                .iter()
                .find(|n| !SourceKind::ALL.iter().any(|k| k.as_str() == n.as_str()))
            {
                let known: Vec<&str> = SourceKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(FilterError::UnknownSource {
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
        let instances = Criterion::new(&self.instances, "instances")?;
        let tags = Criterion::new(&self.tags, "tags")?;
        let paths = if self.paths.is_empty() || self.paths.iter().any(|p| p.trim() == "*") {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for pattern in &self.paths {
                if pattern.trim().is_empty() {
                    return Err(FilterError::Empty { field: "paths" });
                }
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| FilterError::Glob {
                        pattern: pattern.clone(),
                        error: e.kind().to_string(),
                    })?;
                set.add(glob);
            }
            Some(set.build().map_err(|e| FilterError::Glob {
                pattern: self.paths.join(", "),
                error: e.to_string(),
            })?)
        };
        Ok(CompiledFilter {
            kinds,
            sources,
            instances,
            tags,
            paths,
        })
    }

    /// Whether `ev` passes. Compiles the filter on every call, and an invalid filter
    /// matches nothing: prefer [`EventFilter::compile`] once and [`CompiledFilter::matches`].
    pub fn matches(&self, ev: &NormalizedEvent) -> bool {
        self.compile().is_ok_and(|f| f.matches(ev))
    }
}

/// One list criterion, lower-cased: `Any` for empty or `"*"`.
#[derive(Clone, Debug)]
enum Criterion {
    Any,
    AnyOf(Vec<String>),
}

impl Criterion {
    fn new(list: &[String], field: &'static str) -> Result<Criterion, FilterError> {
        let mut out = Vec::with_capacity(list.len());
        for entry in list {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(FilterError::Empty { field });
            }
            if entry == "*" {
                return Ok(Criterion::Any);
            }
            out.push(entry.to_lowercase());
        }
        Ok(if out.is_empty() {
            Criterion::Any
        } else {
            Criterion::AnyOf(out)
        })
    }

    fn contains(&self, value: &str) -> bool {
        match self {
            Criterion::Any => true,
            Criterion::AnyOf(list) => {
                let value = value.to_lowercase();
                list.contains(&value)
            }
        }
    }
}

/// A validated [`EventFilter`], ready to match events.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    kinds: Criterion,
    sources: Criterion,
    instances: Criterion,
    tags: Criterion,
    paths: Option<GlobSet>,
}

impl CompiledFilter {
    /// Whether `ev` passes every given criterion.
    pub fn matches(&self, ev: &NormalizedEvent) -> bool {
        self.kind_matches(ev)
            && self.sources.contains(ev.source.as_str())
            && self.instances.contains(&ev.instance)
            && self.tags_match(ev)
            && self.paths_match(ev)
    }

    fn kind_matches(&self, ev: &NormalizedEvent) -> bool {
        match &self.kinds {
            // Unknown event types go only to hooks that ask for them (DESIGN).
            Criterion::Any => ev.kind != EventKind::Other,
            Criterion::AnyOf(_) => {
                self.kinds.contains(ev.kind.as_str()) || self.kinds.contains(&ev.event_type)
            }
        }
    }

    fn tags_match(&self, ev: &NormalizedEvent) -> bool {
        match &self.tags {
            Criterion::Any => true,
            Criterion::AnyOf(_) => ev.tags.iter().any(|t| self.tags.contains(t)),
        }
    }

    fn paths_match(&self, ev: &NormalizedEvent) -> bool {
        let Some(set) = &self.paths else {
            return true;
        };
        let media_path = ev.media.as_ref().and_then(|m| m.path.as_deref());
        ev.files
            .iter()
            .map(|f| f.path.as_str())
            .chain(media_path)
            .any(|p| set.is_match(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileRef, Media};

    fn filter(toml_like: serde_json::Value) -> EventFilter {
        serde_json::from_value(toml_like).expect("filter")
    }

    fn upgrade() -> NormalizedEvent {
        let mut ev = NormalizedEvent::new(
            SourceKind::Sonarr,
            "sonarr-4k",
            EventKind::Upgrade,
            "Download",
        );
        ev.tags = vec!["Anime".into(), "4k".into()];
        ev.media = Some(Media {
            media_type: "series".into(),
            path: Some("/tv/The Expanse".into()),
            ..Media::default()
        });
        ev.files = vec![FileRef {
            path: "/tv/The Expanse/Season 03/S03E05.mkv".into(),
            ..FileRef::default()
        }];
        ev
    }

    fn other() -> NormalizedEvent {
        NormalizedEvent::new(
            SourceKind::Radarr,
            "radarr",
            EventKind::Other,
            "MovieFileImported",
        )
    }

    fn compiled(f: &EventFilter) -> CompiledFilter {
        f.compile().expect("compile")
    }

    #[test]
    fn filter_star_and_empty_match_every_known_kind() {
        let star = filter(serde_json::json!("*"));
        assert_eq!(star, EventFilter::default());
        for f in [
            star,
            filter(serde_json::json!({})),
            filter(serde_json::json!({"kinds": ["*"]})),
        ] {
            assert!(compiled(&f).matches(&upgrade()));
            assert!(f.matches(&upgrade()));
        }
    }

    #[test]
    fn filter_other_kind_needs_an_explicit_ask() {
        let ev = other();
        assert!(!compiled(&EventFilter::default()).matches(&ev));
        assert!(!compiled(&filter(serde_json::json!({"kinds": ["*"]}))).matches(&ev));
        assert!(!compiled(&filter(serde_json::json!({"kinds": ["upgrade"]}))).matches(&ev));
        assert!(compiled(&filter(serde_json::json!({"kinds": ["other"]}))).matches(&ev));
        assert!(
            compiled(&filter(serde_json::json!({"kinds": ["MovieFileImported"]}))).matches(&ev)
        );
        assert!(
            compiled(&filter(serde_json::json!({"kinds": ["moviefileimported"]}))).matches(&ev)
        );
    }

    #[test]
    fn filter_kinds_match_our_names_or_the_senders_case_insensitively() {
        let ev = upgrade();
        let yes = |kinds: serde_json::Value| {
            compiled(&filter(serde_json::json!({"kinds": kinds}))).matches(&ev)
        };
        assert!(yes(serde_json::json!(["import", "Upgrade"])));
        assert!(yes(serde_json::json!(["download"])));
        assert!(!yes(serde_json::json!(["import", "grab"])));
    }

    #[test]
    fn filter_sources_instances_and_tags() {
        let ev = upgrade();
        let m = |v: serde_json::Value| compiled(&filter(v)).matches(&ev);
        assert!(m(serde_json::json!({"sources": ["radarr", "SONARR"]})));
        assert!(!m(serde_json::json!({"sources": ["radarr"]})));
        assert!(m(serde_json::json!({"instances": ["Sonarr-4K"]})));
        assert!(!m(serde_json::json!({"instances": ["sonarr"]})));
        assert!(m(serde_json::json!({"tags": ["anime", "kids"]})));
        assert!(!m(serde_json::json!({"tags": ["kids"]})));
        assert!(m(serde_json::json!({"tags": ["*"]})));
        let mut untagged = ev.clone();
        untagged.tags.clear();
        assert!(!compiled(&filter(serde_json::json!({"tags": ["anime"]}))).matches(&untagged));
    }

    #[test]
    fn filter_criteria_are_anded_across_fields() {
        let ev = upgrade();
        let m = |v: serde_json::Value| compiled(&filter(v)).matches(&ev);
        assert!(m(
            serde_json::json!({"kinds": ["upgrade"], "sources": ["sonarr"], "tags": ["4k"]})
        ));
        assert!(!m(
            serde_json::json!({"kinds": ["upgrade"], "sources": ["radarr"]})
        ));
    }

    #[test]
    fn filter_paths_glob_files_and_the_media_folder() {
        let ev = upgrade();
        let m = |paths: serde_json::Value| {
            compiled(&filter(serde_json::json!({"paths": paths}))).matches(&ev)
        };
        assert!(m(serde_json::json!(["/tv/**"])));
        assert!(m(serde_json::json!(["**/*.mkv"])));
        assert!(m(serde_json::json!(["/movies/**", "/tv/The Expanse"])));
        // `*` does not cross a `/`.
        assert!(!m(serde_json::json!(["/tv/*.mkv"])));
        assert!(!m(serde_json::json!(["/movies/**"])));
        assert!(m(serde_json::json!(["*"])));
        let bare = NormalizedEvent::new(SourceKind::Sonarr, "sonarr", EventKind::Health, "Health");
        assert!(!compiled(&filter(serde_json::json!({"paths": ["/tv/**"]}))).matches(&bare));
    }

    #[test]
    fn filter_errors_name_the_bad_entry() {
        let err = filter(serde_json::json!({"paths": ["/tv/[abc"]}))
            .compile()
            .expect_err("bad glob")
            .to_string();
        assert!(err.contains("/tv/[abc"), "{err}");
        let err = filter(serde_json::json!({"sources": ["sonarr-4k"]}))
            .compile()
            .expect_err("unknown source")
            .to_string();
        assert!(
            err.contains("sonarr-4k") && err.contains("instances"),
            "{err}"
        );
        let err = filter(serde_json::json!({"tags": [""]}))
            .compile()
            .expect_err("empty")
            .to_string();
        assert!(err.contains("events.tags"), "{err}");
        assert!(!filter(serde_json::json!({"paths": ["/tv/[abc"]})).matches(&upgrade()));
    }

    #[test]
    fn filter_serde_rejects_unknown_keys_and_other_strings() {
        let err = serde_json::from_value::<EventFilter>(serde_json::json!({"kind": ["grab"]}))
            .expect_err("unknown field")
            .to_string();
        assert!(err.contains("kind"), "{err}");
        let err = serde_json::from_value::<EventFilter>(serde_json::json!("all"))
            .expect_err("not star")
            .to_string();
        assert!(err.contains("all"), "{err}");
    }

    #[test]
    fn filter_serialises_as_a_table() {
        let f = filter(serde_json::json!({"kinds": ["grab"], "paths": ["/tv/**"]}));
        let v = serde_json::to_value(&f).expect("ser");
        assert_eq!(v["kinds"], serde_json::json!(["grab"]));
        assert_eq!(v["sources"], serde_json::json!([]));
        assert_eq!(serde_json::from_value::<EventFilter>(v).expect("de"), f);
    }
}
