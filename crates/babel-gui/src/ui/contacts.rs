//! The contact list: search, presence, requests, add and remove.

use babel_proto::Presence;
use eframe::egui::{self, RichText};

use super::{colors, dot, named_button};
use crate::model::{Intent, Model};

/// `None`: unknown (the connection to the server is lost).
fn presence_color(p: Option<Presence>) -> egui::Color32 {
    match p {
        Some(Presence::Online) => colors::ONLINE,
        Some(Presence::Busy) => colors::BUSY,
        Some(Presence::Offline) => colors::OFFLINE,
        Some(Presence::Pending | Presence::Away) => colors::PENDING,
        Some(Presence::Dnd) => colors::BUSY,
        Some(Presence::Unknown) | None => colors::UNKNOWN,
    }
}

fn presence_text(p: Option<Presence>) -> &'static str {
    match p {
        Some(Presence::Online) => "online",
        Some(Presence::Busy) => "in a call",
        Some(Presence::Offline) => "offline",
        Some(Presence::Pending) => "request sent",
        Some(Presence::Away) => "away",
        Some(Presence::Dnd) => "do not disturb",
        Some(Presence::Unknown) | None => "status unknown",
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
    // Without the server nothing here can be done, and presence is unknown.
    let online = !m.connection_lost;
    let secondary = secondary_color(ui);

    if !m.requests.is_empty() {
        ui.label(RichText::new("Contact requests").strong());
        for r in &m.requests {
            ui.horizontal(|ui| {
                dot(ui, colors::PENDING);
                ui.label(&r.name).on_hover_text(&r.email);
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if named_button(ui, online, "Decline", &format!("Decline {}", r.name)) {
                        out.push(Intent::DeclineRequest(r.id));
                    }
                    if named_button(ui, online, "Accept", &format!("Accept {}", r.name)) {
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
            let presence = m.known_presence(c);
            ui.horizontal(|ui| {
                dot(ui, presence_color(presence));
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Min), |ui| {
                    if c.presence == Presence::Pending {
                        // My request, not yet accepted: withdrawn, not removed.
                        let name = format!("Cancel request to {}", c.user.name);
                        if named_button(ui, online, "Cancel request", &name) {
                            out.push(Intent::CancelRequest(c.user.id));
                        }
                    } else {
                        if named_button(ui, online, "Remove", &format!("Remove {}", c.user.name)) {
                            out.push(Intent::AskRemove(c.user.id));
                        }
                        let can_call = presence == Some(Presence::Online) && !in_call;
                        if named_button(ui, can_call, "Call", &format!("Call {}", c.user.name)) {
                            out.push(Intent::Call(c.user.id));
                        }
                    }
                    // The text takes what the buttons leave, cut with "…"
                    // when the panel is narrow (the whole shows on hover).
                    ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                        ui.add(egui::Label::new(RichText::new(&c.user.name).strong()).truncate());
                        let line = format!("{} · {}", presence_text(presence), c.user.email);
                        ui.add(egui::Label::new(RichText::new(line).size(SECONDARY_SIZE).color(secondary)).truncate());
                    });
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
            if ui.add_enabled(online, egui::Button::new("Add")).clicked() || (enter && online) {
                out.push(Intent::AddContact);
            }
        });
        ui.separator();
    });
}

/// The size of a contact's second line (email and presence): readable,
/// a little under the body text.
const SECONDARY_SIZE: f32 = 13.0;

/// The second line's colour: quieter than the name, but well readable on
/// the panel (7:1 in the dark theme, 6.5:1 in the light one; egui's "weak" grey is 2.3:1 in
/// the dark one).
fn secondary_color(ui: &egui::Ui) -> egui::Color32 {
    secondary_for(ui.visuals().dark_mode)
}

fn secondary_for(dark_mode: bool) -> egui::Color32 {
    if dark_mode { egui::Color32::from_gray(165) } else { egui::Color32::from_gray(90) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// WCAG 2 relative luminance of an sRGB colour.
    fn luminance(c: egui::Color32) -> f32 {
        let lin = |v: u8| {
            let v = f32::from(v) / 255.0;
            if v <= 0.039_28 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * lin(c.r()) + 0.7152 * lin(c.g()) + 0.0722 * lin(c.b())
    }

    fn contrast(a: egui::Color32, b: egui::Color32) -> f32 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn the_second_line_is_readable_in_both_themes() {
        for visuals in [egui::Visuals::dark(), egui::Visuals::light()] {
            let c = contrast(secondary_for(visuals.dark_mode), visuals.panel_fill);
            // WCAG AA asks 4.5:1 for body text; the "weak" colour was under it.
            assert!(c >= 4.5, "contrast {c:.1}:1 (dark mode: {})", visuals.dark_mode);
            if visuals.dark_mode {
                assert!(
                    contrast(visuals.weak_text_color(), visuals.panel_fill) < 4.5,
                    "egui's weak grey was unreadable"
                );
            }
        }
        // About the body text's size (12.5), not egui's "small" (9).
        let small = egui::Style::default().text_styles[&egui::TextStyle::Small].size;
        assert!(SECONDARY_SIZE >= 12.5 && SECONDARY_SIZE > small);
    }
}
