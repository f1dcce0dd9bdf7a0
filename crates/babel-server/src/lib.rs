//! The Babel signalling server as a library: the binary `babel-server` is a
//! thin front end over [`server::RunningServer`] / [`server::run`].
//!
//! A program that wants a server of its own (a demo, a harness, a test)
//! uses [`embedded::Embedded`]: 127.0.0.1, a temporary or chosen database,
//! a chosen [`Durability`] and [`PasswordCost`], its address, stop.
//!
//! Layout: `connection` speaks frames on one socket; `app` holds the
//! shared state and maps errors to statuses; `routes` has one file per
//! route family; [`identity`] says when two addresses are the same or look
//! alike; [`store`] is durable state behind a trait; `presence`, `cache`,
//! `calls` (with its pure state machine) and `channel` are in-memory only;
//! `hub` delivers events; [`cluster`] joins nodes into one service over
//! NATS (`--nats`); [`relay`] is the UDP media relay; `admission`
//! decides how many connections the process holds. The modules in code
//! font are the server's own (`pub(crate)`); the public ones are what the
//! binary, embedding programs, the fuzz targets and the server's own
//! integration tests use.

// Inside the server only.
pub(crate) mod admission;
pub(crate) mod app;
pub(crate) mod cache;
pub(crate) mod calls;
pub(crate) mod channel;
pub(crate) mod connection;
pub(crate) mod hub;
pub(crate) mod presence;
pub(crate) mod routes;
pub(crate) mod transport;

// What the binary, embedding programs, the server's own tests, the fuzz
// targets and the tools use.
pub mod auth;
pub mod cluster;
pub mod config;
pub mod embedded;
pub mod identity;
pub mod limits;
pub mod relay;
pub mod relay_io;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;

/// The shared state of a running server ([`RunningServer::app`]): its
/// counters (calls in progress, relay legs) for tests and metrics.
pub use app::App;
pub use auth::PasswordCost;
pub use config::Config;
pub use embedded::Embedded;
pub use server::{RunningServer, StartError};
pub use store::sqlite::Durability;
