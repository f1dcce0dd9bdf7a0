//! A conversation: the messages (older ones load when scrolled to the
//! top), read marks on mine, and the line to write on (Enter sends).

use babel_proto::UserId;
use eframe::egui::{self, Color32, RichText};

use super::named_button;
use crate::model::{Intent, Model};
use crate::social::{SocialIntent, short_time};

/// Mine: a quiet blue; theirs: the panel's own grey.
const MINE: Color32 = Color32::from_rgb(40, 70, 110);

fn social(out: &mut Vec<Intent>, i: SocialIntent) {
    out.push(Intent::Social(i));
}

pub(super) fn page(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>, contact: UserId) {
    let me = m.me.as_ref().map_or(UserId(0), |u| u.id);
    let name = m.someone(contact);
    let online = !m.connection_lost;
    let can_call = m.callable(contact);
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        ui.label(RichText::new(&name).size(22.0).strong());
        if let Some(c) = m.contact(contact) {
            ui.label(RichText::new(&c.user.email).weak());
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if m.call.is_some() {
                if ui.button("Back to the call").clicked() {
                    social(out, SocialIntent::Home);
                }
            } else if named_button(ui, can_call && online, "Call", &format!("Call {name} from the conversation")) {
                out.push(Intent::Call(contact));
            }
        });
    });
    ui.separator();

    let Some(chat) = m.social.chats.get_mut(&contact) else { return };
    let write_height = 44.0;
    let anchor = chat.anchor.take();
    let area = egui::ScrollArea::vertical()
        .id_salt(("chat", contact.0))
        .stick_to_bottom(true)
        .auto_shrink([false, false])
        .max_height((ui.available_height() - write_height).max(80.0))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            if chat.complete {
                ui.label(RichText::new(format!("This is the start of your conversation with {name}.")).weak());
            } else {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(RichText::new("Loading older messages…").weak());
                });
            }
            ui.add_space(6.0);
            for msg in &chat.messages {
                let mine = msg.from == me;
                let r = bubble(ui, mine, &msg.text, &{
                    let time = short_time(&msg.sent_at);
                    match (mine, msg.read) {
                        (true, true) => format!("{time} · read"),
                        (true, false) => format!("{time} · sent"),
                        (false, _) => time,
                    }
                });
                if anchor == Some(msg.id) {
                    // Older messages came in above: the one that was on
                    // top stays where the eye is.
                    ui.scroll_to_rect(r.rect, Some(egui::Align::TOP));
                }
            }
            let mut retry = None;
            for o in &chat.outgoing {
                let status = match &o.failed {
                    None => "sending…".to_owned(),
                    Some(why) => format!("not sent: {why}"),
                };
                bubble(ui, true, &o.text, &status);
                if o.failed.is_some() {
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Min), |ui| {
                        if named_button(ui, online, "Retry", &format!("Retry: {}", o.text)) {
                            retry = Some(o.client_id.clone());
                        }
                    });
                }
            }
            if let Some(id) = retry {
                social(out, SocialIntent::Retry(contact, id));
            }
        });
    // Scrolled to the top (or everything fits): the page before, please.
    let at_top = area.state.offset.y <= 2.0;
    if at_top && chat.opened && !chat.loading && !chat.complete {
        social(out, SocialIntent::LoadOlder(contact));
    }

    ui.add_space(4.0);
    ui.horizontal(|ui| {
        let send_w = 70.0;
        let edit = egui::TextEdit::singleline(&mut chat.draft)
            .id_salt(("draft", contact.0))
            .hint_text(format!("Write to {name}, Enter sends"))
            .desired_width((ui.available_width() - send_w).max(100.0));
        let r = ui.add_enabled(online, edit);
        r.widget_info(|| egui::WidgetInfo::labeled(egui::WidgetType::TextEdit, online, format!("Message to {name}")));
        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if named_button(ui, online, "Send", &format!("Send to {name}")) || (enter && online) {
            social(out, SocialIntent::Send(contact));
            // The line stays ready for the next message.
            r.request_focus();
        }
    });
}

/// One message: mine on the right, theirs on the left, with a small line
/// under it (time, read mark).
fn bubble(ui: &mut egui::Ui, mine: bool, text: &str, small: &str) -> egui::Response {
    let layout = if mine { egui::Layout::top_down(egui::Align::Max) } else { egui::Layout::top_down(egui::Align::Min) };
    let max = ui.available_width() * 0.75;
    ui.with_layout(layout, |ui| {
        let fill = if mine { MINE } else { ui.visuals().faint_bg_color };
        egui::Frame::new().fill(fill).corner_radius(8.0).inner_margin(egui::Margin::symmetric(10, 6)).show(ui, |ui| {
            ui.set_max_width(max);
            let color = if mine { Color32::WHITE } else { ui.visuals().text_color() };
            ui.add(egui::Label::new(RichText::new(text).color(color)).wrap());
        });
        let secondary = super::contacts::secondary_color(ui);
        ui.label(RichText::new(small).size(12.5).color(secondary));
        ui.add_space(4.0);
    })
    .response
}
