//! The `relayarr` binary: parse the command line, set up logging, load and validate config,
//! call the library, map errors to exit codes (bad config: 64).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relayarr::{Config, Relay};

/// mimalloc: ingest parses JSON into many small allocations, and glibc malloc/free was
/// about 13% of the ingest profile. The `system-alloc` feature keeps the system allocator,
/// so that heap profilers that hook `malloc` (heaptrack) see every allocation.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad config file (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "relayarr",
    version,
    about = "Webhook event router for Sonarr, Radarr, Plex and friends"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service. Without --config, uses the built-in example config and ./data.
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log as text (the default) or as JSON lines; overrides RELAYARR_LOG_FORMAT.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Validate a config file (with RELAYARR_* overrides) and print every problem.
    CheckConfig { file: PathBuf },
    /// Show how a sender's path maps to each Plex server: the path Plex sees, the folder
    /// scanned, the library section chosen, and why.
    MapPath {
        /// The `name` of the [[source]] that sends this path.
        source: String,
        /// The path as that sender writes it, e.g. "D:\TV\Show\Season 01\x.mkv".
        path: String,
        /// Restrict the section to this library (title or key), as Aura's ?library= does.
        #[arg(long)]
        library: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send a sample event to one hook and print the status, latency and response.
    TestHook {
        /// The hook's `name`.
        name: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Commands that talk to a running instance through the admin API.
    #[command(flatten)]
    Admin(relayarr::cli::AdminCmd),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Filtering: `RELAYARR_LOG`, else `RUST_LOG`, else `info`. Format: `--log-format`, else
/// `RELAYARR_LOG_FORMAT`, else text. JSON lines carry every field at the top level.
fn init_tracing(format: Option<LogFormat>) {
    let filter = std::env::var("RELAYARR_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let json = format.map_or_else(
        || std::env::var("RELAYARR_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")),
        |f| f == LogFormat::Json,
    );
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars()).map_err(|errors| {
        eprintln!(
            "relayarr: invalid configuration ({} problem(s)):",
            errors.len()
        );
        for e in &errors {
            eprintln!("  - {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "signal received"),
        _ = term => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}

/// mimalloc's delay before it gives freed pages back to the OS. Its default (1 s in
/// mimalloc 3) kept pages freed by bursts of work resident: with 8 saturated hooks at 64
/// connections the server's peak RSS was 68-82 MiB with it and 60-64 MiB with 0, at the same
/// CPU and throughput (`RELAYARR_BENCH_SERVER=process cargo bench --bench delivery_load`).
#[cfg(not(feature = "system-alloc"))]
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// mimalloc reads its options only from the environment, once, as the process starts, and
/// there is no compile-time default for this one (unlike the arena commit, see
/// `.cargo/config.toml`). So `relayarr run` executes itself again, once, in place (same
/// PID, same arguments and file descriptors) with [`PURGE_DELAY_VAR`] set. A value the
/// operator set is kept. Returns only when there is nothing to do or the exec failed.
#[cfg(all(target_os = "linux", not(feature = "system-alloc")))]
fn apply_allocator_defaults() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    // The binary's own path (not /proc/self/exe, which would rename the process `exe`).
    // After an upgrade replaced the file, this path is gone: go on with the defaults.
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(&exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let error = cmd.args(args).env(PURGE_DELAY_VAR, "0").exec();
    eprintln!(
        "relayarr: could not re-execute itself with {PURGE_DELAY_VAR}=0 ({error}); \
         going on with mimalloc's default purge delay (freed memory is returned after 1 s)"
    );
}

#[cfg(not(all(target_os = "linux", not(feature = "system-alloc"))))]
fn apply_allocator_defaults() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Run { .. }) {
        apply_allocator_defaults();
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(error) => {
            eprintln!("relayarr: cannot start the async runtime: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Admin(cmd) => ExitCode::from(relayarr::cli::run(cmd).await),
        Cmd::CheckConfig { file } => match load(Some(&file)) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} source(s), listening on {})",
                    file.display(),
                    cfg.sources.len(),
                    cfg.server.listen
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::MapPath {
            source,
            path,
            library,
            config,
        } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match relayarr::map_path::map_path(&cfg, &source, &path, library.as_deref()).await {
                Ok(explains) => {
                    print!("{}", relayarr::map_path::render(&explains));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("relayarr: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Cmd::TestHook { name, config } => {
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match relayarr::test_hook::test_hook(&cfg, &name).await {
                Ok(report) => {
                    print!("{}", report.render());
                    if report.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("relayarr: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Cmd::Run { config, log_format } => {
            init_tracing(log_format);
            let cfg = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if config.is_none() {
                tracing::warn!("no --config given: running the built-in example config; change its secrets before exposing it");
            }
            #[cfg(not(feature = "system-alloc"))]
            if let Ok(ms) = std::env::var(PURGE_DELAY_VAR) {
                tracing::info!(purge_delay_ms = %ms, "allocator: mimalloc");
            }
            let listener = match tokio::net::TcpListener::bind(cfg.server.listen).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(listen = %cfg.server.listen, %error, "cannot listen");
                    return ExitCode::from(1);
                }
            };
            match Relay::builder(cfg).run(listener, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "relayarr stopped with an error");
                    ExitCode::from(1)
                }
            }
        }
    }
}
