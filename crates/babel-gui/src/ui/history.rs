//! The call history: newest first, missed calls marked, a call back on
//! each row, older entries on demand.

use eframe::egui::{self, RichText};

use super::{colors, named_button};
use crate::model::{Intent, Model};
use crate::social::{Direction, SocialIntent, short_time};

pub(super) fn page(ui: &mut egui::Ui, m: &Model, out: &mut Vec<Intent>) {
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        ui.heading("Call history");
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if m.call.is_some() && ui.button("Back to the call").clicked() {
                out.push(Intent::Social(SocialIntent::Home));
            }
        });
    });
    ui.separator();
    let h = &m.social.history;
    let secondary = super::contacts::secondary_color(ui);
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        if h.entries.is_empty() && !h.loading {
            ui.label(RichText::new("No calls yet.").weak());
        }
        for e in &h.entries {
            let title = e.title();
            ui.horizontal(|ui| {
                let (arrow, what) = match (e.direction, e.missed()) {
                    (Direction::In, true) => ("↙", "Missed call"),
                    (Direction::In, false) => ("↙", "Incoming"),
                    (Direction::Out, _) if e.answered_at.is_none() => ("↗", "Not answered"),
                    (Direction::Out, _) => ("↗", "Outgoing"),
                };
                let color = if e.missed() { colors::ERROR } else { ui.visuals().text_color() };
                ui.label(RichText::new(arrow).size(18.0).color(color));
                ui.vertical(|ui| {
                    // One label for the line, so screen readers (and tests)
                    // read "Missed call from Cleo" as one.
                    let from = if e.direction == Direction::In { "from" } else { "to" };
                    ui.label(RichText::new(format!("{what} {from} {title}")).strong().color(color));
                    let mut line = short_time(&e.started_at);
                    if e.answered_at.is_some() {
                        line.push_str(&format!(" · ended: {}", e.reason));
                    }
                    ui.label(RichText::new(line).size(12.5).color(secondary));
                });
                // A call back rings the first other person (the caller of
                // a group call), when they are online.
                if let Some(who) = e.with.first() {
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let enabled = m.callable(who.id);
                        if named_button(ui, enabled, "Call back", &format!("Call back {}", who.name)) {
                            out.push(Intent::Social(SocialIntent::CallBack(who.id)));
                        }
                    });
                }
            });
            ui.separator();
        }
        if h.loading {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading…");
            });
        } else if !h.complete && ui.button("Older calls").clicked() {
            out.push(Intent::Social(SocialIntent::MoreHistory));
        }
    });
}
