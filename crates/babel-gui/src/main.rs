//! `babel-gui`: the desktop application.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use babel_gui::backend::{AudioMode, BackendHandle, Options};
use babel_gui::model::Model;
use babel_gui::settings::{Home, SavedSession};
use babel_gui::ui::ScreenshotPlan;
use clap::Parser;

/// Babel: encrypted voice calls with your contacts.
#[derive(Debug, Parser)]
#[command(name = "babel-gui", version)]
struct Cli {
    /// Where settings and the session are kept (default: babel-gui in the
    /// system's config directory).
    #[arg(long, env = "BABEL_GUI_HOME")]
    home: Option<PathBuf>,
    /// The server to offer on the sign-in form (host:port or tls://host:port).
    #[arg(long, env = "BABEL_SERVER")]
    server: Option<String>,
    /// No sound devices: a synthesized voice as the microphone, nothing played.
    #[arg(long)]
    synthetic_audio: bool,
    /// A demo on this machine: a local server, contacts in every state, and
    /// a call to Ben, who answers and talks.
    #[arg(long)]
    demo_call: bool,
    /// With --demo-call: save a screenshot of the window during the call
    /// to this PNG file, then quit.
    #[arg(long, requires = "demo_call")]
    screenshot: Option<PathBuf>,
    /// Seconds of call before the screenshot.
    #[arg(long, default_value_t = 12.0)]
    screenshot_after: f64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BABEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,babel_gui=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();

    // The demo lives on a runtime of its own, apart from the backend's,
    // like a server and another person elsewhere.
    let demo_rt;
    let mut demo_home = None;
    let demo = if cli.demo_call {
        demo_rt = Some(tokio::runtime::Runtime::new().context("cannot start the demo runtime")?);
        let rt = demo_rt.as_ref().context("demo runtime")?;
        let d = rt.block_on(babel_gui::demo::Demo::start()).context("cannot start the demo")?;
        eprintln!("babel-gui demo: server on {}, signed in as {}", d.local.addr, d.me.email);
        demo_home = Some(tempfile::tempdir()?);
        Some(d)
    } else {
        demo_rt = None;
        None
    };

    let home_dir = match (&cli.home, &demo_home) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(t)) => Some(t.path().to_owned()),
        (None, None) => None,
    };
    let home = Home::new(home_dir)?;
    let (settings, settings_error) = match home.load_settings() {
        Ok(s) => (s, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    let mut model = Model::new(settings);
    if let Some(s) = &cli.server {
        model.form.server = s.clone();
    }
    if let Some(e) = settings_error {
        model.notify(babel_gui::model::NoticeKind::Error, format!("{e}; the defaults are used."));
    }
    let saved = match &demo {
        Some(d) => Some(SavedSession { server: d.local.addr.clone(), info: d.me.clone() }),
        None => home.load_session().unwrap_or_else(|e| {
            model.notify(babel_gui::model::NoticeKind::Error, format!("{e}: sign in again."));
            None
        }),
    };
    // The screenshot wants a moving microphone meter on any machine; a
    // person trying the demo wants to hear Ben.
    let audio = if cli.synthetic_audio || cli.screenshot.is_some() { AudioMode::Synthetic } else { AudioMode::Devices };
    let backend = BackendHandle::start(Options { home, audio }).context("cannot start the backend")?;
    let first = saved.map(|s| model.resume(s));
    let mut app = babel_gui::App::new(model, backend);
    if let Some(c) = first {
        app.send(c);
    }
    if let Some(d) = &demo {
        app = app.call_when_online(d.ben);
    }
    if let Some(path) = cli.screenshot.clone() {
        app = app.screenshot(ScreenshotPlan::new(path, Duration::from_secs_f64(cli.screenshot_after.max(0.0))));
    }

    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Babel")
            .with_inner_size([1040.0, 640.0])
            .with_min_inner_size([720.0, 480.0]),
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native("Babel", options, Box::new(|_cc| Ok(Box::new(app))))
        .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))?;
    drop(demo);
    drop(demo_rt);
    Ok(())
}
