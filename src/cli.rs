//! The operator CLI: `relayarr events`, `explain`, `replay`, `tree` and `hooks`. Every
//! command talks to a running instance through the admin API (it never opens the store),
//! so it shows what the service sees and changes go through the owning actors. Rendering is
//! pure (`render_*`), so the tests can check the text without a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the running instance is.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The instance's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8088", global = true)]
    pub url: String,
    /// The admin token (`server.admin_token`).
    #[arg(
        long,
        env = "RELAYARR_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

/// The admin subcommands of the `relayarr` binary.
#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// List recent events, newest first, with their delivery states per target.
    Events {
        /// Only events of this source (its configured name).
        #[arg(long)]
        source: Option<String>,
        /// Only events of this kind (import, grab, upgrade, test, …).
        #[arg(long)]
        kind: Option<String>,
        /// Only events since this time: RFC 3339, or a duration ago such as 2h.
        #[arg(long)]
        since: Option<String>,
        /// Only events with a delivery in this state: pending, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        /// How many events (1–500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Where the instance is.
        #[command(flatten)]
        conn: Conn,
    },
    /// Explain one event: what it was, where it went, and every attempt.
    Explain {
        /// The event's id (as the 202 answer and `relayarr events` give it).
        event_id: String,
        /// Where the instance is.
        #[command(flatten)]
        conn: Conn,
    },
    /// Replay one event at every target that had it, or a target's deliveries since a time.
    Replay {
        /// The event to replay.
        #[arg(required_unless_present = "target", conflicts_with_all = ["target", "since"])]
        event_id: Option<String>,
        /// The target (hook or `plex:NAME`) whose deliveries to replay; needs --since.
        #[arg(long, requires = "since")]
        target: Option<String>,
        /// RFC 3339 time, or a duration ago such as 2h.
        #[arg(long, requires = "target")]
        since: Option<String>,
        /// Where the instance is.
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the live supervision tree.
    Tree {
        /// Where the instance is.
        #[command(flatten)]
        conn: Conn,
    },
    /// List the hooks with their counters and limits, or change one.
    Hooks {
        /// The change to make; none lists the hooks.
        #[command(subcommand)]
        action: Option<HooksCmd>,
        /// Where the instance is.
        #[command(flatten)]
        conn: Conn,
    },
}

/// The changes `relayarr hooks` makes, each through the admin API.
#[derive(Subcommand, Debug)]
pub enum HooksCmd {
    /// Set how many requests a hook may have in flight.
    SetCap {
        /// The hook (or `plex:NAME`).
        name: String,
        /// Requests in flight at most (at least 1).
        cap: u32,
    },
    /// Set a hook's rate (`5/s`, `30/m`), or `none` to remove it.
    SetRate {
        /// The hook (or `plex:NAME`).
        name: String,
        /// `5/s`, `30/m`, `100/h`, or `none`.
        rate: String,
    },
    /// Enable a hook: its pending deliveries go out.
    Enable {
        /// The hook (or `plex:NAME`).
        name: String,
    },
    /// Disable a hook: its events are kept, pending.
    Disable {
        /// The hook (or `plex:NAME`).
        name: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The instance could not be reached (not running, wrong `--url`).
    #[error("cannot reach relayarr at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The instance refused the request with a typed error.
    #[error("relayarr answered {status} ({code}): {error}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The error body's `code`.
        code: String,
        /// The error body's message.
        error: String,
    },
    /// The answer was not what this version of the CLI expects.
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// A client for the admin API of one instance.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn new(conn: &Conn) -> Self {
        Api {
            base: conn.url.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            url = format!("{url}?{}", q.finish());
        }
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| CliError::BadAnswer {
            url: url.clone(),
            reason: format!(
                "{status}, not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        if status >= 400 {
            let mut error = v["error"].as_str().unwrap_or("no message").to_owned();
            if status == 401 && self.token.is_none() {
                error.push_str(" (pass --token or set RELAYARR_ADMIN_TOKEN)");
            }
            return Err(CliError::Server {
                status,
                code: v["code"].as_str().unwrap_or("unknown").to_owned(),
                error,
            });
        }
        Ok(v)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        self.send(reqwest::Method::GET, path, query, None).await
    }
}

/// reqwest's top-level message ("error sending request") hides the useful part.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

/// Runs one admin command; prints its output, or the error on stderr. Returns the exit
/// code: 0, or 1 for any failure.
pub async fn run(cmd: AdminCmd) -> u8 {
    match exec(cmd).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("relayarr: {e}");
            1
        }
    }
}

async fn exec(cmd: AdminCmd) -> Result<(), CliError> {
    match cmd {
        AdminCmd::Events {
            source,
            kind,
            since,
            status,
            limit,
            conn,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("source", source),
                ("kind", kind),
                ("since", since),
                ("status", status),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let v = Api::new(&conn).get("/api/v1/admin/events", &q).await?;
            print!("{}", render_events(&v));
        }
        AdminCmd::Explain { event_id, conn } => {
            let v = Api::new(&conn)
                .get(&format!("/api/v1/admin/events/{event_id}/explain"), &[])
                .await?;
            print!("{}", render_explain(&v));
        }
        AdminCmd::Replay {
            event_id,
            target,
            since,
            conn,
        } => {
            let api = Api::new(&conn);
            let (path, q) = match (event_id, target, since) {
                (Some(id), _, _) => (format!("/api/v1/admin/events/{id}/replay"), vec![]),
                (None, Some(t), Some(s)) => (
                    format!("/api/v1/admin/hooks/{t}/replay"),
                    vec![("since", s)],
                ),
                _ => unreachable!("clap requires an event id or --target with --since"),
            };
            let job = api.send(reqwest::Method::POST, &path, &q, None).await?;
            let job = follow_job(&api, job).await?;
            print!("{}", render_job(&job));
            if job["state"] != "done" {
                return Err(CliError::Server {
                    status: 200,
                    code: "job_failed".into(),
                    error: job["errors"].to_string(),
                });
            }
        }
        AdminCmd::Tree { conn } => {
            let v = Api::new(&conn).get("/api/v1/actors", &[]).await?;
            print!("{}", render_tree(&v));
        }
        AdminCmd::Hooks { action, conn } => {
            let api = Api::new(&conn);
            let (name, body) = match action {
                None => {
                    let v = api.get("/api/v1/admin/targets", &[]).await?;
                    print!("{}", render_hooks(&v));
                    return Ok(());
                }
                Some(HooksCmd::SetCap { name, cap }) => {
                    (name, serde_json::json!({ "max_in_flight": cap }))
                }
                Some(HooksCmd::SetRate { name, rate }) => {
                    let rate = if rate.eq_ignore_ascii_case("none") {
                        Value::Null
                    } else {
                        Value::String(rate)
                    };
                    (name, serde_json::json!({ "rate": rate }))
                }
                Some(HooksCmd::Enable { name }) => (name, serde_json::json!({ "enabled": true })),
                Some(HooksCmd::Disable { name }) => (name, serde_json::json!({ "enabled": false })),
            };
            let v = api
                .send(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/admin/targets/{name}"),
                    &[],
                    Some(body),
                )
                .await?;
            let s = &v["stats"];
            println!(
                "{name}: {}, max_in_flight {}, rate {}",
                if s["enabled"] == true {
                    "enabled"
                } else {
                    "disabled"
                },
                s["max_in_flight"],
                s["rate"].as_str().unwrap_or("unlimited"),
            );
        }
    }
    Ok(())
}

/// Polls a replay job until it ends, with a progress bar on a terminal and one line per
/// change otherwise (logs, pipes, tests).
async fn follow_job(api: &Api, mut job: Value) -> Result<Value, CliError> {
    let id = job["job"].as_str().unwrap_or_default().to_owned();
    let total = job["targets_total"].as_u64().unwrap_or(0);
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} replay {bar:30} {pos}/{len} targets, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last = None;
    loop {
        let asked = job["targets_asked"].as_u64().unwrap_or(0);
        let requeued = job["requeued"].as_u64().unwrap_or(0);
        match &bar {
            Some(b) => {
                b.set_position(asked);
                b.set_message(format!("{requeued} deliveries requeued"));
            }
            None if last != Some((asked, requeued)) => {
                println!("{id}: {asked}/{total} targets asked, {requeued} deliveries requeued");
                last = Some((asked, requeued));
            }
            None => {}
        }
        if job["state"] != "running" {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        job = api.get(&format!("/api/v1/admin/jobs/{id}"), &[]).await?;
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A table: columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// `relayarr events`: one line per event, its deliveries as `target:state` counts.
pub fn render_events(v: &Value) -> String {
    let events = v["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        return "no events match\n".into();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let deliveries: Vec<String> = e["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let mut parts = Vec::new();
                    for st in ["succeeded", "pending", "failed"] {
                        let n = d[st].as_u64().unwrap_or(0);
                        if n > 0 {
                            parts.push(if n == 1 {
                                st.to_owned()
                            } else {
                                format!("{n} {st}")
                            });
                        }
                    }
                    format!("{}:{}", s(&d["target"]), parts.join("+"))
                })
                .collect();
            vec![
                s(&e["received_at"]),
                s(&e["id"]),
                s(&e["source"]),
                s(&e["kind"]),
                s(&e["summary"]),
                if deliveries.is_empty() {
                    "-".into()
                } else {
                    deliveries.join(" ")
                },
            ]
        })
        .collect();
    let mut out = table(
        &["RECEIVED", "ID", "SOURCE", "KIND", "SUMMARY", "DELIVERIES"],
        &rows,
    );
    if v["next_cursor"].is_string() {
        out.push_str("(more: raise --limit or narrow with --since)\n");
    }
    out
}

/// `relayarr explain`: the event, then each delivery with its attempts.
pub fn render_explain(v: &Value) -> String {
    let e = &v["event"];
    let mut out = String::new();
    let _ = writeln!(out, "event {}", s(&e["id"]));
    let _ = writeln!(out, "  {}", s(&e["summary"]));
    let _ = writeln!(
        out,
        "  source {}, kind {} ({}), received {}, {}",
        s(&e["source"]),
        s(&e["kind"]),
        s(&e["event_type"]),
        s(&e["received_at"]),
        s(&e["status"]),
    );
    let deliveries = v["deliveries"].as_array().cloned().unwrap_or_default();
    if deliveries.is_empty() {
        out.push_str("\nno deliveries: no target's filter matched (or it is still being routed)\n");
        return out;
    }
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    for d in &deliveries {
        let _ = write!(
            out,
            "\n→ {}: {}, {} attempt(s)",
            s(&d["target"]),
            s(&d["state"]),
            s(&d["attempts"])
        );
        if !d["last_status"].is_null() {
            let _ = write!(out, ", last status {}", s(&d["last_status"]));
        }
        if !d["last_error"].is_null() {
            let _ = write!(out, ", last error: {}", s(&d["last_error"]));
        }
        if !d["next_attempt_at"].is_null() {
            let _ = write!(out, ", next attempt {}", s(&d["next_attempt_at"]));
        }
        out.push('\n');
        if let Some(g) = d["group"].as_object() {
            let n = g.get("seqs").and_then(Value::as_array).map_or(0, Vec::len);
            let _ = writeln!(out, "  debounced group `{}` of {n} event(s)", s(&g["key"]));
        }
        let _ = writeln!(out, "  webhook-id {}", s(&d["webhook_id"]));
        for a in attempts.iter().filter(|a| a["delivery_id"] == d["id"]) {
            let result = if a["status"].is_null() {
                format!("error: {}", s(&a["error"]))
            } else {
                format!("status {}", s(&a["status"]))
            };
            let _ = writeln!(
                out,
                "  attempt {} at {}: {result} in {} ms",
                s(&a["attempt"]),
                s(&a["started_at"]),
                s(&a["latency_ms"])
            );
            for (label, key) in [
                ("request", "request_excerpt"),
                ("response", "response_excerpt"),
            ] {
                let text = a[key].as_str().unwrap_or_default();
                if !text.is_empty() {
                    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    let short: String = one_line.chars().take(160).collect();
                    let more = if one_line.chars().count() > 160 {
                        "…"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "    {label}: {short}{more}");
                }
            }
        }
    }
    out
}

/// `relayarr tree`: the actor tree, indented, with each node's status and any other
/// scalar facts the server reports (restart counts, backoff).
pub fn render_tree(v: &Value) -> String {
    fn walk(n: &Value, depth: usize, out: &mut String) {
        let extra: Vec<String> = n
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| {
                !["name", "id", "status", "children"].contains(&k.as_str())
                    && !v.is_null()
                    && !v.is_object()
                    && !v.is_array()
            })
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect();
        let _ = write!(
            out,
            "{}{}  {}",
            "  ".repeat(depth),
            s(&n["name"]),
            s(&n["status"])
        );
        if !extra.is_empty() {
            let _ = write!(out, "  {}", extra.join(" "));
        }
        out.push('\n');
        for c in n["children"].as_array().into_iter().flatten() {
            walk(c, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(v, 0, &mut out);
    out
}

/// `relayarr hooks`: every target with its limits and counters.
pub fn render_hooks(v: &Value) -> String {
    let list = v["targets"]
        .as_array()
        .or_else(|| v["hooks"].as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "no hooks or Plex servers are configured\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let st = &t["stats"];
            let d = &t["deliveries"];
            let state = if st["enabled"] == true {
                "enabled".to_owned()
            } else {
                match st["disabled_reason"].as_str() {
                    Some(r) => format!("disabled ({r})"),
                    None => "disabled".to_owned(),
                }
            };
            vec![
                s(&st["name"]),
                s(&st["kind"]),
                state,
                s(&st["max_in_flight"]),
                st["rate"].as_str().unwrap_or("-").to_owned(),
                format!("{}/{}", s(&st["in_flight"]), s(&st["queued"])),
                s(&d["pending"]),
                s(&d["succeeded"]),
                s(&d["failed"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "STATE",
            "CAP",
            "RATE",
            "RUNNING/QUEUED",
            "PENDING",
            "SUCCEEDED",
            "FAILED",
        ],
        &rows,
    )
}

/// The end of a replay job.
pub fn render_job(job: &Value) -> String {
    let mut out = format!(
        "replay {} {}: {}, {} deliveries requeued",
        s(&job["kind"]),
        s(&job["subject"]),
        s(&job["state"]),
        s(&job["requeued"])
    );
    let per: Vec<String> = job["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} {}", s(&t["target"]), s(&t["requeued"])))
        .collect();
    if !per.is_empty() {
        let _ = write!(out, " ({})", per.join(", "));
    }
    out.push('\n');
    for e in job["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  error: {}", s(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cli_renders_events_as_an_aligned_table() {
        let v = json!({"events": [
            {"id": "01A", "source": "sonarr", "kind": "import", "received_at": "2025-01-01T00:00:00Z",
             "summary": "Show (2020) S01E05", "deliveries": [
                {"target": "discord", "pending": 0, "succeeded": 1, "failed": 0},
                {"target": "plex:home", "pending": 2, "succeeded": 0, "failed": 1}]},
            {"id": "01B", "source": "radarr-4k", "kind": "grab", "received_at": "2025-01-01T00:00:01Z",
             "summary": "Movie", "deliveries": []}
        ], "next_cursor": "s1"});
        let out = render_events(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("RECEIVED "), "{out}");
        assert!(
            lines[1].ends_with("discord:succeeded plex:home:2 pending+failed"),
            "{out}"
        );
        assert_eq!(lines[1].find("01A"), lines[2].find("01B"), "aligned: {out}");
        assert!(lines[2].ends_with(" -"), "{out}");
        assert!(lines[3].starts_with("(more"), "{out}");
        assert_eq!(render_events(&json!({"events": []})), "no events match\n");
    }

    #[test]
    fn cli_renders_the_tree_indented_with_extra_facts() {
        let v = json!({"name": "relayarr", "status": "Running", "id": "0.1", "children": [
            {"name": "hooks", "status": "Running", "id": "0.2", "restarts": 2, "children": [
                {"name": "hook:a", "status": "Running", "id": "0.3", "children": []}]}]});
        assert_eq!(
            render_tree(&v),
            "relayarr  Running\n  hooks  Running  restarts=2\n    hook:a  Running\n"
        );
    }
}
