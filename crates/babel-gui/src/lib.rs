//! The Babel desktop application (eframe/egui).
//!
//! * [`model`]: everything shown, as plain data; changed by backend
//!   updates and by what the person does. No IO; tested without a window.
//! * [`backend`]: a thread with a tokio runtime running `babel-client` and
//!   the media engine; talks to the window through channels ([`msg`]).
//! * [`ui`]: egui drawing, reading the model and emitting intents; [`App`]
//!   glues the three together.
//! * [`settings`]: what is remembered between runs (devices, audio, the
//!   session), in the home directory.
//! * [`social`]: conversations, call history, account, status and
//!   blocking, as plain data beside the model.
//! * [`notify`]: desktop notifications (an incoming call), where the
//!   desktop has them.
//! * [`ringtone`]: synthesized sounds (ringtone, test tone, a voice).
//! * [`demo`]: a local server with scripted contacts (demo mode, tests).
//! * [`launch`]: the start-up path of `babel-gui` (home folder, session,
//!   demo), shared with the tests.

pub mod backend;
pub mod demo;
pub mod launch;
pub mod model;
pub mod msg;
pub mod notify;
pub mod ringtone;
pub mod settings;
pub mod social;
pub mod ui;

pub use ui::App;
