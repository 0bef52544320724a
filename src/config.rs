//! Configuration: built-in defaults, then the TOML file, then `RELAYARR_*` environment
//! overrides, validated once before anything starts.
//!
//! Environment overrides address any key by its path, with `__` between levels:
//! `RELAYARR_SERVER__LISTEN=0.0.0.0:8088`, `RELAYARR_STORE__DEDUP_WINDOW=5m`. A
//! `[[source]]` is addressed by its name (upper-cased, `-` as `_`):
//! `RELAYARR_SOURCE__SONARR_4K__AUTH__BASIC__PASSWORD=…`. Appending `_FILE` reads the value
//! from a file (Docker/Kubernetes secrets): `RELAYARR_SERVER__ADMIN_TOKEN_FILE=/run/secrets/t`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relayarr_actors::debounce::DebounceConfig;
use relayarr_actors::history::HistoryConfig;
use relayarr_actors::hooks::config::{HookConfig, OutboundConfig};
use relayarr_actors::hooks::delivery::CompiledHook;
use relayarr_actors::model::SourceKind;
use relayarr_actors::pathmap::PathMapper;
use relayarr_actors::plex::cards::CardLocator;
use relayarr_actors::plex::config::PlexConfig;
use relayarr_actors::pollers::config::ArrConfig;
use relayarr_actors::sources::auth::{AuthConfig, Secret};
use relayarr_actors::sources::config::SourceConfig;
use relayarr_actors::store::StoreConfig;
use relayarr_actors::supervisor::Backoff;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The example config, also the built-in default when `relayarr run` gets no `--config`.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/relayarr.example.toml");

/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "RELAYARR_";

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server, data directory and admin access.
    #[serde(default)]
    pub server: ServerConfig,
    /// Embedded store tuning.
    #[serde(default)]
    pub store: StoreConfig,
    /// How supervisors restart failed actors.
    #[serde(default)]
    pub supervision: SupervisionConfig,
    /// Inbound sources, one per sender instance.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Outbound hooks.
    #[serde(default, rename = "hook")]
    pub hooks: Vec<HookConfig>,
    /// Where hooks may send.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Plex servers kept in sync: partial scans after imports, title cards put back.
    #[serde(default, rename = "plex")]
    pub plex: Vec<PlexConfig>,
    /// Sonarr/Radarr whose history is read to recover events whose webhooks never came.
    #[serde(default, rename = "arr")]
    pub arr: Vec<ArrConfig>,
    /// Delivery history retention.
    #[serde(default)]
    pub history: HistoryConfig,
    /// How debounced targets (the Plex sync, hooks with `debounce`) wait for a burst to end.
    #[serde(default)]
    pub debounce: DebounceConfig,
    /// Drop-in URLs of the tools relayarr replaces, mapped to a configured source name.
    /// Keys are the alias paths (see [`ALIASES`]); unmapped aliases go to the first source
    /// of the matching kind.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Use `0.0.0.0:8088` to accept senders on other hosts/containers.
    pub listen: SocketAddr,
    /// Where the embedded SQLite database (`relayarr.db`) lives.
    pub data_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413 before being read.
    pub max_body_bytes: usize,
    /// Bearer token for `/api/v1/admin/*`. Without it, the admin API answers 404.
    pub admin_token: Option<Secret>,
    /// How long a request may wait for its commit before a 503.
    #[serde(with = "humantime_serde")]
    pub ingest_timeout: Duration,
    /// How long actors get to stop gracefully on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A connection that has not sent a complete request header this long after it opened
    /// (or after its previous response) is closed: slow clients and idle keep-alive
    /// connections do not hold a connection slot for ever.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A webhook body that has not arrived in full this long after its headers gets 408,
    /// and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most client connections served at once. Further connections wait in the operating
    /// system's accept queue until one closes; they are not refused.
    pub max_connections: usize,
    /// Most bytes of webhook bodies being read or processed at once, over all connections.
    /// A request that would go past it gets 503 with `Retry-After` before its body is read.
    /// At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 1024 * 1024,
            admin_token: None,
            ingest_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_inflight_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `[supervision]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// First restart delay of a failed actor; doubles per consecutive failure (with jitter).
    #[serde(with = "humantime_serde")]
    pub restart_base: Duration,
    /// Longest restart delay.
    #[serde(with = "humantime_serde")]
    pub restart_max: Duration,
    /// More restarts than this within `restart_window` escalate to the parent supervisor.
    pub max_restarts: u32,
    /// The window in which `max_restarts` are counted.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// How often the router looks for committed events that were never routed.
    #[serde(with = "humantime_serde")]
    pub sweep_every: Duration,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        let b = Backoff::default();
        SupervisionConfig {
            restart_base: b.base,
            restart_max: b.max,
            max_restarts: b.max_restarts,
            restart_window: b.window,
            sweep_every: Duration::from_secs(30),
        }
    }
}

impl SupervisionConfig {
    /// The supervisors' restart policy these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.restart_base,
            max: self.restart_max,
            max_restarts: self.max_restarts,
            window: self.restart_window,
        }
    }
}

/// One drop-in URL of a tool relayarr replaces.
#[derive(Clone, Copy, Debug)]
pub struct Alias {
    /// The URL path the tool's users have configured in their apps.
    pub path: &'static str,
    /// Source kind it maps to when not configured in `[aliases]`.
    pub kind: SourceKind,
    /// The tool whose URL this is.
    pub tool: &'static str,
}

/// Every drop-in URL. `/triggers/{name}` (autoscan/autopulse) maps to the source of that
/// name, or else the first source of that kind.
pub const ALIASES: &[Alias] = &[
    Alias {
        path: "/api/sonarr/webhook",
        kind: SourceKind::Sonarr,
        tool: "Aura",
    },
    Alias {
        path: "/webhooks/sonarr",
        kind: SourceKind::Sonarr,
        tool: "CuePlex",
    },
    Alias {
        path: "/webhooks/radarr",
        kind: SourceKind::Radarr,
        tool: "CuePlex",
    },
    Alias {
        path: "/api/webhooks/plex",
        kind: SourceKind::Plex,
        tool: "TitleCardMaker",
    },
    Alias {
        path: "/api/webhooks/sonarr/cards",
        kind: SourceKind::Sonarr,
        tool: "TitleCardMaker",
    },
];

/// A configuration problem, naming the key and the fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file (or a `*_FILE` secret) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The TOML does not parse, or does not fit the schema (an unknown key, a wrong type).
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (the file's path).
        origin: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A `RELAYARR_*` environment variable has a value that does not fit its key.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value parses but is not allowed (alone, or with another key).
    #[error("`{key}`: {problem}. Fix: {fix}")]
    Invalid {
        /// The key, as written in the TOML (`hook[2].max_in_flight`).
        key: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl Config {
    /// Loads `path` (or the built-in example when `None`), applies environment overrides
    /// from `env`, and validates. All problems are returned, not just the first.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| {
                    vec![ConfigError::Read {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    }]
                })?,
            ),
            None => (
                "built-in example config".to_string(),
                EXAMPLE_CONFIG.to_string(),
            ),
        };
        Self::from_toml_str(&origin, &text, env)
    }

    /// Parses TOML text, applies environment overrides, and validates.
    pub fn from_toml_str(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            vec![ConfigError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            }]
        })?;
        let mut errors = Vec::new();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (var, value) in env {
            if let Err(e) = apply_env(&mut table, &var, &value) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let whole: Result<Config, toml::de::Error> = toml::Value::Table(table.clone()).try_into();
        let cfg = match whole {
            Ok(cfg) => cfg,
            Err(first) => {
                // serde stops at the first type error. Find every one: check each key (and
                // each [[array]] element) on its own, drop the bad ones, and validate what is
                // left, so one run reports every problem.
                let origin = format!("{origin} (with RELAYARR_* overrides)");
                let mut errors = type_errors(&origin, &mut table);
                if errors.is_empty() {
                    errors.push(ConfigError::Parse {
                        origin,
                        message: first.to_string(),
                    });
                    return Err(errors);
                }
                let rest: Result<Config, _> = toml::Value::Table(table).try_into();
                if let Ok(rest) = rest {
                    if let Err(more) = rest.validate() {
                        errors.extend(more);
                    }
                }
                return Err(errors);
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        if self.server.max_body_bytes == 0 {
            errs.push(ConfigError::invalid(
                "server.max_body_bytes",
                "must be greater than 0",
                "remove it to use the default of 1048576 (1 MiB)",
            ));
        }
        self.validate_server_limits(&mut errs);
        self.validate_history(&mut errs);
        if self.store.max_batch == 0 {
            errs.push(ConfigError::invalid(
                "store.max_batch",
                "must be greater than 0",
                "remove it to use the default of 512",
            ));
        }
        if self.store.pool_size == 0 {
            errs.push(ConfigError::invalid(
                "store.pool_size",
                "must be greater than 0",
                "remove it to use the default of 8 connections",
            ));
        }
        if self.store.lease < std::time::Duration::from_secs(1) {
            errs.push(ConfigError::invalid(
                "store.lease",
                "must be at least 1s (heartbeats run every third of it)",
                "remove it to use the default of 30s",
            ));
        }
        if self.supervision.max_restarts == 0 {
            errs.push(ConfigError::invalid(
                "supervision.max_restarts",
                "must be at least 1",
                "remove it to use the default of 10",
            ));
        }
        if let Some(t) = &self.server.admin_token {
            if t.expose().len() < 16 {
                errs.push(ConfigError::invalid(
                    "server.admin_token",
                    "is shorter than 16 characters",
                    "use a long random string, e.g. the output of `openssl rand -hex 32`",
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = format!("source[{i}] (name = {:?})", s.name);
            check_name(
                &mut errs,
                &mut seen,
                &key,
                &s.name,
                (
                    "source",
                    "`sonarr-4k`; it becomes the URL /api/v1/webhooks/{name}",
                ),
            );
            match &s.auth {
                None => errs.push(ConfigError::invalid(
                    format!("{key}.auth"),
                    "is missing",
                    "add e.g. auth = { basic = { username = \"sonarr\", password = \"…\" } }, \
                     or write auth = \"none\" to accept unauthenticated requests",
                )),
                Some(AuthConfig::Basic { password: p, .. })
                | Some(AuthConfig::Bearer(p))
                | Some(AuthConfig::Token(p))
                | Some(AuthConfig::Header { value: p, .. })
                | Some(AuthConfig::Hmac { secret: p, .. })
                    if p.expose().is_empty() =>
                {
                    errs.push(ConfigError::invalid(
                        format!("{key}.auth"),
                        "has an empty secret",
                        "set the secret, or use a RELAYARR_SOURCE__…_FILE variable",
                    ))
                }
                Some(AuthConfig::Header { name, .. })
                | Some(AuthConfig::Hmac { header: name, .. })
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() =>
                {
                    errs.push(ConfigError::invalid(
                        format!("{key}.auth"),
                        format!("`{name}` is not a valid header name"),
                        "use a header name such as X-Api-Key",
                    ))
                }
                Some(
                    AuthConfig::Basic { .. }
                    | AuthConfig::Header { .. }
                    | AuthConfig::Bearer(_)
                    | AuthConfig::Hmac { .. },
                ) if s.kind == SourceKind::Plex => errs.push(ConfigError::invalid(
                    format!("{key}.auth"),
                    "Plex webhooks cannot carry headers or credentials",
                    "use auth = { token = \"…\" } and add ?token=… to the webhook URL in Plex",
                )),
                _ => {}
            }
        }
        let mut hook_names = HashSet::new();
        for (i, h) in self.hooks.iter().enumerate() {
            let key = format!("hook[{i}] (name = {:?})", h.name);
            check_name(
                &mut errs,
                &mut hook_names,
                &key,
                &h.name,
                ("hook", "`discord-tv`; its actor is hook:{name}"),
            );
            if let Err(e) = CompiledHook::compile(h.clone(), &self.outbound) {
                errs.push(ConfigError::invalid(
                    key.clone(),
                    e.to_string(),
                    "see the [[hook]] section of config/relayarr.example.toml",
                ));
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if let Err(e) = PathMapper::try_new(&s.path_rules) {
                errs.push(ConfigError::invalid(
                    format!("source[{i}] (name = {:?}).path_rules", s.name),
                    e.to_string(),
                    "write each rule as { from = \"/tv\", to = \"/data/tv\" } or { regex = \"…\", to = \"…\" }",
                ));
            }
        }
        let mut plex_names = HashSet::new();
        for (i, p) in self.plex.iter().enumerate() {
            let key = format!("plex[{i}] (name = {:?})", p.name);
            check_name(
                &mut errs,
                &mut plex_names,
                &key,
                &p.name,
                ("plex server", "`home`; its actor is plex:{name}"),
            );
            if p.token.as_ref().is_none_or(|t| t.expose().is_empty()) {
                errs.push(ConfigError::invalid(
                    format!("{key}.token"),
                    "is missing",
                    format!(
                        "set token = \"…\" (Plex → Settings → your X-Plex-Token), or \
                         RELAYARR_PLEX__{}__TOKEN_FILE=/run/secrets/plex_token",
                        p.name.to_ascii_uppercase().replace('-', "_")
                    ),
                ));
            }
            match reqwest_url_check(&p.url) {
                Ok(()) => {}
                Err(problem) => errs.push(ConfigError::invalid(
                    format!("{key}.url"),
                    problem,
                    "use the server's base URL, e.g. http://plex:32400",
                )),
            }
            if let Err(e) = PathMapper::try_new(&p.path_rules) {
                errs.push(ConfigError::invalid(
                    format!("{key}.path_rules"),
                    e.to_string(),
                    "write each rule as { from = \"/tv\", to = \"/data/tv\" } or { regex = \"…\", to = \"…\" }",
                ));
            }
            if let Err(e) = p.events.compile() {
                errs.push(ConfigError::invalid(
                    format!("{key}.events"),
                    e.to_string(),
                    "see the [[hook]] events filter in config/relayarr.example.toml",
                ));
            }
            if let Some(c) = &p.cards {
                if let Err(e) = CardLocator::try_new(c) {
                    errs.push(ConfigError::invalid(
                        format!("{key}.cards"),
                        e.to_string(),
                        "see [plex.cards] in config/relayarr.example.toml",
                    ));
                }
            }
        }
        self.validate_arr(&mut errs);
        for (path, target) in &self.aliases {
            if !ALIASES.iter().any(|a| a.path == path) && !path.starts_with("/triggers/") {
                errs.push(ConfigError::invalid(
                    format!("aliases.\"{path}\""),
                    "is not a known drop-in URL",
                    format!(
                        "use one of: {}, /triggers/<name>",
                        ALIASES
                            .iter()
                            .map(|a| a.path)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !self.sources.iter().any(|s| &s.name == target) {
                errs.push(ConfigError::invalid(
                    format!("aliases.\"{path}\""),
                    format!("names source `{target}`, which is not configured"),
                    "point it at the `name` of a [[source]]",
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// `[[arr]]`: names, keys, URLs, the source each reconciles, and intervals.
    /// The limits that protect the HTTP server from slow or hostile clients.
    /// `[history]`: retention needs a timer that fires, and events must outlive the hour of
    /// history the reconciliation pollers compare against (or they would recreate them).
    fn validate_history(&self, errs: &mut Vec<ConfigError>) {
        let h = &self.history;
        if h.prune_every.is_zero() {
            errs.push(ConfigError::invalid(
                "history.prune_every",
                "must be longer than 0s",
                "remove it to use the default of 10m",
            ));
        }
        if h.events_max_age < std::time::Duration::from_secs(3600) {
            errs.push(ConfigError::invalid(
                "history.events_max_age",
                "must be at least 1h (the pollers compare against the last hour of events, and \
                 would recreate events pruned sooner)",
                "remove it to use the default of 30d",
            ));
        }
        if h.events_max_count == 0 {
            errs.push(ConfigError::invalid(
                "history.events_max_count",
                "must be at least 1",
                "remove it to use the default of 100000",
            ));
        }
    }

    fn validate_server_limits(&self, errs: &mut Vec<ConfigError>) {
        let s = &self.server;
        for (key, value, default) in [
            ("server.header_read_timeout", s.header_read_timeout, "10s"),
            ("server.body_read_timeout", s.body_read_timeout, "30s"),
        ] {
            if value.is_zero() {
                errs.push(ConfigError::invalid(
                    key,
                    "must be longer than 0s",
                    format!("remove it to use the default of {default}"),
                ));
            }
        }
        if s.max_connections == 0 || u32::try_from(s.max_connections).is_err() {
            errs.push(ConfigError::invalid(
                "server.max_connections",
                "must be from 1 to 4294967295",
                "remove it to use the default of 512",
            ));
        }
        if s.max_inflight_body_bytes < s.max_body_bytes {
            errs.push(ConfigError::invalid(
                "server.max_inflight_body_bytes",
                format!(
                    "is {}, less than server.max_body_bytes ({}), so the largest body could never be read",
                    s.max_inflight_body_bytes, s.max_body_bytes
                ),
                "make it at least max_body_bytes, or remove it to use the default of 33554432 (32 MiB)",
            ));
        }
    }

    fn validate_arr(&self, errs: &mut Vec<ConfigError>) {
        let mut names = HashSet::new();
        for (i, a) in self.arr.iter().enumerate() {
            let key = format!("arr[{i}] (name = {:?})", a.name);
            check_name(
                errs,
                &mut names,
                &key,
                &a.name,
                ("arr", "`sonarr`; its actor is poller:{name}"),
            );
            if a.api_key
                .as_ref()
                .is_none_or(|k| k.expose().trim().is_empty())
            {
                errs.push(ConfigError::invalid(
                    format!("{key}.api_key"),
                    "is missing",
                    format!(
                        "set api_key = \"…\" ({} → Settings → General → API Key), or \
                         RELAYARR_ARR__{}__API_KEY_FILE=/run/secrets/{}_api_key",
                        a.kind,
                        a.name.to_ascii_uppercase().replace('-', "_"),
                        a.kind
                    ),
                ));
            }
            if a.api_key
                .as_ref()
                .is_some_and(|k| http::HeaderValue::from_str(k.expose().trim()).is_err())
            {
                errs.push(ConfigError::invalid(
                    format!("{key}.api_key"),
                    "has characters not allowed in an HTTP header",
                    "copy the key again from Settings → General (32 hex characters)",
                ));
            }
            if let Err(problem) = relayarr_actors::pollers::client::check_url(&a.url) {
                errs.push(ConfigError::invalid(
                    format!("{key}.url"),
                    problem,
                    format!(
                        "use the app's base URL, e.g. http://{}:{}",
                        a.kind,
                        match a.kind {
                            relayarr_actors::pollers::config::ArrKind::Sonarr => 8989,
                            relayarr_actors::pollers::config::ArrKind::Radarr => 7878,
                        }
                    ),
                ));
            }
            match self.sources.iter().find(|s| s.name == a.source) {
                None => errs.push(ConfigError::invalid(
                    format!("{key}.source"),
                    format!("names source `{}`, which is not configured", a.source),
                    "point it at the `name` of the [[source]] this app sends its webhooks to",
                )),
                Some(s) if s.kind != a.kind.source_kind() => errs.push(ConfigError::invalid(
                    format!("{key}.source"),
                    format!(
                        "names source `{}` of kind {}, but this poller reads a {}",
                        a.source, s.kind, a.kind
                    ),
                    format!("point it at a [[source]] with kind = \"{}\"", a.kind),
                )),
                Some(_) => {}
            }
            for (field, value) in [("every", a.every), ("timeout", a.timeout)] {
                if value.is_zero() {
                    errs.push(ConfigError::invalid(
                        format!("{key}.{field}"),
                        "must be greater than 0",
                        format!("remove it to use the default, or write e.g. {field} = \"5m\""),
                    ));
                }
            }
        }
    }

    /// The hooks, compiled (validation already passed, so errors here are not expected).
    pub fn compiled_hooks(&self) -> Result<Vec<CompiledHook>, String> {
        self.hooks
            .iter()
            .map(|h| CompiledHook::compile(h.clone(), &self.outbound).map_err(|e| e.to_string()))
            .collect()
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.server.data_dir.join("relayarr.db")
    }

    /// The source a drop-in alias path resolves to, if any.
    pub fn resolve_alias(&self, path: &str) -> Option<&SourceConfig> {
        if let Some(name) = self.aliases.get(path) {
            return self.sources.iter().find(|s| &s.name == name);
        }
        if let Some(trigger) = path.strip_prefix("/triggers/") {
            if let Some(s) = self
                .sources
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(trigger))
            {
                return Some(s);
            }
            return SourceKind::ALL
                .iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(trigger))
                .and_then(|k| self.sources.iter().find(|s| s.kind == *k));
        }
        let alias = ALIASES.iter().find(|a| a.path == path)?;
        self.sources.iter().find(|s| s.kind == alias.kind)
    }
}

/// A Plex base URL: http(s), a host, no query (the client checks it as it is built).
fn reqwest_url_check(url: &str) -> Result<(), String> {
    relayarr_actors::plex::client::PlexClient::new(
        url,
        "check".into(),
        std::time::Duration::from_secs(1),
        relayarr_actors::plex::client::WireFormat::Json,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Names of sources and hooks: non-empty, URL- and actor-name-safe, unique (ignoring case).
/// `(table, example)`: the TOML table the name belongs to, and an example for the fix.
fn check_name(
    errs: &mut Vec<ConfigError>,
    seen: &mut HashSet<String>,
    key: &str,
    name: &str,
    (table, example): (&str, &str),
) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        errs.push(ConfigError::invalid(
            format!("{key}.name"),
            "must be non-empty and use only letters, digits, `-` and `_`",
            format!("rename it, e.g. {example}"),
        ));
    }
    if !seen.insert(name.to_ascii_lowercase()) {
        errs.push(ConfigError::invalid(
            format!("{key}.name"),
            format!("is used by another {table}"),
            format!("give every [[{table}]] a unique name"),
        ));
    }
}

/// Applies one `RELAYARR_A__B__C[_FILE]=value` override to the TOML tree.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let env_err = |reason: String| ConfigError::Env {
        var: var.to_string(),
        reason,
    };
    let rest = &var[ENV_PREFIX.len()..];
    if !rest.contains("__") {
        // RELAYARR_LOG and friends are read by the binary, not config keys.
        return Ok(());
    }
    let (rest, from_file) = match rest.strip_suffix("_FILE") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let value = if from_file {
        let text = std::fs::read_to_string(value)
            .map_err(|e| env_err(format!("cannot read secret file {value}: {e}")))?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else {
        value.to_string()
    };
    let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let mut node = table;
    let mut i = 0;
    while i + 1 < path.len() {
        let seg = path[i].clone();
        if ["source", "hook", "plex", "arr"].contains(&seg.as_str()) {
            let name = path.get(i + 1).cloned().unwrap_or_default();
            let sources = node
                .get_mut(seg.as_str())
                .and_then(|v| v.as_array_mut())
                .ok_or_else(|| env_err(format!("no [[{seg}]] is configured")))?;
            let found = sources
                .iter_mut()
                .filter_map(|v| v.as_table_mut())
                .find(|t| {
                    t.get("name")
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| n.to_ascii_lowercase().replace('-', "_") == name)
                })
                .ok_or_else(|| {
                    env_err(format!(
                        "no [[{seg}]] named `{name}` (case-insensitive, `-` written as `_`)"
                    ))
                })?;
            if seg == "hook" && path.len() == i + 3 && path[i + 2] == "secret" {
                // `RELAYARR_HOOK__<NAME>__SECRET`: the secret of the signing scheme the
                // file configures, so a deployment need not repeat the scheme.
                let scheme = signing_scheme(found).ok_or_else(|| {
                    env_err(format!(
                        "hook `{name}` has no `signing` to take the secret; configure \
                         signing = {{ hmac = {{ secret = \"…\" }} }} (or standard) in the file, \
                         or set RELAYARR_HOOK__{}__SIGNING__HMAC__SECRET",
                        name.to_ascii_uppercase()
                    ))
                })?;
                path.splice(i + 2..i + 3, ["signing".into(), scheme, "secret".into()]);
            }
            node = found;
            i += 2;
            continue;
        }
        if seg == "signing" && path.len() == i + 3 {
            // One scheme at a time: setting `signing.hmac.secret` replaces a `standard`
            // scheme from the file instead of configuring both.
            if let Some(signing) = node.get_mut("signing").and_then(|v| v.as_table_mut()) {
                let scheme = path[i + 1].clone();
                signing.retain(|k, _| *k == scheme);
            }
        }
        let entry = node
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .ok_or_else(|| env_err(format!("`{seg}` is not a table")))?;
        i += 1;
    }
    let mut leaf = path
        .get(i)
        .ok_or_else(|| env_err("names no key".into()))?
        .clone();
    let in_headers = i > 0 && path[i - 1] == "headers";
    if in_headers {
        // Header names are case-insensitive and variable names cannot hold `-`: override
        // the configured header that matches, or add one with `-` for `_`.
        leaf = node
            .keys()
            .find(|k| k.to_ascii_lowercase().replace('-', "_") == leaf)
            .cloned()
            .unwrap_or_else(|| leaf.replace('_', "-"));
    }
    // Secrets, URLs, names and header values are strings even when they look like a number
    // or a boolean (`…_SECRET=12345`); so is a scalar that replaces a string from the file.
    let parsed = parse_env_value(&value);
    let replaces_string = node.get(&leaf).is_some_and(toml::Value::is_str)
        && !matches!(parsed, toml::Value::Array(_) | toml::Value::Table(_));
    let value =
        if from_file || in_headers || STRING_KEYS.contains(&leaf.as_str()) || replaces_string {
            toml::Value::String(value)
        } else {
            parsed
        };
    node.insert(leaf, value);
    Ok(())
}

/// Keys whose environment values are always strings, never parsed as TOML scalars.
const STRING_KEYS: &[&str] = &[
    "secret",
    "password",
    "token",
    "api_key",
    "admin_token",
    "value",
    "username",
    "url",
    "name",
];

/// The signing scheme a `[[hook]]` table configures (`hmac` or `standard`), if any.
fn signing_scheme(hook: &toml::Table) -> Option<String> {
    hook.get("signing")?.as_table()?.keys().next().cloned()
}

/// Env values are TOML scalars when they parse as one (numbers, booleans, arrays), else strings.
fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Whether `table` alone (every other key at its default) deserialises.
fn parses_alone(table: toml::Table) -> Result<(), toml::de::Error> {
    toml::Value::Table(table).try_into::<Config>().map(|_| ())
}

/// The type errors of a config table, each naming its key: every top-level key is checked
/// on its own, a table key by key, an array of tables element by element. The bad keys and
/// elements are removed from `table`, so what is left can still be validated.
fn type_errors(origin: &str, table: &mut toml::Table) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |key: String, e: toml::de::Error| {
        let message = e.message().trim().to_owned();
        errors.push(ConfigError::Parse {
            origin: format!("{origin}: `{key}`"),
            message,
        });
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        let alone = |v: toml::Value| toml::Table::from_iter([(key.clone(), v)]);
        if parses_alone(alone(value.clone())).is_ok() {
            continue;
        }
        match value {
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                let mut keep = Vec::new();
                for (i, item) in std::mem::take(items).into_iter().enumerate() {
                    match parses_alone(alone(toml::Value::Array(vec![item.clone()]))) {
                        Ok(()) => keep.push(item),
                        Err(e) => {
                            let name = item.get("name").and_then(toml::Value::as_str);
                            let at = match name {
                                Some(n) => format!("{key}[{i}] (name = {n:?})"),
                                None => format!("{key}[{i}]"),
                            };
                            err(at, e);
                        }
                    }
                }
                *items = keep;
            }
            toml::Value::Table(inner) => {
                let inner_keys: Vec<String> = inner.keys().cloned().collect();
                let mut found = false;
                for k in inner_keys {
                    let Some(v) = inner.get(&k).cloned() else {
                        continue;
                    };
                    let one = toml::Table::from_iter([(k.clone(), v)]);
                    if let Err(e) = parses_alone(alone(toml::Value::Table(one))) {
                        found = true;
                        inner.remove(&k);
                        err(format!("{key}.{k}"), e);
                    }
                }
                if !found {
                    // Keys that only fail together (a required pair): report the table.
                    if let Err(e) = parses_alone(alone(value.clone())) {
                        err(key.clone(), e);
                    }
                    table.remove(&key);
                }
            }
            _ => {
                if let Err(e) = parses_alone(alone(value.clone())) {
                    err(key.clone(), e);
                }
                table.remove(&key);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use relayarr_actors::hooks::config::Signing;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:9999"
admin_token = "0123456789abcdef0123"

[[source]]
name = "sonarr-4k"
kind = "sonarr"
auth = { basic = { username = "sonarr", password = "from-file" } }

[[source]]
name = "plex"
kind = "plex"
auth = { token = "t" }
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        Config::from_toml_str(
            "test",
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The commented-out example block starting at `marker` (up to the next blank line),
    /// with one level of `# ` removed and the remaining comment lines dropped.
    fn uncommented_example_block(marker: &str) -> String {
        let start = EXAMPLE_CONFIG
            .find(marker)
            .expect("block in the example config");
        let end = EXAMPLE_CONFIG[start..]
            .find("\n\n")
            .map(|e| start + e)
            .expect("block ends with a blank line");
        EXAMPLE_CONFIG[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn messages(errs: Vec<ConfigError>) -> String {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn config_example_is_valid() {
        let cfg = load(EXAMPLE_CONFIG, &[])
            .map_err(messages)
            .expect("example config is valid");
        assert!(!cfg.sources.is_empty());
    }

    #[test]
    fn config_yield_to_ingest_defaults_to_10ms_on_sqlite_and_off_on_postgres() {
        let cfg = load(EXAMPLE_CONFIG, &[]).map_err(messages).expect("valid");
        assert_eq!(cfg.outbound.yield_to_ingest, None);
        assert_eq!(
            cfg.outbound.yield_target(cfg.store.is_postgres()),
            Duration::from_millis(10)
        );
        let pg = load(
            EXAMPLE_CONFIG,
            &[(
                "RELAYARR_STORE__URL",
                "postgres://relayarr@127.0.0.1/relayarr",
            )],
        )
        .map_err(messages)
        .expect("valid");
        assert!(pg.store.is_postgres());
        assert_eq!(pg.outbound.yield_target(true), Duration::ZERO);
        let set = load(
            EXAMPLE_CONFIG,
            &[
                (
                    "RELAYARR_STORE__URL",
                    "postgres://relayarr@127.0.0.1/relayarr",
                ),
                ("RELAYARR_OUTBOUND__YIELD_TO_INGEST", "25ms"),
            ],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(set.outbound.yield_target(true), Duration::from_millis(25));
        let off = load(
            EXAMPLE_CONFIG,
            &[("RELAYARR_OUTBOUND__YIELD_TO_INGEST", "0s")],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(off.outbound.yield_target(false), Duration::ZERO);
        let errs = load(
            EXAMPLE_CONFIG,
            &[("RELAYARR_OUTBOUND__YIELD_TO_INGEST", "soon")],
        )
        .expect_err("not a duration");
        assert!(
            messages(errs).contains("yield_to_ingest"),
            "the error names the key"
        );
    }

    #[test]
    fn config_example_documents_every_key() {
        let defaults = toml::Value::try_from(Config::default()).expect("serialise defaults");
        for section in [
            "server",
            "store",
            "supervision",
            "outbound",
            "history",
            "debounce",
        ] {
            let keys = defaults[section].as_table().expect("table").keys();
            for key in keys {
                let written = format!("\n{key} = ");
                let commented = format!("\n# {key} = ");
                assert!(
                    EXAMPLE_CONFIG.contains(&written) || EXAMPLE_CONFIG.contains(&commented),
                    "config/relayarr.example.toml does not document [{section}] {key}"
                );
            }
        }
    }

    #[test]
    fn config_example_hook_block_parses_when_uncommented() {
        let block = uncommented_example_block("# [[hook]]");
        let cfg = load(&block, &[])
            .map_err(messages)
            .expect("uncommented hook block is valid");
        assert_eq!(cfg.hooks[0].name, "discord-tv");
        assert_eq!(cfg.hooks[0].max_in_flight.get(), 2);
    }

    #[test]
    fn config_example_plex_block_parses_when_uncommented() {
        let block = uncommented_example_block("# [[plex]]");
        let cfg = load(&block, &[])
            .map_err(messages)
            .expect("uncommented plex block is valid");
        let p = &cfg.plex[0];
        assert_eq!(p.name, "home");
        assert_eq!(p.max_in_flight.get(), 2);
        assert_eq!(p.path_rules.len(), 2);
        assert!(p.cards.as_ref().is_some_and(|c| c.lock));
    }

    #[test]
    fn config_example_arr_block_parses_when_uncommented() {
        let block = uncommented_example_block("# [[arr]]");
        // The poller names a source, which the block alone does not configure.
        let text =
            format!("[[source]]\nname = \"sonarr\"\nkind = \"sonarr\"\nauth = \"none\"\n{block}");
        let cfg = load(&text, &[])
            .map_err(messages)
            .expect("uncommented arr block is valid");
        let a = &cfg.arr[0];
        assert_eq!(a.name, "sonarr");
        assert_eq!(a.source, "sonarr");
        assert_eq!(a.every, Duration::from_secs(300));
        assert_eq!(a.overlap, Duration::from_secs(3600));
        for key in [
            "name", "kind", "url", "api_key", "source", "every", "overlap", "settle", "timeout",
        ] {
            assert!(
                block.contains(&format!("\n{key} = ")) || block.starts_with(&format!("{key} = ")),
                "the [[arr]] example does not document {key}"
            );
        }
    }

    #[test]
    fn config_arr_key_from_env_file_and_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("sonarr_key");
        std::fs::write(&f, "key-from-a-file\n").expect("write");
        let text = format!("{BASE}\n[[arr]]\nname = \"sonarr-4k\"\nkind = \"sonarr\"\nurl = \"http://sonarr:8989\"\nsource = \"sonarr-4k\"\n");
        let cfg = load(
            &text,
            &[(
                "RELAYARR_ARR__SONARR_4K__API_KEY_FILE",
                f.to_str().expect("utf8"),
            )],
        )
        .map_err(messages)
        .expect("key from the file");
        let key = cfg.arr[0].api_key.as_ref().expect("api key");
        assert_eq!(key.expose(), "key-from-a-file");
        let bad = format!("{BASE}\n[[arr]]\nname = \"a b\"\nkind = \"radarr\"\nurl = \"http://radarr:7878/?apikey=x\"\nsource = \"sonarr-4k\"\nevery = \"0s\"\n[[arr]]\nname = \"c\"\nkind = \"sonarr\"\nurl = \"http://s\"\napi_key = \"k\\u0007ey\"\nsource = \"nope\"\n");
        let msg = messages(load(&bad, &[]).expect_err("invalid arr"));
        for needle in [
            "arr[0]",
            ".name",
            ".api_key",
            "RELAYARR_ARR__A B__API_KEY_FILE",
            ".url",
            "put the key in api_key",
            "of kind sonarr, but this poller reads a radarr",
            ".every",
            "arr[1]",
            "`nope`, which is not configured",
            "characters not allowed in an HTTP header",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn config_example_windows_source_block_parses_when_uncommented() {
        let block = uncommented_example_block("# [[source]]\n# name = \"sonarr-windows\"");
        let cfg = load(&block, &[])
            .map_err(messages)
            .expect("uncommented source block is valid");
        assert_eq!(cfg.sources[0].path_rules.len(), 2);
    }

    #[test]
    fn config_plex_token_from_env_file_and_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("plex_token");
        std::fs::write(&f, "plex-token-from-a-file\n").expect("write");
        let text = "[[plex]]\nname = \"home-1\"\nurl = \"http://plex:32400\"\n";
        let cfg = load(
            text,
            &[(
                "RELAYARR_PLEX__HOME_1__TOKEN_FILE",
                f.to_str().expect("utf8"),
            )],
        )
        .map_err(messages)
        .expect("token from the file");
        let token = cfg.plex[0].token.as_ref().expect("token");
        assert_eq!(token.expose(), "plex-token-from-a-file");
        let bad =
            "[[plex]]\nname = \"a b\"\nurl = \"ftp://x?y=1\"\npath_rules = [{ to = \"/x\" }]\n";
        let msg = messages(load(bad, &[]).expect_err("invalid plex"));
        for needle in ["plex[0]", ".name", ".token", ".url", ".path_rules"] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn config_rejects_bad_hooks_naming_the_key() {
        let text = r#"
[[hook]]
name = "a"
url = "ftp://x"
[[hook]]
name = "b"
url = "http://127.0.0.1/"
format = "template"
[[hook]]
name = "c"
url = "http://169.254.169.254/latest/meta-data"
[[hook]]
name = "d"
url = "http://example.com/"
events = { paths = ["/tv/[unclosed"] }
"#;
        let msg = messages(load(text, &[]).expect_err("invalid hooks"));
        for needle in [
            "hook[0]", "hook[1]", "template", "hook[2]", "169.254", "hook[3]", "events",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn config_example_tautulli_block_parses_when_uncommented() {
        let block = uncommented_example_block("# [[source]]\n# name = \"tautulli\"");
        let cfg = load(&block, &[])
            .map_err(messages)
            .expect("uncommented tautulli block is valid");
        assert_eq!(cfg.sources[0].tautulli, Default::default());
    }

    #[test]
    fn config_example_jellyfin_and_custom_blocks_parse_when_uncommented() {
        for marker in ["# name = \"jellyfin\"", "# name = \"script\""] {
            let block = uncommented_example_block(&format!("# [[source]]\n{marker}"));
            let cfg = load(&block, &[])
                .map_err(messages)
                .unwrap_or_else(|e| panic!("uncommented {marker} block is invalid: {e}"));
            let src = &cfg.sources[0];
            assert_eq!(src.jellyfin, Default::default(), "{marker}");
            assert_eq!(src.custom, Default::default(), "{marker}");
            // Every mapping field of this kind is written out in the example.
            let mapping = match src.kind {
                SourceKind::Jellyfin => serde_json::to_value(&src.jellyfin),
                _ => serde_json::to_value(&src.custom),
            };
            let mapping = mapping.expect("serialise mapping");
            for key in mapping.as_object().expect("table").keys() {
                assert!(
                    block.contains(&format!("\n{key} = ")),
                    "the example's {marker} block does not document `{key}`"
                );
            }
        }
    }

    #[test]
    fn config_env_overrides_keys_and_sources() {
        let cfg = load(
            BASE,
            &[
                ("RELAYARR_SERVER__LISTEN", "0.0.0.0:1234"),
                ("RELAYARR_STORE__MAX_BATCH", "64"),
                (
                    "RELAYARR_SOURCE__SONARR_4K__AUTH__BASIC__PASSWORD",
                    "overridden",
                ),
                ("RELAYARR_LOG", "debug"),
            ],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(cfg.server.listen.port(), 1234);
        assert_eq!(cfg.store.max_batch, 64);
        match &cfg.sources[0].auth {
            Some(AuthConfig::Basic { password, .. }) => assert_eq!(password.expose(), "overridden"),
            other => panic!("unexpected auth {other:?}"),
        }
    }

    const HOOKS: &str = r#"
[[hook]]
name = "my-cms"
url = "https://cms.example/hook"
headers = { "X-Api-Key" = "from-the-file" }
signing = { standard = { secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" } }

[[hook]]
name = "discord"
url = "https://discord.com/api/webhooks/1/a"
"#;

    #[test]
    fn config_env_overrides_every_hook_key_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("cms_secret");
        std::fs::write(&f, "hmac-secret-from-a-file\n").expect("write");
        let cfg = load(
            HOOKS,
            &[
                ("RELAYARR_HOOK__MY_CMS__URL", "https://cms.example/other"),
                ("RELAYARR_HOOK__MY_CMS__ENABLED", "false"),
                ("RELAYARR_HOOK__MY_CMS__MAX_IN_FLIGHT", "8"),
                ("RELAYARR_HOOK__MY_CMS__RATE", "10/s"),
                ("RELAYARR_HOOK__MY_CMS__HEADERS__X_API_KEY", "12345"),
                ("RELAYARR_HOOK__MY_CMS__HEADERS__X_TENANT", "true"),
                (
                    "RELAYARR_HOOK__MY_CMS__SIGNING__HMAC__SECRET_FILE",
                    f.to_str().expect("utf8"),
                ),
                // A secret that looks like a number stays a string.
                ("RELAYARR_HOOK__DISCORD__SIGNING__HMAC__SECRET", "12345"),
            ],
        )
        .map_err(messages)
        .expect("valid");
        let cms = &cfg.hooks[0];
        assert_eq!(cms.url, "https://cms.example/other");
        assert!(!cms.enabled);
        assert_eq!(cms.max_in_flight.get(), 8);
        assert_eq!(
            cms.rate.map(|r| (r.count.get(), r.per)),
            Some((10, Duration::from_secs(1)))
        );
        // The configured header is overridden (not a second `x_api_key` added).
        assert_eq!(cms.headers.len(), 2, "{:?}", cms.headers.keys());
        assert_eq!(cms.headers["X-Api-Key"], "12345");
        assert_eq!(cms.headers["x-tenant"], "true");
        // Setting the hmac secret replaces the file's standard scheme.
        match &cms.signing {
            Some(Signing::Hmac { secret }) => {
                assert_eq!(secret.expose(), "hmac-secret-from-a-file")
            }
            other => panic!("unexpected signing {other:?}"),
        }
        match &cfg.hooks[1].signing {
            Some(Signing::Hmac { secret }) => assert_eq!(secret.expose(), "12345"),
            other => panic!("unexpected signing {other:?}"),
        }
    }

    #[test]
    fn config_env_hook_secret_shorthand_uses_the_configured_scheme() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("secret");
        std::fs::write(&f, "whsec_c2VjcmV0LWZyb20tZmlsZQ==\n").expect("write");
        let cfg = load(
            HOOKS,
            &[(
                "RELAYARR_HOOK__MY_CMS__SECRET_FILE",
                f.to_str().expect("utf8"),
            )],
        )
        .map_err(messages)
        .expect("valid");
        match &cfg.hooks[0].signing {
            Some(Signing::Standard { secret }) => {
                assert_eq!(secret.expose(), "whsec_c2VjcmV0LWZyb20tZmlsZQ==")
            }
            other => panic!("unexpected signing {other:?}"),
        }
        // A hook without signing cannot take a bare secret: the error says what to set.
        let msg = messages(
            load(HOOKS, &[("RELAYARR_HOOK__DISCORD__SECRET", "x")]).expect_err("no scheme"),
        );
        assert!(msg.contains("RELAYARR_HOOK__DISCORD__SECRET"), "{msg}");
        assert!(
            msg.contains("RELAYARR_HOOK__DISCORD__SIGNING__HMAC__SECRET"),
            "{msg}"
        );
    }

    #[test]
    fn config_env_unknown_hook_or_plex_is_an_error_naming_the_variable() {
        let msg = messages(
            load(HOOKS, &[("RELAYARR_HOOK__NOPE__URL", "http://x")]).expect_err("unknown hook"),
        );
        assert!(
            msg.contains("environment variable RELAYARR_HOOK__NOPE__URL"),
            "{msg}"
        );
        assert!(msg.contains("no [[hook]] named `nope`"), "{msg}");
        let msg =
            messages(load(BASE, &[("RELAYARR_PLEX__HOME__TOKEN", "t")]).expect_err("no plex"));
        assert!(msg.contains("RELAYARR_PLEX__HOME__TOKEN"), "{msg}");
    }

    #[test]
    fn config_env_overrides_plex_url_and_numeric_token() {
        let text = "[[plex]]\nname = \"home\"\nurl = \"http://plex:32400\"\ntoken = \"t\"\n";
        let cfg = load(
            text,
            &[
                ("RELAYARR_PLEX__HOME__URL", "http://10.0.0.5:32400"),
                ("RELAYARR_PLEX__HOME__TOKEN", "1234567890"),
            ],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(cfg.plex[0].url, "http://10.0.0.5:32400");
        assert_eq!(
            cfg.plex[0].token.as_ref().map(Secret::expose),
            Some("1234567890")
        );
    }

    #[test]
    fn config_env_file_suffix_reads_secret_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("token");
        std::fs::write(&f, "a-very-long-admin-token-from-file\n").expect("write");
        let cfg = load(
            BASE,
            &[(
                "RELAYARR_SERVER__ADMIN_TOKEN_FILE",
                f.to_str().expect("utf8"),
            )],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(
            cfg.server.admin_token.as_ref().map(Secret::expose),
            Some("a-very-long-admin-token-from-file")
        );
    }

    #[test]
    fn config_rejects_unknown_keys_naming_them() {
        let errs = load(&format!("{BASE}\n[store]\nmax_bach = 3\n"), &[]).expect_err("unknown key");
        let msg = messages(errs);
        assert!(msg.contains("max_bach"), "{msg}");
        let errs = load(BASE, &[("RELAYARR_SERVER__LISTNE", "x")]).expect_err("unknown env key");
        assert!(messages(errs).contains("listne"));
    }

    #[test]
    fn config_rejects_an_empty_pool_and_a_tiny_lease() {
        let errs = load(
            &format!("{BASE}\n[store]\npool_size = 0\nlease = \"200ms\"\n"),
            &[],
        )
        .expect_err("invalid store settings");
        let msg = messages(errs);
        assert!(msg.contains("store.pool_size"), "{msg}");
        assert!(msg.contains("store.lease"), "{msg}");
    }

    #[test]
    fn config_source_without_auth_is_an_error_with_a_fix() {
        let errs =
            load("[[source]]\nname = \"sonarr\"\nkind = \"sonarr\"\n", &[]).expect_err("no auth");
        let msg = messages(errs);
        assert!(
            msg.contains("source[0]") && msg.contains("auth") && msg.contains("auth = \"none\""),
            "{msg}"
        );
        load(
            "[[source]]\nname = \"s\"\nkind = \"sonarr\"\nauth = \"none\"\n",
            &[],
        )
        .map_err(messages)
        .expect("explicit none is fine");
    }

    #[test]
    fn config_collects_every_problem() {
        let text = r#"
[server]
admin_token = "short"
[[source]]
name = "bad name"
kind = "plex"
auth = { basic = { password = "x" } }
[[source]]
name = "dup"
kind = "custom"
auth = "none"
[[source]]
name = "dup"
kind = "custom"
auth = "none"
[aliases]
"/nope" = "missing"
"#;
        let msg = messages(load(text, &[]).expect_err("invalid"));
        for needle in [
            "admin_token",
            "bad name",
            "Plex webhooks cannot",
            "unique name",
            "/nope",
            "`missing`",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }

    #[test]
    fn config_history_retention_is_validated_naming_the_key() {
        let text =
            "[history]\nevents_max_age = \"10m\"\nevents_max_count = 0\nprune_every = \"0s\"\n";
        let msg = messages(load(text, &[]).expect_err("invalid"));
        for needle in [
            "history.events_max_age",
            "at least 1h",
            "history.events_max_count",
            "history.prune_every",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        // Environment overrides reach the new keys like any other.
        let cfg = load(
            "",
            &[
                ("RELAYARR_HISTORY__EVENTS_MAX_AGE", "2d"),
                ("RELAYARR_HISTORY__EVENTS_MAX_COUNT", "500"),
            ],
        )
        .map_err(messages)
        .expect("valid");
        assert_eq!(
            cfg.history.events_max_age,
            std::time::Duration::from_secs(2 * 86_400)
        );
        assert_eq!(cfg.history.events_max_count, 500);
    }

    #[test]
    fn config_server_limits_are_validated_naming_the_key() {
        let text = r#"
[server]
header_read_timeout = "0s"
body_read_timeout = "0s"
max_connections = 0
max_body_bytes = 2048
max_inflight_body_bytes = 1024
"#;
        let msg = messages(load(text, &[]).expect_err("invalid"));
        for needle in [
            "server.header_read_timeout",
            "server.body_read_timeout",
            "server.max_connections",
            "server.max_inflight_body_bytes",
            "less than server.max_body_bytes",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
        let ok = load(
            "[server]\nmax_connections = 4\nmax_inflight_body_bytes = 1048576\nbody_read_timeout = \"2s\"",
            &[],
        )
        .expect("valid");
        assert_eq!(ok.server.max_connections, 4);
        assert_eq!(ok.server.body_read_timeout, Duration::from_secs(2));
    }

    #[test]
    fn config_aliases_resolve_by_config_then_kind() {
        let mut cfg = load(BASE, &[]).map_err(messages).expect("valid");
        assert_eq!(
            cfg.resolve_alias("/api/sonarr/webhook")
                .map(|s| s.name.as_str()),
            Some("sonarr-4k")
        );
        assert_eq!(
            cfg.resolve_alias("/api/webhooks/plex")
                .map(|s| s.name.as_str()),
            Some("plex")
        );
        assert_eq!(
            cfg.resolve_alias("/triggers/sonarr")
                .map(|s| s.name.as_str()),
            Some("sonarr-4k")
        );
        assert_eq!(
            cfg.resolve_alias("/triggers/plex").map(|s| s.name.as_str()),
            Some("plex")
        );
        assert!(cfg.resolve_alias("/webhooks/radarr").is_none());
        cfg.aliases.insert("/webhooks/radarr".into(), "plex".into());
        assert_eq!(
            cfg.resolve_alias("/webhooks/radarr")
                .map(|s| s.name.as_str()),
            Some("plex")
        );
    }

    #[test]
    fn config_reports_every_type_error_and_validation_problem_in_one_run() {
        let text = r#"
[server]
listen = "not an address"
admin_token = "short"
[[source]]
name = "sonarr"
kind = "sonar"
auth = "none"
[[source]]
name = "radarr"
kind = "radarr"
auth = "none"
[[hook]]
name = "discord"
url = "https://example.com/hook"
rate = "fast"
"#;
        let errs = load(text, &[]).expect_err("invalid");
        let n = errs.len();
        let msg = messages(errs);
        assert_eq!(n, 4, "{msg}");
        for needle in [
            "`server.listen`",
            "`source[0] (name = \"sonarr\")`",
            "sonar",
            "`hook[0] (name = \"discord\")`",
            "fast",
            "admin_token",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }
}
