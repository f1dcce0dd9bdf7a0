//! The sign-in form: server, email, password (and a name when registering).

use eframe::egui::{self, RichText};

use super::colors;
use crate::model::{Intent, Model, Phase};

fn field(ui: &mut egui::Ui, label: &str, value: &mut String, password: bool, enabled: bool) -> egui::Response {
    let l = ui.label(label);
    let r = ui
        .add_enabled(enabled, egui::TextEdit::singleline(value).password(password).desired_width(280.0))
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
        egui::Grid::new("signin").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
            field(ui, "Server", &mut f.server, false, enabled);
            if f.register {
                field(ui, "Name", &mut f.name, false, enabled);
            }
            field(ui, "Email", &mut f.email, false, enabled);
            let pw = field(ui, "Password", &mut f.password, true, enabled);
            submit = pw.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
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
        ui.label(RichText::new("The server is host:port, or tls://host:port for an encrypted connection.").weak());
    });
}
