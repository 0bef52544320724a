//! relayarr: a self-hosted webhook event router for home-lab media stacks.
//!
//! The library holds all behaviour; `main.rs` only parses the command line. Embed it with
//! [`Relay::builder`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = relayarr::Config::load(None, std::env::vars()).map_err(|e| format!("{e:?}"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
//! relayarr::Relay::builder(config)
//!     .start(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

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
pub use relay::{Relay, RelayBuilder, RelayError};
pub use relayarr_actors as actors;
