//! `relayarr map-path SOURCE PATH`: the path-mapping dry run from the command line. For each
//! `[[plex]]` server it prints the path as Plex will see it, the folder that gets scanned,
//! the library section chosen, and every step that led there. It reads the sections from
//! Plex itself; when Plex cannot be reached it still shows the mapping, and says why the
//! section is unknown.

use std::collections::HashMap;
use std::fmt::Write as _;

use relayarr_actors::pathmap::PathMapper;
use relayarr_actors::plex::view::{PathExplain, PlexView};

use crate::config::Config;

/// Why the dry run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MapPathError {
    /// No source has the name given (the name, then the configured names).
    #[error("no [[source]] named `{0}`; the configured sources are: {1}")]
    UnknownSource(String, String),
    /// There is no Plex server to map paths for.
    #[error("no [[plex]] server is configured: there is nothing to map paths for")]
    NoPlex,
    /// A path rule or a Plex server's settings did not compile.
    #[error("{0}")]
    Config(String),
}

/// Runs the dry run against every configured Plex server.
pub async fn map_path(
    cfg: &Config,
    source: &str,
    path: &str,
    library: Option<&str>,
) -> Result<Vec<PathExplain>, MapPathError> {
    if !cfg.sources.iter().any(|s| s.name == source) {
        let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(MapPathError::UnknownSource(source.into(), names.join(", ")));
    }
    if cfg.plex.is_empty() {
        return Err(MapPathError::NoPlex);
    }
    let mut rules = HashMap::new();
    for s in &cfg.sources {
        let m = PathMapper::try_new(&s.path_rules)
            .map_err(|e| MapPathError::Config(format!("source `{}`: {e}", s.name)))?;
        rules.insert(s.name.clone(), m);
    }
    let mut out = Vec::new();
    for p in &cfg.plex {
        let view = PlexView::new(p, rules.clone()).map_err(|(key, problem)| {
            MapPathError::Config(format!("plex `{}`: `{key}` {problem}", p.name))
        })?;
        out.push(view.explain(source, path, library).await);
    }
    Ok(out)
}

/// The dry run as people read it.
pub fn render(explains: &[PathExplain]) -> String {
    let mut s = String::new();
    for e in explains {
        let _ = writeln!(s, "plex `{}`", e.plex);
        let _ = writeln!(s, "  input:    {}", e.input);
        let _ = writeln!(s, "  mapped:   {}", e.mapped);
        let _ = writeln!(s, "  scanned:  {}", e.scan_folder);
        let _ = writeln!(
            s,
            "  section:  {}",
            e.section
                .as_deref()
                .unwrap_or("(none: this path would not be scanned)")
        );
        let _ = writeln!(s, "  why:");
        for line in &e.explain {
            let _ = writeln!(s, "    {line}");
        }
    }
    s
}
