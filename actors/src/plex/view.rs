//! What relayarr knows of one Plex server outside any delivery: its client, the path rules
//! that turn a sender's path into Plex's, and its library sections (read again every
//! `sections_every`). The executor and the path-mapping dry run (`relayarr map-path`, the
//! admin endpoint) share it.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::client::{PlexClient, PlexError, Section, WireFormat};
use super::config::{PlexConfig, PlexFormat};
use crate::pathmap::{parent_folder, pick_section, PathMapper, SectionView};

/// One Plex server as relayarr sees it: its client, its path rules and its cached library sections.
pub struct PlexView {
    /// The server's configured name.
    pub name: String,
    /// The HTTP client for this server.
    pub client: PlexClient,
    server_rules: PathMapper,
    /// Per-source rules, applied before the server's.
    source_rules: HashMap<String, PathMapper>,
    sections_every: std::time::Duration,
    sections: tokio::sync::Mutex<Option<(Instant, Vec<Section>)>>,
}

impl std::fmt::Debug for PlexView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlexView")
            .field("name", &self.name)
            .finish()
    }
}

/// What a mapping dry run shows.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PathExplain {
    /// The Plex server's name.
    pub plex: String,
    /// The path as the sender wrote it.
    pub input: String,
    /// The path as Plex sees it, after the source's and the server's rules.
    pub mapped: String,
    /// The folder a file at this path is scanned as.
    pub scan_folder: String,
    /// The library section picked (`title (key N)`), none when no `Location` contains the path.
    pub section: Option<String>,
    /// Each rule and section considered, in order, in words.
    pub explain: Vec<String>,
}

impl PlexView {
    /// Errors are (config key, problem).
    pub fn new(
        cfg: &PlexConfig,
        source_rules: HashMap<String, PathMapper>,
    ) -> Result<Self, (&'static str, String)> {
        let token = cfg
            .token
            .as_ref()
            .map(|t| t.expose().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or((
                "token",
                "is required; set it, or RELAYARR_PLEX__NAME__TOKEN(_FILE)".to_owned(),
            ))?;
        let format = match cfg.format {
            PlexFormat::Json => WireFormat::Json,
            PlexFormat::Xml => WireFormat::Xml,
        };
        let client = PlexClient::new(&cfg.url, token, cfg.timeout, format)
            .map_err(|e| ("url", e.to_string()))?
            .with_file_filter(cfg.file_filter);
        let server_rules =
            PathMapper::try_new(&cfg.path_rules).map_err(|e| ("path_rules", e.to_string()))?;
        Ok(PlexView {
            name: cfg.name.clone(),
            client,
            server_rules,
            source_rules,
            sections_every: cfg.sections_every,
            sections: tokio::sync::Mutex::new(None),
        })
    }

    /// A sender's path as this server sees it: the source's rules, then the server's.
    pub fn map_path(&self, source: &str, path: &str) -> (String, Vec<String>) {
        let mut explain = Vec::new();
        let mut p = path.to_owned();
        if let Some(rules) = self.source_rules.get(source).filter(|r| !r.is_empty()) {
            let m = rules.map(&p);
            explain.push(format!("source `{source}` rules:"));
            explain.extend(m.explain.iter().map(|l| format!("  {l}")));
            p = m.output;
        }
        let m = self.server_rules.map(&p);
        explain.push(format!("plex `{}` rules:", self.name));
        explain.extend(m.explain.iter().map(|l| format!("  {l}")));
        (m.output, explain)
    }

    /// The library sections, read again every `sections_every` (or when `force`).
    pub async fn sections(&self, force: bool) -> Result<Vec<Section>, PlexError> {
        let mut cached = self.sections.lock().await;
        if let Some((at, s)) = cached.as_ref() {
            if !force && at.elapsed() < self.sections_every {
                return Ok(s.clone());
            }
        }
        let fresh = self.client.sections().await?;
        tracing::info!(plex = %self.name, sections = fresh.len(), "plex library sections read");
        *cached = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// The path-mapping dry run: the mapped path, the section chosen, and why. `library`
    /// restricts the choice as Aura's `?library=` does.
    pub async fn explain(&self, source: &str, path: &str, library: Option<&str>) -> PathExplain {
        let (mapped, mut explain) = self.map_path(source, path);
        let scan_folder = parent_folder(&mapped);
        let section = match self.sections(false).await {
            Ok(sections) => {
                let views = section_views(&sections, library);
                let choice = pick_section(&mapped, &views, None);
                explain.extend(choice.explain.iter().cloned());
                choice
                    .section
                    .map(|s| format!("{} (key {})", s.title, s.key))
            }
            Err(e) => {
                explain.push(format!("cannot read Plex's library sections: {e}"));
                None
            }
        };
        PathExplain {
            plex: self.name.clone(),
            input: path.to_owned(),
            mapped,
            scan_folder,
            section,
            explain,
        }
    }
}

/// The sections as the section choice sees them; `library` (a title or a key) keeps one.
pub fn section_views(sections: &[Section], library: Option<&str>) -> Vec<SectionView> {
    sections
        .iter()
        .filter(|s| library.is_none_or(|l| s.title.eq_ignore_ascii_case(l) || s.key == l))
        .map(|s| SectionView {
            key: s.key.clone(),
            title: s.title.clone(),
            kind: s.kind.clone(),
            locations: s.locations.clone(),
        })
        .collect()
}
