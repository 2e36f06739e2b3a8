//! One PNG per scenario: grouped bars (one group per case, one bar per mode) at the median,
//! with a line from the smallest to the largest repetition. Text is drawn with DejaVu Sans
//! (Debian's fonts-dejavu-core, installed by `cargo xtask setup`) through ab_glyph.
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Scenario;

/// The font file.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core: cargo xtask setup)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT} is not a usable font"))
    })
    .clone()
}

/// Draws `s` into `path`.
pub fn scenario(s: &Scenario, path: &Path) -> Result<(), String> {
    register_font()?;
    draw(s, path).map_err(|e| e.to_string())
}

fn draw(s: &Scenario, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cases = s.cases();
    let modes = s.modes();
    let n = cases.len().max(1);
    let ymax = s
        .figures
        .iter()
        .map(|f| f.summary.max.max(f.summary.median))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.2;
    let root = BitMapBackend::new(path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match &s.baseline {
        Some(b) => format!("{} — ratio to {b} in labels", s.title),
        None => s.title.clone(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)?;
    let labels = cases.clone();
    let fmt = move |x: &f64| {
        let i = (x - 0.5).round();
        if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&fmt)
        .y_desc(s.unit.as_str())
        .label_style(("sans-serif", 15))
        .draw()?;
    let width = 0.8 / modes.len().max(1) as f64;
    for (mi, mode) in modes.iter().enumerate() {
        let color = Palette99::pick(mi).to_rgba();
        let bars: Vec<(f64, f64, f64, f64, Option<f64>)> = cases
            .iter()
            .enumerate()
            .filter_map(|(ci, c)| {
                s.get(mode, c).map(|f| {
                    (
                        ci as f64 + 0.1 + mi as f64 * width,
                        f.summary.median,
                        f.summary.min,
                        f.summary.max,
                        f.ratio,
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x, m, _, _, _)| {
                Rectangle::new([(*x, 0.0), (*x + width * 0.9, *m)], color.filled())
            }))?
            .label(mode.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        chart.draw_series(bars.iter().map(|(x, _, lo, hi, _)| {
            let c = *x + width * 0.45;
            PathElement::new(vec![(c, *lo), (c, *hi)], BLACK.stroke_width(2))
        }))?;
        chart.draw_series(bars.iter().filter_map(|(x, m, _, _, r)| {
            r.map(|r| {
                Text::new(
                    format!("{r:.2}"),
                    (*x, *m + ymax * 0.01),
                    ("sans-serif", 13).into_font(),
                )
            })
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    #[test]
    fn draws_a_png_with_every_mode() {
        if !Path::new(FONT).exists() {
            eprintln!("skipping: {FONT} missing (cargo xtask setup installs it)");
            return;
        }
        let mut s = Scenario::new("t", "Test", "Gbit/s", Better::Higher, Some("direct"));
        s.add("direct", "same node", &[10.0, 11.0, 9.0]);
        s.add("switchyard", "same node", &[9.5, 9.0, 10.0]);
        s.add("direct", "cross node", &[5.0, 5.5, 4.5]);
        s.compute_ratios();
        let dir = std::env::temp_dir().join(format!("sy-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.png");
        scenario(&s, &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
