//! The Plex sync target: one delivery worker per `[[plex]]` server. Its executor asks Plex
//! to scan just the folder a burst of imports touched, waits until Plex really lists the
//! files, and puts the user's title cards back on the episodes, once per card and item.

pub mod cards;
pub mod client;
pub mod config;
pub mod executor;
pub mod view;
