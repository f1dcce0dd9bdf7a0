//! Route handlers, one file per route family, as `impl App` blocks. The
//! dispatcher is [`crate::app::App::handle`].

pub mod account;
pub mod accounts;
pub mod calls;
pub mod contacts;
pub mod messages;
