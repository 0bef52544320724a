//! relayarr: a self-hosted webhook event router for home-lab media stacks.
//!
//! Sonarr, Radarr, Plex and the rest post events; relayarr commits each one durably
//! (SQLite, or PostgreSQL), debounces, and delivers it to outbound hooks and Plex, all as
//! supervised actors ([`actors`]).
//!
//! The library holds all behaviour; `main.rs` only parses the command line. To embed the
//! relay in another program, build a [`Config`], bind a listener, and start it with
//! [`Relay::builder`]: [`RelayBuilder::start`] returns a [`RelayHandle`] that tunes targets
//! ([`RelayHandle::tune`]), streams committed events ([`RelayHandle::subscribe`]), shows the
//! supervision tree ([`RelayHandle::actor_tree`]) and stops the relay
//! ([`RelayHandle::shutdown`], [`RelayHandle::wait`]). [`Relay`] has a complete, tested
//! example; `examples/embed.rs` is a small service to copy.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = relayarr::Config::load(None, std::env::vars()).map_err(|e| format!("{e:?}"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
//! let relay = relayarr::Relay::builder(config)
//!     .start(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! println!("serving on {}", relay.local_addr());
//! relay.wait().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod hook_admin;
pub mod http;
pub mod jobs;
pub mod map_path;
pub mod observe;
pub mod openapi;
pub mod relay;
pub mod serve;
pub mod test_hook;

pub use config::Config;
pub use relay::{Relay, RelayBuilder, RelayError, RelayHandle, TargetError, Tuning};
pub use relayarr_actors as actors;
pub use relayarr_actors::delivery::TargetStats;
pub use relayarr_actors::store::CommittedEvent;
pub use relayarr_actors::supervisor::TreeNode;
