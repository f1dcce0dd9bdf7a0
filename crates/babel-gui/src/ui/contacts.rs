//! The contact list: search, presence, requests, add and remove.

use babel_proto::Presence;
use eframe::egui::{self, RichText};

use super::{colors, dot, named_button};
use crate::model::{Intent, Model};

fn presence_color(p: Presence) -> egui::Color32 {
    match p {
        Presence::Online => colors::ONLINE,
        Presence::Busy => colors::BUSY,
        Presence::Offline => colors::OFFLINE,
        Presence::Pending => colors::PENDING,
    }
}

fn presence_text(p: Presence) -> &'static str {
    match p {
        Presence::Online => "online",
        Presence::Busy => "in a call",
        Presence::Offline => "offline",
        Presence::Pending => "request sent",
    }
}

pub(super) fn panel(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>) {
    ui.add_space(6.0);
    ui.heading("Contacts");
    ui.horizontal(|ui| {
        let l = ui.label("Search");
        ui.add(egui::TextEdit::singleline(&mut m.filter).hint_text("name or email").desired_width(f32::INFINITY))
            .labelled_by(l.id);
    });
    ui.add_space(4.0);

    if !m.requests.is_empty() {
        ui.label(RichText::new("Contact requests").strong());
        for r in &m.requests {
            ui.horizontal(|ui| {
                dot(ui, colors::PENDING);
                ui.label(&r.name).on_hover_text(&r.email);
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if named_button(ui, true, "Decline", &format!("Decline {}", r.name)) {
                        out.push(Intent::DeclineRequest(r.id));
                    }
                    if named_button(ui, true, "Accept", &format!("Accept {}", r.name)) {
                        out.push(Intent::AcceptRequest(r.id));
                    }
                });
            });
        }
        ui.separator();
    }

    let in_call = m.call.is_some();
    let bottom = 70.0;
    egui::ScrollArea::vertical().max_height((ui.available_height() - bottom).max(60.0)).show(ui, |ui| {
        let mut shown = 0;
        for c in m.visible_contacts() {
            shown += 1;
            ui.horizontal(|ui| {
                dot(ui, presence_color(c.presence));
                ui.vertical(|ui| {
                    ui.label(RichText::new(&c.user.name).strong());
                    ui.label(RichText::new(format!("{} · {}", c.user.email, presence_text(c.presence))).small().weak());
                });
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if named_button(ui, true, "Remove", &format!("Remove {}", c.user.name)) {
                        out.push(Intent::AskRemove(c.user.id));
                    }
                    if c.presence != Presence::Pending {
                        let can_call = c.presence == Presence::Online && !in_call;
                        if named_button(ui, can_call, "Call", &format!("Call {}", c.user.name)) {
                            out.push(Intent::Call(c.user.id));
                        }
                    }
                });
            });
            ui.add_space(2.0);
        }
        if shown == 0 {
            ui.label(
                RichText::new(if m.contacts.is_empty() {
                    "No contacts yet: add someone by email below."
                } else {
                    "Nobody matches the search."
                })
                .weak(),
            );
        }
    });

    ui.with_layout(egui::Layout::bottom_up(egui::Align::Min), |ui| {
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            let l = ui.label("Add by email");
            let r = ui
                .add(egui::TextEdit::singleline(&mut m.add_email).hint_text("someone@example.org").desired_width(150.0))
                .labelled_by(l.id);
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Add").clicked() || enter {
                out.push(Intent::AddContact);
            }
        });
        ui.separator();
    });
}

pub(super) fn confirm_remove_window(ctx: &egui::Context, m: &Model, out: &mut Vec<Intent>) {
    let Some(id) = m.confirm_remove else { return };
    let who =
        m.contact(id).map_or_else(|| "this contact".to_owned(), |c| format!("{} <{}>", c.user.name, c.user.email));
    egui::Window::new("Remove contact")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            ui.label(format!("Remove {who} from your contacts? You will no longer see each other or be able to call."));
            ui.horizontal(|ui| {
                if ui.button(RichText::new("Remove").color(colors::ERROR)).clicked() {
                    out.push(Intent::ConfirmRemove);
                }
                if ui.button("Cancel").clicked() {
                    out.push(Intent::CancelRemove);
                }
            });
        });
}
