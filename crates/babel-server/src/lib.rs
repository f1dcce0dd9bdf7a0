//! The Babel signalling server as a library: the binary `babel-server` is a
//! thin front end over [`server::RunningServer`] / [`server::run`].
//!
//! Layout: [`connection`] speaks frames on one socket; [`app`] holds the
//! shared state and maps errors to statuses; [`routes`] has one file per
//! route family; [`identity`] says when two addresses are the same or look
//! alike; [`store`] is durable state behind a trait; [`presence`],
//! [`cache`], [`calls`] (with its pure state machine) and [`channel`] are
//! in-memory only; [`hub`] delivers events; [`relay`] is the UDP media relay;
//! [`admission`] decides how many connections the process holds.

pub mod admission;
pub mod app;
pub mod auth;
pub mod cache;
pub mod calls;
pub mod channel;
pub mod config;
pub mod connection;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod presence;
pub mod relay;
pub mod routes;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod transport;

pub use config::Config;
pub use server::{RunningServer, StartError};
