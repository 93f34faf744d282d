//! The Confab homeserver: configuration, the client REST API and WebSocket, the room engine
//! (room owners, event writer, idle countdown), federation (keys, signed requests, discovery), the embedded
//! Postgres default, the admin API, and the command line.

pub mod admin;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod embedded_pg;
pub mod engine;
pub mod error;
pub mod extract;
pub mod federation;
pub mod limiter;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod routes;
pub mod sessions;
pub mod state;
pub mod time;
pub mod tls;
pub mod turn;
pub mod ws;
