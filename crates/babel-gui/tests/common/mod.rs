//! What every window test needs: a window over a real backend, waits that
//! poll for what a person would see, typing and clicking, accounts made
//! through the client library.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use babel_client::Client;
use babel_gui::App;
use babel_gui::backend::{AudioMode, BackendHandle, Options};
use babel_gui::model::Model;
use babel_gui::settings::{Home, Settings};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const PASSWORD: &str = "password123";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn app(home: &Path, server: &str) -> App {
    let home = Home::new(Some(home.to_owned())).unwrap();
    let settings = Settings { server: server.into(), ..Settings::default() };
    let backend = BackendHandle::start(Options { home, audio: AudioMode::Synthetic }).unwrap();
    App::new(Model::new(settings), backend)
}

pub fn harness(app: App) -> Harness<'static, App> {
    Harness::builder().with_size([1100.0, 760.0]).build_state(|ctx, app: &mut App| app.ui(ctx), app)
}

/// Steps the window until a node whose label contains `label` shows up.
pub fn wait_for(h: &mut Harness<'_, App>, label: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        h.step();
        if h.query_all_by_label_contains(label).next().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "no `{label}` on screen within {TIMEOUT:?}; model: {:#?}", h.state().model);
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Steps the window until no node's label contains `label`.
pub fn wait_gone(h: &mut Harness<'_, App>, label: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        h.step();
        if h.query_all_by_label_contains(label).next().is_none() {
            return;
        }
        assert!(Instant::now() < deadline, "`{label}` still on screen after {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(40));
    }
}

pub fn type_into(h: &mut Harness<'_, App>, label: &str, text: &str) {
    h.get_by_label(label).focus();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

pub fn click(h: &mut Harness<'_, App>, label: &str) {
    // A window that just appeared is laid out over its first frames:
    // let it settle so the click lands where the button is.
    h.run_steps(3);
    h.get_by_label(label).click();
    h.run_steps(3);
}

/// Clicks the one node whose label contains `part` (a name with an id in it).
pub fn click_contains(h: &mut Harness<'_, App>, part: &str) {
    h.run_steps(3);
    h.get_by_label_contains(part).click();
    h.run_steps(3);
}

pub fn sign_in(h: &mut Harness<'_, App>, email: &str, password: &str) {
    type_into(h, "Email", email);
    type_into(h, "Password", password);
    click(h, "Sign in");
}

pub async fn account(addr: &str, email: &str, name: &str) -> Client {
    let mut c = Client::connect(addr.to_owned()).await.unwrap();
    c.create(email, PASSWORD, Some(name)).await.unwrap();
    c
}

pub fn sign_in_register(h: &mut Harness<'_, App>, email: &str) {
    type_into(h, "Email", email);
    type_into(h, "Password", PASSWORD);
    click(h, "Create account");
}

pub fn wait_until(h: &mut Harness<'_, App>, what: &str, f: impl Fn(&Model) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        h.step();
        if f(&h.state().model) {
            return;
        }
        assert!(Instant::now() < deadline, "not {what} within {TIMEOUT:?}; model: {:#?}", h.state().model);
        std::thread::sleep(Duration::from_millis(40));
    }
}
