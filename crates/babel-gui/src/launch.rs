//! Starting the application as `babel-gui` does: which home folder, the
//! saved session, the demo world. In the library so that tests run the same
//! path as the program, without a display.

use std::path::PathBuf;

use anyhow::Context;

use crate::App;
use crate::backend::{AudioMode, BackendHandle, Options};
use crate::demo::{Demo, Scene};
use crate::model::{Model, NoticeKind};
use crate::settings::{Home, SavedSession};

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// `--home`: where settings and the session are kept.
    pub home: Option<PathBuf>,
    /// `--server`: the server offered on the sign-in form.
    pub server: Option<String>,
    /// `--synthetic-audio` (or a screenshot): no sound devices.
    pub synthetic_audio: bool,
    /// A demo world on this machine, and what happens in it.
    pub demo: Option<Scene>,
}

/// A demo world and what keeps it alive; dropped after the window.
#[derive(Debug)]
pub struct DemoWorld {
    demo: Option<Demo>,
    /// The demo's own home folder (settings, session), removed when the
    /// demo ends: a demo never writes to the person's real home.
    pub home: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
}

impl DemoWorld {
    /// The world (server, contacts).
    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }
}

impl Drop for DemoWorld {
    fn drop(&mut self) {
        // The world's sockets and tasks go before their runtime.
        if let Some(rt) = self.rt.take() {
            let entered = rt.enter();
            drop(self.demo.take());
            drop(entered);
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Builds the application: the home folder, settings, the saved session or
/// the demo's, the backend. Drop the [`App`] before the [`DemoWorld`].
pub fn launch(l: Launch) -> anyhow::Result<(App, Option<DemoWorld>)> {
    // The demo lives on a runtime of its own, apart from the backend's,
    // like a server and another person elsewhere.
    let world = match l.demo {
        Some(scene) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the demo runtime")?;
            let demo = rt.block_on(Demo::start(scene)).context("cannot start the demo")?;
            eprintln!("babel-gui demo: server on {}, signed in as {}", demo.addr, demo.me.email);
            let home = tempfile::tempdir()?;
            Some(DemoWorld { demo: Some(demo), home, rt: Some(rt) })
        }
        None => None,
    };

    // A demo signs in as its own Ann and saves her session: never over the
    // person's real one (`--home` or the config folder), whatever was asked.
    let home_dir = match &world {
        Some(w) => Some(w.home.path().to_owned()),
        None => l.home.clone(),
    };
    let home = Home::new(home_dir)?;
    let (settings, settings_error) = match home.load_settings() {
        Ok(s) => (s, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    let mut model = Model::new(settings);
    if let Some(s) = &l.server {
        model.form.server = s.clone();
    }
    if let Some(e) = settings_error {
        model.notify(NoticeKind::Error, format!("{e}; the defaults are used."));
    }
    let saved = match world.as_ref().and_then(DemoWorld::demo) {
        Some(d) => Some(SavedSession { server: d.addr.clone(), info: d.me.clone() }),
        None => home.load_session().unwrap_or_else(|e| {
            model.notify(NoticeKind::Error, format!("{e}: sign in again."));
            None
        }),
    };
    let audio = if l.synthetic_audio { AudioMode::Synthetic } else { AudioMode::Devices };
    let backend = BackendHandle::start(Options { home, audio }).context("cannot start the backend")?;
    let first = saved.map(|s| model.resume(s));
    let mut app = App::new(model, backend);
    if let Some(c) = first {
        app.send(c);
    }
    if let Some(d) = world.as_ref().and_then(DemoWorld::demo) {
        match d.scene {
            Scene::Call => app = app.call_when_online(d.ben),
            Scene::Conversation => app = app.open_chat_when_signed_in(d.ben),
            Scene::Incoming | Scene::LostConnection => {}
        }
    }
    Ok((app, world))
}
