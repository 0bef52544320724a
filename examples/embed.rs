//! A small home-lab service that embeds relayarr: it receives Sonarr's webhooks, relays
//! them to one outbound hook, logs every committed event, tunes the hook at runtime, prints
//! the supervision tree, and stops gracefully on Ctrl-C.
//!
//! ```text
//! cargo run --example embed                       # the built-in config below
//! cargo run --example embed -- my-relayarr.toml   # or a config file of your own
//! ```
//!
//! Then post a test event as Sonarr would:
//!
//! ```text
//! curl -i -H 'X-Api-Key: change-me-sonarr-key' -H 'content-type: application/json' \
//!   -d '{"eventType":"Test","instanceName":"Sonarr"}' \
//!   http://127.0.0.1:8089/api/v1/webhooks/sonarr
//! ```
//!
//! Environment: `EMBED_DATA_DIR` (default `./embed-data`), `EMBED_HOOK_URL` (default
//! `http://127.0.0.1:8099/hook`), `RUST_LOG` (default `info`).

use std::process::ExitCode;

use relayarr::actors::supervisor::render_tree;
use relayarr::{Config, Relay, Tuning};
use tokio::sync::broadcast::error::RecvError;

/// The config when no file is given: one Sonarr source, one hook. Keys are as in
/// `config/relayarr.example.toml`; `RELAYARR_*` environment variables still apply.
fn builtin_config(data_dir: &str, hook_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8089"
data_dir = {data_dir:?}

[[source]]
name = "sonarr"
kind = "sonarr"
auth = {{ header = {{ name = "X-Api-Key", value = "change-me-sonarr-key" }} }}

[[hook]]
name = "notify"
url = {hook_url:?}
max_in_flight = 4
"#
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the embedded relay failed");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A validated config: from a file, or built in code.
    let config = match std::env::args_os().nth(1) {
        Some(path) => Config::load(Some(std::path::Path::new(&path)), std::env::vars()),
        None => {
            let data_dir = std::env::var("EMBED_DATA_DIR").unwrap_or_else(|_| "embed-data".into());
            let hook_url = std::env::var("EMBED_HOOK_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:8099/hook".into());
            Config::from_toml_str(
                "built-in",
                &builtin_config(&data_dir, &hook_url),
                std::env::vars(),
            )
        }
    }
    .map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("invalid config:\n{}", lines.join("\n"))
    })?;

    // 2. Bind, start, and get the handle. Ctrl-C is the shutdown future.
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let relay = Relay::builder(config)
        .start(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tracing::info!(addr = %relay.local_addr(), "relayarr embedded; Ctrl-C to stop");

    // 3. Every committed event, logged. The loop ends when the relay has stopped.
    let mut events = relay.subscribe();
    let logger = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => tracing::info!(
                    event_id = %e.id,
                    seq = e.seq,
                    source = %e.event.instance,
                    kind = %e.event.kind,
                    "committed"
                ),
                // Fell behind: the missed events are in the store (`relayarr events`).
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "subscriber lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    });

    // 4. Tune a hook at runtime: through its worker, persisted, in force for the next request.
    if relay.targets().await?.iter().any(|t| t.name == "notify") {
        let stats = relay
            .tune("notify", Tuning::new().max_in_flight(2).rate("10/s"))
            .await?;
        tracing::info!(
            hook = %stats.name,
            max_in_flight = stats.max_in_flight,
            rate = ?stats.rate,
            "hook tuned"
        );
    }

    // 5. The supervision tree, as `GET /api/v1/actors` serves it.
    if let Some(tree) = relay.actor_tree() {
        println!("{}", render_tree(&tree));
    }

    // 6. Runs until Ctrl-C; then ingress stops, hooks drain, the store is flushed.
    relay.wait().await?;
    logger.await?;
    tracing::info!("stopped");
    Ok(())
}
