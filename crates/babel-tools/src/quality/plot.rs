//! The figure: MOS against loss, one line per receiver, random loss solid,
//! bursty loss dashed, the codec alone as the ceiling. Drawn with plotters
//! into a PNG; the labels use a TrueType font read from the system
//! (`scripts/setup.sh` installs it), so no font service is needed.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::{Report, Scored, deps, mean_mos};

/// Draws `r` into `path` (PNG, 1000×640).
pub fn draw(r: &Report, path: &Path) -> anyhow::Result<()> {
    let font = deps::require_font()?;
    let bytes = std::fs::read(font).with_context(|| format!("cannot read {font}"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{font}: not a usable font"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let e = |e: &dyn std::fmt::Display| anyhow!("plot: {e}");
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let max_loss = r.rows.iter().map(|x| x.network.loss_pct).fold(0.0, f64::max).max(5.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Babel voice quality under loss (PESQ-WB, Opus {} kbit/s, {} ms frames)",
                r.bitrate / 1000,
                r.frame_ms
            ),
            ("sans-serif", 22),
        )
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..max_loss + 1.0, 1.0f64..4.7f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("packet loss each way (%), with 30 ms jitter")
        .y_desc("MOS-LQO (PESQ wideband)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|x| e(&x))?;

    let grey = RGBColor(110, 110, 110);
    chart
        .draw_series(LineSeries::new([(-0.5, r.codec_mos), (max_loss + 1.0, r.codec_mos)], grey.stroke_width(2)))
        .map_err(|x| e(&x))?
        .label(format!("codec alone, no network ({:.2})", r.codec_mos))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(2)));

    type Pick = fn(&super::Row) -> &Vec<Scored>;
    let series: [(&str, Pick, RGBColor); 3] = [
        ("Babel (FEC, copies, adaptive jitter buffer)", |row| &row.babel, RGBColor(31, 90, 200)),
        ("naive receiver (no FEC, no copies, 1-frame buffer)", |row| &row.naive, RGBColor(210, 50, 40)),
        ("codec + same loss and repairs, ideal receiver", |row| &row.codec_loss, RGBColor(40, 150, 60)),
    ];
    for (name, pick, color) in series {
        for bursty in [false, true] {
            let mut pts: Vec<(f64, f64)> = r
                .rows
                .iter()
                .filter(|row| row.network.bursty == bursty && row.network.jitter_ms > 0)
                .filter_map(|row| mean_mos(pick(row)).map(|m| (row.network.loss_pct, m)))
                .collect();
            if bursty {
                // Bursty rows have no 0 % point of their own: share random's.
                if let Some(p) = r
                    .rows
                    .iter()
                    .find(|row| row.network.loss_pct == 0.0 && row.network.jitter_ms > 0)
                    .and_then(|row| mean_mos(pick(row)))
                {
                    pts.insert(0, (0.0, p));
                }
            }
            if pts.is_empty() || (bursty && pts.len() < 2) {
                continue;
            }
            let label = format!("{name}, {}", if bursty { "bursty loss" } else { "random loss" });
            if bursty {
                chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 8, y), (x + 13, y), (x + 24, y)], color.stroke_width(1))
                    });
                chart
                    .draw_series(pts.iter().skip(1).map(|&(x, y)| TriangleMarker::new((x, y), 7, color.filled())))
                    .map_err(|x| e(&x))?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
                    .map_err(|x| e(&x))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
                chart
                    .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 5, color.filled())))
                    .map_err(|x| e(&x))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::Coordinate(330, 235))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
