//! A call ringing for me: a modal over a dimmed window, so it cannot be
//! missed and nothing shows through it; the rest of the window waits until
//! the call is answered or declined (or stops ringing). The backend also
//! asks the desktop for a notification, and the window for attention.

use eframe::egui::{self, Color32, RichText};

use super::colors;
use crate::model::{Intent, Model};

/// `side`: the contact list's width; the modal stands over the rest of the
/// window, not over the list, when there is room.
pub(super) fn modal(ctx: &egui::Context, m: &Model, out: &mut Vec<Intent>, side: f32) {
    let Some(inc) = &m.incoming else { return };
    let frame = egui::Frame::popup(&ctx.style())
        .inner_margin(egui::Margin::same(24))
        .stroke(egui::Stroke::new(2.0, colors::ONLINE));
    let id = egui::Id::new("incoming call");
    let area = egui::Modal::default_area(id).anchor(egui::Align2::CENTER_CENTER, [side / 2.0, 0.0]);
    egui::Modal::new(id).area(area).backdrop_color(Color32::from_black_alpha(170)).frame(frame).show(ctx, |ui| {
        ui.set_min_width(340.0);
        ui.vertical_centered(|ui| {
            ui.label(RichText::new("Incoming call").size(14.0).color(colors::ONLINE));
            ui.add_space(6.0);
            ui.label(RichText::new(format!("{} is calling", inc.caller.name)).size(24.0).strong());
            ui.label(RichText::new(&inc.caller.email).size(14.0));
            if inc.others > 0 {
                ui.label(format!("A group call with {} others.", inc.others));
            }
            if m.call.is_some() {
                ui.label("Accepting leaves your current call.");
            }
            ui.add_space(14.0);
            ui.horizontal(|ui| {
                // Centre the two buttons under the text.
                let width = 2.0 * 110.0 + ui.spacing().item_spacing.x;
                ui.add_space(((ui.available_width() - width) / 2.0).max(0.0));
                let size = egui::vec2(110.0, 36.0);
                let accept = egui::Button::new(RichText::new("Accept").size(17.0).color(Color32::WHITE))
                    .fill(colors::ONLINE)
                    .min_size(size);
                if ui.add(accept).clicked() {
                    out.push(Intent::AcceptCall);
                }
                let decline = egui::Button::new(RichText::new("Decline").size(17.0).color(Color32::WHITE))
                    .fill(colors::ERROR)
                    .min_size(size);
                if ui.add(decline).clicked() {
                    out.push(Intent::DeclineCall);
                }
            });
        });
    });
}
