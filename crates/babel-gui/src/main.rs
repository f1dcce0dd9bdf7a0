//! `babel-gui`: the desktop application.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use babel_gui::demo::Scene;
use babel_gui::launch::{Launch, launch};
use babel_gui::ui::{Moment, ScreenshotPlan};
use clap::{Parser, ValueEnum};

/// What a demo shows.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoScene {
    /// A call to Ben, who answers and talks.
    Call,
    /// Ben calls you.
    Incoming,
    /// The server stops after a few seconds: the connection is lost.
    LostConnection,
    /// A conversation with Ben, and unread messages from Cleo.
    Conversation,
}

/// Babel: encrypted voice calls with your contacts.
#[derive(Debug, Parser)]
#[command(name = "babel-gui", version)]
struct Cli {
    /// Where settings and the session are kept (default: babel-gui in the
    /// system's config directory). Demos never use it: they keep theirs in
    /// a temporary folder.
    #[arg(long, env = "BABEL_GUI_HOME")]
    home: Option<PathBuf>,
    /// The server to offer on the sign-in form (host:port or tls://host:port).
    #[arg(long, env = "BABEL_SERVER")]
    server: Option<String>,
    /// No sound devices: a synthesized voice as the microphone, nothing played.
    #[arg(long)]
    synthetic_audio: bool,
    /// A demo on this machine: a local server, contacts in every state, and
    /// a call to Ben, who answers and talks (the same as `--demo call`).
    #[arg(long, conflicts_with = "demo")]
    demo_call: bool,
    /// A demo on this machine: `call` (you call Ben), `incoming` (Ben calls
    /// you), `lost-connection` (the server goes away) or `conversation`
    /// (messages with Ben, unread ones from Cleo).
    #[arg(long, value_enum)]
    demo: Option<DemoScene>,
    /// Save a screenshot of the window to this PNG file, then quit: during
    /// the call (demo `call`), the ringing (demo `incoming`), the lost
    /// connection (demo `lost-connection`), the conversation (demo
    /// `conversation`), or of the sign-in form (no demo).
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Seconds to wait, once there is something to show, before the screenshot.
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
    let demo = match (cli.demo, cli.demo_call) {
        (Some(DemoScene::Call), _) | (None, true) => Some(Scene::Call),
        (Some(DemoScene::Incoming), _) => Some(Scene::Incoming),
        (Some(DemoScene::LostConnection), _) => Some(Scene::LostConnection),
        (Some(DemoScene::Conversation), _) => Some(Scene::Conversation),
        (None, false) => None,
    };
    // The screenshot wants a moving microphone meter on any machine; a
    // person trying the demo wants to hear Ben.
    let synthetic_audio = cli.synthetic_audio || cli.screenshot.is_some();
    let (mut app, world) =
        launch(Launch { home: cli.home.clone(), server: cli.server.clone(), synthetic_audio, demo })?;
    if let Some(path) = cli.screenshot.clone() {
        let moment = match demo {
            Some(Scene::Call) => Moment::InCall,
            Some(Scene::Incoming) => Moment::Ringing,
            Some(Scene::LostConnection) => Moment::ConnectionLost,
            Some(Scene::Conversation) => Moment::Conversation,
            None => Moment::SignInForm,
        };
        let after = Duration::from_secs_f64(cli.screenshot_after.max(0.0));
        app = app.screenshot(ScreenshotPlan::new(path, moment, after));
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
        .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
        .context("babel-gui")?;
    drop(world);
    Ok(())
}
