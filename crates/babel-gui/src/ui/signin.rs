//! The sign-in form: server, email, password (and a name when registering).

use eframe::egui::{self, RichText};

use super::colors;
use crate::model::{Intent, Model, Phase};

/// The sign-in grid's width until it was measured: about the widest label
/// ("Password"), the spacing and a field.
const FORM_WIDTH: f32 = 60.0 + 12.0 + FIELD_WIDTH;
const FIELD_WIDTH: f32 = 280.0;

fn field(ui: &mut egui::Ui, label: &str, value: &mut String, password: bool, enabled: bool) -> egui::Response {
    let l = ui.label(label);
    let r = ui
        .add_enabled(enabled, egui::TextEdit::singleline(value).password(password).desired_width(FIELD_WIDTH))
        .labelled_by(l.id);
    ui.end_row();
    r
}

pub(super) fn form(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>) {
    ui.vertical_centered(|ui| {
        ui.add_space(ui.available_height() * 0.15);
        ui.label(RichText::new("Babel").size(36.0).strong());
        ui.label("Encrypted voice calls with the people you know.");
        ui.add_space(16.0);
        if m.phase == Phase::Resuming {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Signing in as {} on {}…", m.form.email, m.form.server));
            });
            return;
        }
        let f = &mut m.form;
        let enabled = !f.busy;
        let mut submit = false;
        // The grid under the centred title, centred too: labels on the
        // left of the fields, the whole as wide as it needs.
        // Its width is measured as drawn and used from the next frame on.
        let width_id = ui.id().with("signin width");
        let width = ui.ctx().data(|d| d.get_temp::<f32>(width_id)).unwrap_or(FORM_WIDTH);
        ui.horizontal(|ui| {
            ui.add_space(((ui.available_width() - width) / 2.0).max(0.0));
            let drawn = ui.vertical(|ui| {
                egui::Grid::new("signin").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
                    field(ui, "Server", &mut f.server, false, enabled);
                    if f.register {
                        field(ui, "Name", &mut f.name, false, enabled);
                    }
                    field(ui, "Email", &mut f.email, false, enabled);
                    let pw = field(ui, "Password", &mut f.password, true, enabled);
                    submit = pw.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                });
            });
            let w = drawn.response.rect.width();
            if (w - width).abs() > 0.5 {
                ui.ctx().data_mut(|d| d.insert_temp(width_id, w));
                ui.ctx().request_repaint();
            }
        });
        ui.add_space(8.0);
        let action = if f.register { "Create account" } else { "Sign in" };
        if f.busy {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(if f.register { "Creating the account…" } else { "Signing in…" });
            });
        } else if ui.button(RichText::new(action).size(16.0)).clicked() || submit {
            out.push(Intent::SubmitSignIn);
        }
        if let Some(e) = &f.error {
            ui.add_space(6.0);
            ui.label(RichText::new(e).color(colors::ERROR));
        }
        ui.add_space(12.0);
        let switch = if f.register { "I have an account: sign in" } else { "New here? Create an account" };
        if ui.add_enabled(enabled, egui::Button::new(switch).frame(false)).clicked() {
            out.push(Intent::ToggleRegister);
        }
        ui.add_space(4.0);
        ui.label("The server is host:port, or tls://host:port for an encrypted connection.");
        ui.label("A cluster's nodes go as a list, a:7447,b:7447: Babel moves to another when one fails.");
    });
}
