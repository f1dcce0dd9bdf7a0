//! The settings page: devices with a test tone and a microphone check,
//! noise suppression, bitrate and frame size.

use eframe::egui::{self, RichText};

use super::call::level_fraction;
use crate::model::{Intent, Model};
use crate::settings::BITRATES;

fn device_combo(ui: &mut egui::Ui, label: &str, choice: &mut Option<String>, names: &[String]) {
    let shown = choice.clone().unwrap_or_else(|| "System default".into());
    egui::ComboBox::from_label(label).selected_text(shown).width(280.0).show_ui(ui, |ui| {
        ui.selectable_value(choice, None, "System default");
        for n in names {
            ui.selectable_value(choice, Some(n.clone()), n);
        }
    });
}

pub(super) fn page(ui: &mut egui::Ui, m: &mut Model, out: &mut Vec<Intent>) {
    let devices = m.devices.clone();
    let mic_level = m.mic_level;
    let Some(s) = m.editing.as_mut() else { return };
    ui.add_space(8.0);
    ui.heading("Settings");
    ui.add_space(6.0);
    ui.label(RichText::new("Devices").strong());
    if !devices.loaded {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Looking for audio devices…");
        });
    }
    if let Some(e) = &devices.error {
        ui.label(RichText::new(e).color(super::colors::ERROR));
    }
    ui.horizontal(|ui| {
        device_combo(ui, "Microphone", &mut s.input_device, &devices.inputs);
    });
    ui.horizontal(|ui| match mic_level {
        None => {
            if ui.button("Check microphone").clicked() {
                out.push(Intent::MicCheck(true));
            }
        }
        Some(db) => {
            if ui.button("Stop check").clicked() {
                out.push(Intent::MicCheck(false));
            }
            ui.add(egui::ProgressBar::new(level_fraction(db)).desired_width(200.0).text(format!("{db:.0} dB")));
        }
    });
    ui.horizontal(|ui| {
        device_combo(ui, "Speaker", &mut s.output_device, &devices.outputs);
    });
    if ui.button("Play test tone").clicked() {
        out.push(Intent::TestTone);
    }
    ui.label(RichText::new("The check and the tone use the devices last saved.").weak());
    ui.add_space(10.0);
    ui.label(RichText::new("Voice").strong());
    ui.checkbox(&mut s.noise_suppression, "Noise suppression");
    ui.checkbox(&mut s.echo_cancellation, "Echo cancellation")
        .on_hover_text("Removes your loudspeaker's sound from the microphone (from the next call)");
    ui.checkbox(&mut s.auto_gain, "Automatic microphone level").on_hover_text("From the next call");
    ui.checkbox(&mut s.relay_only, "Relay only: hide my address")
        .on_hover_text("Voice goes through the server, never straight to the other side (from the next call)");
    ui.horizontal(|ui| {
        egui::ComboBox::from_label("Bitrate").selected_text(format!("{} kbit/s", s.bitrate / 1000)).show_ui(ui, |ui| {
            for b in BITRATES {
                ui.selectable_value(&mut s.bitrate, b, format!("{} kbit/s", b / 1000));
            }
        });
    });
    ui.horizontal(|ui| {
        ui.label("Frame size");
        ui.radio_value(&mut s.frame_ms, 20, "20 ms");
        ui.radio_value(&mut s.frame_ms, 10, "10 ms (lower latency)");
    });
    ui.label(RichText::new("Devices and frame size apply from the next call.").weak());
    ui.add_space(12.0);
    ui.horizontal(|ui| {
        if ui.button(RichText::new("Save").size(16.0)).clicked() {
            out.push(Intent::SaveSettings);
        }
        if ui.button("Cancel").clicked() {
            out.push(Intent::CloseSettings);
        }
    });
}
