//! The Confab homeserver: configuration, the client REST API and WebSocket, the room engine
//! (hub, event writer, sweeper), federation (keys, signed requests, discovery), the embedded
//! Postgres default, the admin API, and the command line.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod embedded_pg;
pub mod error;
pub mod federation;
pub mod hub;
pub mod limiter;
pub mod metrics;
pub mod protocol;
pub mod rooms;
pub mod routes;
pub mod sessions;
pub mod time;
pub mod tls;
pub mod turn;
pub mod writer;
pub mod ws;
