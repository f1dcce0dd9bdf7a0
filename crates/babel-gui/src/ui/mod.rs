//! Drawing only: each frame reads the [`Model`] and turns clicks into
//! [`Intent`]s. [`App`] is the glue: it takes the backend's updates into
//! the model, draws, and sends the commands the intents produce.

mod account;
mod call;
mod chat;
mod contacts;
mod history;
mod incoming;
mod settings;
mod signin;

use std::path::PathBuf;
use std::time::Duration;

use eframe::egui::{self, Color32, RichText};

use crate::backend::BackendHandle;
use crate::model::{CallPhase, Intent, Model, NoticeKind, Phase};
use crate::social::{MyStatus, Page, SocialIntent};

/// Colours used for presence and levels.
pub(crate) mod colors {
    use eframe::egui::Color32;

    pub const ONLINE: Color32 = Color32::from_rgb(70, 190, 90);
    pub const BUSY: Color32 = Color32::from_rgb(230, 140, 40);
    pub const OFFLINE: Color32 = Color32::from_rgb(120, 120, 120);
    pub const PENDING: Color32 = Color32::from_rgb(200, 180, 60);
    /// Presence not known (the connection to the server is lost).
    pub const UNKNOWN: Color32 = Color32::from_rgb(95, 95, 95);
    /// The lost-connection banner's background.
    pub const WARNING_BG: Color32 = Color32::from_rgb(120, 70, 10);
    pub const ERROR: Color32 = Color32::from_rgb(235, 90, 80);
    pub const LOSS: Color32 = Color32::from_rgb(235, 90, 80);
    pub const JITTER: Color32 = Color32::from_rgb(90, 160, 240);
    /// Unread messages.
    pub const UNREAD: Color32 = Color32::from_rgb(200, 60, 60);
    /// Away.
    pub const AWAY: Color32 = Color32::from_rgb(220, 200, 70);
    /// Do not disturb.
    pub const DND: Color32 = Color32::from_rgb(200, 50, 50);
}

/// A button whose accessible name says what it acts on ("Call Ben") while
/// its face stays short ("Call"): screen readers and UI tests find it.
pub(crate) fn named_button(ui: &mut egui::Ui, enabled: bool, face: impl Into<egui::WidgetText>, name: &str) -> bool {
    let r = ui.add_enabled(enabled, egui::Button::new(face));
    r.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::Button, enabled, name));
    r.clicked()
}

/// A filled circle the height of a line (presence, speaking).
pub(crate) fn dot(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, color);
}

/// What a screenshot waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The sign-in form.
    SignInForm,
    /// A call with voice flowing.
    InCall,
    /// A call ringing for me.
    Ringing,
    /// The connection to the server lost.
    ConnectionLost,
    /// A conversation with its messages loaded.
    Conversation,
}

impl Moment {
    fn reached(self, m: &Model) -> bool {
        match self {
            Moment::SignInForm => m.phase == Phase::SignedOut,
            Moment::InCall => m.call.as_ref().is_some_and(|c| c.phase == CallPhase::Active),
            Moment::Ringing => m.incoming.is_some(),
            Moment::ConnectionLost => m.phase == Phase::Main && m.connection_lost,
            Moment::Conversation => match m.social.page {
                Page::Chat(id) => m.chat(id).is_some_and(|c| c.opened && !c.loading && !c.messages.is_empty()),
                _ => false,
            },
        }
    }
}

/// A screenshot to take once a moment has lasted a while (the README's
/// pictures), then close the window.
#[derive(Debug, Clone)]
pub struct ScreenshotPlan {
    /// Where the PNG goes.
    pub path: PathBuf,
    /// What to wait for.
    pub moment: Moment,
    /// How long the moment lasts first.
    pub after: Duration,
    since: Option<std::time::Instant>,
    requested: bool,
}

impl ScreenshotPlan {
    /// A plan.
    pub fn new(path: PathBuf, moment: Moment, after: Duration) -> Self {
        Self { path, moment, after, since: None, requested: false }
    }
}

/// The application: the model, the backend, and what glues them.
pub struct App {
    /// What is shown.
    pub model: Model,
    backend: BackendHandle,
    waker_set: bool,
    /// Call this contact as soon as they are online (demo mode).
    call_when_online: Option<babel_proto::UserId>,
    /// Open this contact's conversation once signed in (demo mode).
    chat_when_signed_in: Option<babel_proto::UserId>,
    screenshot: Option<ScreenshotPlan>,
    ringing_shown: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("model", &self.model).finish_non_exhaustive()
    }
}

impl App {
    /// An application over a running backend.
    pub fn new(model: Model, backend: BackendHandle) -> Self {
        Self {
            model,
            backend,
            waker_set: false,
            call_when_online: None,
            chat_when_signed_in: None,
            screenshot: None,
            ringing_shown: false,
        }
    }

    /// Sends a command straight to the backend (start-up: a saved session).
    pub fn send(&self, c: crate::msg::Command) {
        self.backend.send(c);
    }

    /// Calls this contact once they show up online (demo mode).
    pub fn call_when_online(mut self, id: babel_proto::UserId) -> Self {
        self.call_when_online = Some(id);
        self
    }

    /// Opens this contact's conversation once signed in (demo mode).
    pub fn open_chat_when_signed_in(mut self, id: babel_proto::UserId) -> Self {
        self.chat_when_signed_in = Some(id);
        self
    }

    /// Takes a screenshot during the call, then closes (demo mode).
    pub fn screenshot(mut self, plan: ScreenshotPlan) -> Self {
        self.screenshot = Some(plan);
        self
    }

    /// One frame: updates in, drawing, intents out.
    pub fn ui(&mut self, ctx: &egui::Context) {
        if !self.waker_set {
            let c = ctx.clone();
            self.backend.set_waker(move || c.request_repaint());
            self.waker_set = true;
        }
        for u in self.backend.drain() {
            self.model.apply(u);
        }
        let mut intents = Vec::new();
        let focused = ctx.input(|i| i.focused);
        if focused != self.model.social.focused {
            intents.push(Intent::Social(crate::social::SocialIntent::Focus(focused)));
        }
        if let Some(id) = self.call_when_online {
            if self.model.contact(id).is_some_and(|c| c.presence == babel_proto::Presence::Online) {
                self.call_when_online = None;
                intents.push(Intent::Call(id));
            }
        }
        if let Some(id) = self.chat_when_signed_in {
            if self.model.contact(id).is_some() {
                self.chat_when_signed_in = None;
                intents.push(Intent::Social(crate::social::SocialIntent::OpenChat(id)));
            }
        }
        draw(ctx, &mut self.model, &mut intents);
        for i in intents {
            for c in self.model.intent(i) {
                self.backend.send(c);
            }
        }
        // What updates gave rise to (read marks, notifications).
        for c in self.model.take_outbox() {
            self.backend.send(c);
        }
        self.take_screenshot(ctx);
        if self.model.incoming.is_some() != self.ringing_shown {
            // A call that rings: the window asks the desktop for attention.
            self.ringing_shown = self.model.incoming.is_some();
            if self.ringing_shown {
                ctx.send_viewport_cmd(egui::ViewportCommand::RequestUserAttention(egui::UserAttentionType::Critical));
            }
        }
        if self.model.call.is_some() || self.model.mic_level.is_some() || self.model.connection_lost {
            // The timer and meters move even when no update arrives.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn take_screenshot(&mut self, ctx: &egui::Context) {
        let Some(plan) = self.screenshot.as_mut() else { return };
        let shot = ctx.input(|i| {
            i.raw.events.iter().find_map(|e| match e {
                egui::Event::Screenshot { image, .. } => Some(image.clone()),
                _ => None,
            })
        });
        if let Some(image) = shot {
            let [w, h] = image.size;
            let bytes: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
            let saved = image::RgbaImage::from_raw(w as u32, h as u32, bytes)
                .ok_or_else(|| "bad image size".to_owned())
                .and_then(|img| img.save(&plan.path).map_err(|e| e.to_string()));
            match saved {
                Ok(()) => tracing::info!(path = %plan.path.display(), "screenshot saved"),
                Err(e) => tracing::error!(error = %e, "screenshot not saved"),
            }
            self.screenshot = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !plan.moment.reached(&self.model) {
            plan.since = None;
        } else if plan.since.is_none() {
            plan.since = Some(std::time::Instant::now());
        }
        let due = plan.since.is_some_and(|t| t.elapsed() >= plan.after);
        if due && !plan.requested {
            plan.requested = true;
            ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(egui::UserData::default()));
        }
        ctx.request_repaint_after(Duration::from_millis(100));
    }
}

impl eframe::App for App {
    fn update(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.ui(ctx);
    }
}

/// Draws the whole window.
pub fn draw(ctx: &egui::Context, m: &mut Model, out: &mut Vec<Intent>) {
    match m.phase {
        Phase::SignedOut | Phase::Resuming => {
            notices(ctx, m, out);
            egui::CentralPanel::default().show(ctx, |ui| signin::form(ui, m, out));
        }
        Phase::Main => {
            top_bar(ctx, m, out);
            connection_banner(ctx, m);
            notices(ctx, m, out);
            let contacts = egui::SidePanel::left("contacts")
                .resizable(true)
                .default_width(360.0)
                .min_width(260.0)
                .show(ctx, |ui| contacts::panel(ui, m, out));
            let side = contacts.response.rect.width();
            egui::CentralPanel::default().show(ctx, |ui| {
                if m.editing.is_some() {
                    settings::page(ui, m, out);
                    return;
                }
                match m.social.page {
                    Page::Chat(id) => chat::page(ui, m, out, id),
                    Page::History => history::page(ui, m, out),
                    Page::Account => account::page(ui, m, out),
                    Page::Home if m.call.is_some() => call::view(ui, m, out),
                    Page::Home => idle(ui, m),
                }
            });
            incoming::modal(ctx, m, out, side);
            contacts::confirm_remove_window(ctx, m, out);
            account::confirm_block_window(ctx, m, out);
            account::confirm_delete_window(ctx, m, out);
        }
    }
}

fn top_bar(ctx: &egui::Context, m: &mut Model, out: &mut Vec<Intent>) {
    egui::TopBottomPanel::top("top").show(ctx, |ui| {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Babel").strong().size(20.0));
            ui.separator();
            if let Some(me) = &m.me {
                let mine = match m.social.status {
                    MyStatus::Available => colors::ONLINE,
                    MyStatus::Away => colors::AWAY,
                    MyStatus::Dnd => colors::DND,
                    MyStatus::Invisible => colors::OFFLINE,
                };
                dot(ui, if m.connection_lost { colors::UNKNOWN } else { mine });
                ui.label(format!("{} <{}>", me.name, me.email));
                ui.label(RichText::new(format!("on {}", m.server)).weak());
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.button("Sign out").clicked() {
                    out.push(Intent::SignOut);
                }
                let settings_open = m.editing.is_some();
                if ui.selectable_label(settings_open, "Settings").clicked() {
                    out.push(if settings_open { Intent::CloseSettings } else { Intent::OpenSettings });
                }
                let page = m.social.page;
                if ui.selectable_label(page == Page::Account, "Account").clicked() {
                    out.push(Intent::Social(SocialIntent::OpenAccount));
                }
                if ui.selectable_label(page == Page::History, "Call history").clicked() {
                    out.push(Intent::Social(SocialIntent::OpenHistory));
                }
                status_chooser(ui, m, out);
            });
        });
    });
}

/// My status: available, away, do not disturb, invisible.
fn status_chooser(ui: &mut egui::Ui, m: &Model, out: &mut Vec<Intent>) {
    let now = m.social.status;
    let r = egui::ComboBox::from_id_salt("my-status").selected_text(now.label()).show_ui(ui, |ui| {
        for s in MyStatus::ALL {
            if ui.selectable_label(s == now, s.label()).clicked() {
                out.push(Intent::Social(SocialIntent::SetStatus(s)));
            }
        }
    });
    let name = format!("My status: {}", now.label());
    r.response.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::ComboBox, !m.connection_lost, &name));
}

/// Says, across the window, that the server is gone and is being tried again.
fn connection_banner(ctx: &egui::Context, m: &Model) {
    if !m.connection_lost {
        return;
    }
    let frame = egui::Frame::new().fill(colors::WARNING_BG).inner_margin(egui::Margin::symmetric(12, 8));
    egui::TopBottomPanel::top("connection").frame(frame).show(ctx, |ui| {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(RichText::new("Connection lost, reconnecting…").size(16.0).strong().color(Color32::WHITE));
            ui.label(
                RichText::new(format!(
                    "The server at {} does not answer. Presence is unknown; calling and adding wait until it is back.",
                    m.server
                ))
                .color(Color32::from_gray(235)),
            );
        });
    });
}

fn notices(ctx: &egui::Context, m: &Model, out: &mut Vec<Intent>) {
    if m.notices.is_empty() {
        return;
    }
    egui::TopBottomPanel::bottom("notices").show(ctx, |ui| {
        for n in m.notices.iter().rev() {
            ui.horizontal(|ui| {
                let color = match n.kind {
                    NoticeKind::Error => colors::ERROR,
                    NoticeKind::Info => ui.visuals().text_color(),
                };
                if named_button(ui, true, "✖", &format!("Dismiss: {}", n.text)) {
                    out.push(Intent::Dismiss(n.id));
                }
                ui.label(RichText::new(&n.text).color(color));
            });
        }
    });
}

fn idle(ui: &mut egui::Ui, m: &Model) {
    if m.incoming.is_some() {
        // The ringing call's modal stands here: nothing under it.
        return;
    }
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() * 0.3);
        ui.label(RichText::new("No call").size(24.0).strong());
        ui.label("Press Call next to an online contact to talk. Calls are encrypted end to end.");
        if let Some(last) = &m.last_call {
            ui.add_space(12.0);
            ui.label(RichText::new(last).weak());
        }
    });
}
