//! The Babel signalling server as a library: the binary `babel-server` is a
//! thin front end over [`server::RunningServer`] / [`server::run`].
//!
//! Layout: [`connection`] speaks frames on one socket; [`app`] holds the
//! shared state and maps errors to statuses; [`routes`] has one file per
//! route family; [`store`] is durable state behind a trait; [`presence`] and
//! [`cache`] are in-memory only.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod connection;
pub mod presence;
pub mod routes;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{RunningServer, StartError};
