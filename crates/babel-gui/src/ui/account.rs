//! The account page: my name, my password, my sessions (each can be
//! ended), the people I blocked, and deleting the account.

use eframe::egui::{self, RichText};

use super::{colors, named_button};
use crate::model::{Intent, Model};
use crate::social::{SocialIntent, short_time};

fn social(out: &mut Vec<Intent>, i: SocialIntent) {
    out.push(Intent::Social(i));
}

/// A labelled single-line field (a password when `secret`).
fn field(ui: &mut egui::Ui, label: &str, text: &mut String, secret: bool) -> egui::Response {
    ui.horizontal(|ui| {
        let l = ui.add_sized([170.0, 20.0], egui::Label::new(label));
        // An id of its own: the lists above it (sessions, blocked) load
        // later, and a position-based id would change under the typing.
        let edit = egui::TextEdit::singleline(text).id_salt(("account", label)).password(secret).desired_width(240.0);
        ui.add(edit).labelled_by(l.id)
    })
    .inner
}

pub(super) fn page(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>) {
    let online = !m.connection_lost;
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        ui.heading("Account");
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Close").clicked() {
                social(out, SocialIntent::Home);
            }
        });
    });
    ui.separator();
    let secondary = super::contacts::secondary_color(ui);
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        let a = &mut m.social.account;
        if let Some(e) = &a.error {
            ui.label(RichText::new(e).color(colors::ERROR));
        }

        ui.label(RichText::new("Name").strong());
        let r = field(ui, "Your name", &mut a.name, false);
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.add_enabled(online, egui::Button::new("Save name")).clicked() || (enter && online) {
            social(out, SocialIntent::Rename);
        }
        ui.add_space(10.0);

        ui.label(RichText::new("Password").strong());
        field(ui, "Current password", &mut a.password, true);
        field(ui, "New password", &mut a.new_password, true);
        field(ui, "New password again", &mut a.repeat, true);
        ui.label(RichText::new("Changing the password signs out every other device.").size(12.5).color(secondary));
        if ui.add_enabled(online, egui::Button::new("Change password")).clicked() {
            social(out, SocialIntent::ChangePassword);
        }
        ui.add_space(10.0);

        ui.label(RichText::new("Sessions").strong());
        match &a.sessions {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Loading…");
                });
            }
            Some(list) => {
                for s in list {
                    ui.horizontal(|ui| {
                        let what = if s.current { "This window".to_owned() } else { format!("From {}", s.address) };
                        ui.label(RichText::new(what).strong());
                        ui.label(
                            RichText::new(format!(
                                "signed in {} · last used {}",
                                short_time(&s.created_at),
                                short_time(&s.last_used)
                            ))
                            .size(12.5)
                            .color(secondary),
                        );
                        if !s.current {
                            let name = format!("End session from {} ({})", s.address, s.session_id);
                            if named_button(ui, online, "End", &name) {
                                social(out, SocialIntent::EndSession(s.session_id));
                            }
                        }
                    });
                }
            }
        }
        ui.add_space(10.0);

        ui.label(RichText::new("Blocked").strong());
        match &m.social.blocked {
            None => {
                ui.label(RichText::new("Loading…").weak());
            }
            Some(list) if list.is_empty() => {
                ui.label(RichText::new("You have blocked nobody.").size(12.5).color(secondary));
            }
            Some(list) => {
                for u in list {
                    ui.horizontal(|ui| {
                        ui.label(format!("{} <{}>", u.name, u.email));
                        if named_button(ui, online, "Unblock", &format!("Unblock {}", u.name)) {
                            social(out, SocialIntent::Unblock(u.id));
                        }
                    });
                }
            }
        }
        ui.add_space(10.0);

        let a = &mut m.social.account;
        ui.label(RichText::new("Delete the account").strong().color(colors::ERROR));
        ui.label(
            RichText::new("Your contacts, messages and call history go with it, on every device.")
                .size(12.5)
                .color(secondary),
        );
        field(ui, "Password to delete", &mut a.delete_password, true);
        if ui.add_enabled(online, egui::Button::new(RichText::new("Delete account").color(colors::ERROR))).clicked() {
            social(out, SocialIntent::AskDelete);
        }
    });
}

/// The confirmation before the account goes.
pub(super) fn confirm_delete_window(ctx: &egui::Context, m: &Model, out: &mut Vec<Intent>) {
    if !m.social.account.confirm_delete {
        return;
    }
    egui::Window::new("Delete account")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            ui.label("Delete your account for good? This cannot be undone.");
            ui.horizontal(|ui| {
                if ui.button(RichText::new("Delete for good").color(colors::ERROR)).clicked() {
                    social(out, SocialIntent::ConfirmDelete);
                }
                if ui.button("Keep it").clicked() {
                    social(out, SocialIntent::CancelDelete);
                }
            });
        });
}

/// The confirmation before blocking someone.
pub(super) fn confirm_block_window(ctx: &egui::Context, m: &Model, out: &mut Vec<Intent>) {
    let Some(id) = m.social.confirm_block else { return };
    let who = m.someone(id);
    egui::Window::new("Block")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            ui.label(format!(
                "Block {who}? You stop being contacts, a call between you ends, and they can no longer \
                 reach you. They are not told. You can unblock them on the account page."
            ));
            ui.horizontal(|ui| {
                if named_button(ui, true, RichText::new("Block").color(colors::ERROR), &format!("Confirm block {who}"))
                {
                    social(out, SocialIntent::ConfirmBlock);
                }
                if ui.button("Cancel").clicked() {
                    social(out, SocialIntent::CancelBlock);
                }
            });
        });
}
