//! The call: who, the timer, the code to compare, controls, figures and a
//! live plot. (An incoming call: `incoming`.)

use eframe::egui::{self, Color32, RichText};

use super::{colors, dot, named_button};
use crate::model::{CallPhase, CallView, Intent, Model, clock};

/// A level in dBFS as a bar fraction (-60 dB empty, 0 dB full).
pub(crate) fn level_fraction(db: f32) -> f32 {
    ((db + 60.0) / 60.0).clamp(0.0, 1.0)
}

fn speaking_dot(ui: &mut egui::Ui, speaking: bool) {
    dot(ui, if speaking { colors::ONLINE } else { Color32::from_gray(70) });
}

pub(super) fn view(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>) {
    let invitable: Vec<(babel_proto::UserId, String)> =
        m.invitable().iter().map(|c| (c.user.id, c.user.name.clone())).collect();
    let (mut in_gain, mut out_gain) = (m.settings.input_gain, m.settings.output_gain);
    let Some(call) = m.call.as_ref() else { return };
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        ui.label(RichText::new(&call.title).size(26.0).strong());
        ui.add_space(12.0);
        let status = match call.phase {
            CallPhase::Dialing => "Calling…".to_owned(),
            CallPhase::Ringing => "Ringing…".to_owned(),
            CallPhase::Connecting => "Connecting…".to_owned(),
            CallPhase::Active => clock(call.stats.elapsed),
        };
        ui.label(RichText::new(status).size(26.0).monospace());
    });
    if call.phase == CallPhase::Active {
        let code = if call.stats.sas.is_empty() { "…" } else { call.stats.sas.as_str() };
        ui.horizontal(|ui| {
            ui.label("Security code:");
            ui.label(RichText::new(code).size(20.0).monospace().strong());
        })
        .response
        .on_hover_text("Read the code to each other. If you both see the same code, nobody is listening in.");
    }
    ui.add_space(8.0);

    ui.horizontal(|ui| {
        let mute = if call.muted { "Unmute" } else { "Mute" };
        if ui.add_enabled(call.phase == CallPhase::Active, egui::Button::new(RichText::new(mute).size(16.0))).clicked()
        {
            out.push(Intent::ToggleMute);
        }
        let hang = egui::Button::new(RichText::new("Hang up").size(16.0).color(Color32::WHITE)).fill(colors::ERROR);
        if ui.add(hang).clicked() {
            out.push(Intent::Hangup);
        }
        if !invitable.is_empty() {
            ui.menu_button("Invite…", |ui| {
                for (id, name) in &invitable {
                    if named_button(ui, true, name.as_str(), &format!("Invite {name}")) {
                        out.push(Intent::Invite(*id));
                        ui.close();
                    }
                }
            });
        }
    });
    if call.phase != CallPhase::Active {
        return;
    }
    ui.add_space(8.0);
    ui.columns(2, |cols| {
        participants(&mut cols[0], m.me.as_ref().map_or("You", |u| u.name.as_str()), call);
        let ui = &mut cols[1];
        ui.label(RichText::new("Audio").strong());
        let lvl = if call.muted { 0.0 } else { level_fraction(call.stats.input_level_db) };
        egui::Grid::new("audio").num_columns(2).spacing([12.0, 6.0]).show(ui, |ui| {
            ui.label("Microphone level");
            ui.add(egui::ProgressBar::new(lvl).desired_width(150.0).text(if call.muted { "muted" } else { "" }));
            ui.end_row();
            let l = ui.label("Microphone volume");
            ui.add(egui::Slider::new(&mut in_gain, 0.0..=2.0).show_value(false)).labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Speaker volume");
            ui.add(egui::Slider::new(&mut out_gain, 0.0..=2.0).show_value(false)).labelled_by(l.id);
            ui.end_row();
        });
    });
    if in_gain != m.settings.input_gain {
        out.push(Intent::SetInputGain(in_gain));
    }
    if out_gain != m.settings.output_gain {
        out.push(Intent::SetOutputGain(out_gain));
    }
    ui.add_space(8.0);
    stats(ui, call);
    ui.add_space(6.0);
    plot(ui, call);
}

fn participants(ui: &mut egui::Ui, me: &str, call: &CallView) {
    ui.label(RichText::new("In the call").strong());
    ui.horizontal(|ui| {
        speaking_dot(ui, call.me_speaking());
        ui.label(format!("{me} (you)"));
        if call.muted {
            ui.label(RichText::new("muted").weak());
        } else if call.me_speaking() {
            ui.label(RichText::new("speaking").color(colors::ONLINE));
        }
    });
    for p in &call.participants {
        ui.horizontal(|ui| {
            speaking_dot(ui, p.speaking());
            ui.label(&p.name);
            if p.speaking() {
                ui.label(RichText::new("speaking").color(colors::ONLINE));
            }
        });
    }
}

fn stats(ui: &mut egui::Ui, call: &CallView) {
    let s = &call.stats;
    ui.label(RichText::new("Connection").strong());
    egui::Grid::new("stats").num_columns(2).spacing([24.0, 4.0]).show(ui, |ui| {
        ui.label("Path");
        ui.label(match s.path {
            Some("direct") => "direct (peer to peer)",
            Some("relay") => "through the server's relay",
            Some("channel") => "through the server (TCP)",
            Some(other) => other,
            None => "finding the best path…",
        });
        ui.end_row();
        ui.label("Round trip");
        ui.label(s.rtt_ms.map_or("—".into(), |r| format!("{r} ms")));
        ui.end_row();
        ui.label("Loss");
        ui.label(format!("{:.1} % received, {:.1} % sent", s.rx_loss_pct, s.loss_pct));
        ui.end_row();
        ui.label("Jitter");
        ui.label(format!("{} ms", s.jitter_ms));
        ui.end_row();
        ui.label("Bitrate");
        ui.label(format!("{:.0} kbit/s", f64::from(s.bitrate) / 1000.0));
        ui.end_row();
    });
}

/// Loss (%) and jitter (ms) over the last minute, each scaled to its own
/// maximum (at least 5). The time axis grows with the call from 15 s to a
/// minute, newest on the right.
fn plot(ui: &mut egui::Ui, call: &CallView) {
    let loss_max = call.history.iter().map(|s| s.loss_pct).fold(5.0f32, f32::max);
    let jit_max = call.history.iter().map(|s| s.jitter_ms).fold(5.0f32, f32::max);
    ui.horizontal(|ui| {
        ui.label(RichText::new("Recent:").weak());
        ui.label(RichText::new(format!("loss (0–{loss_max:.0} %)")).color(colors::LOSS));
        ui.label(RichText::new(format!("jitter (0–{jit_max:.0} ms)")).color(colors::JITTER));
    });
    let width = ui.available_width().min(520.0);
    let (rect, _) = ui.allocate_exact_size(egui::vec2(width, 90.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 4.0, ui.visuals().extreme_bg_color);
    let n = call.history.len().clamp(60, crate::model::HISTORY) as f32;
    let line = |f: &dyn Fn(&crate::model::Sample) -> f32, max: f32, color: Color32| {
        let start = n - call.history.len() as f32;
        let pts: Vec<egui::Pos2> = call
            .history
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let x = rect.left() + (start + i as f32) / (n - 1.0) * rect.width();
                let y = rect.bottom() - 4.0 - (f(s) / max).clamp(0.0, 1.0) * (rect.height() - 8.0);
                egui::pos2(x, y)
            })
            .collect();
        if pts.len() >= 2 {
            painter.add(egui::Shape::line(pts, egui::Stroke::new(2.0, color)));
        }
    };
    line(&|s| s.jitter_ms, jit_max, colors::JITTER);
    line(&|s| s.loss_pct, loss_max, colors::LOSS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_bars() {
        assert_eq!(level_fraction(-100.0), 0.0);
        assert_eq!(level_fraction(-30.0), 0.5);
        assert_eq!(level_fraction(3.0), 1.0);
    }
}
