//! Reports: a plain-text summary table, JSON, and PNG plots (loss and accuracy vs step,
//! ε vs step, confusion matrix).
//!
//! Plots are drawn by `plotters` into an in-memory RGB buffer and written with the `png`
//! crate; text uses the bundled DejaVu Sans (`assets/README.md`), so no system font
//! library is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{ClientError, Result};
use crate::store::StepRecord;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn plot_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Image(format!("plot: {e}"))
}

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(plot_err("the bundled font could not be loaded"))
    }
}

/// A two-column table, aligned for a terminal.
#[must_use]
pub fn table(title: &str, rows: &[(&str, String)]) -> String {
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let v = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .max()
        .unwrap_or(0);
    let rule = format!("+{}+{}+\n", "-".repeat(w + 2), "-".repeat(v + 2));
    let mut out = format!("{title}\n{rule}");
    for (k, val) in rows {
        out.push_str(&format!("| {k:<w$} | {val:>v$} |\n"));
    }
    out.push_str(&rule);
    out
}

/// `matrix[true][predicted]` counts.
#[must_use]
pub fn confusion_matrix(labels: &[u8], predicted: &[usize], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for (&l, &p) in labels.iter().zip(predicted) {
        if let Some(cell) = m.get_mut(usize::from(l)).and_then(|row| row.get_mut(p)) {
            *cell += 1;
        }
    }
    m
}

/// The confusion matrix as text rows (true class down, predicted across).
#[must_use]
pub fn confusion_text(m: &[Vec<u64>]) -> String {
    let mut out = String::from("true\\pred");
    for j in 0..m.len() {
        out.push_str(&format!("{j:>6}"));
    }
    out.push('\n');
    for (i, row) in m.iter().enumerate() {
        out.push_str(&format!("{i:>9}"));
        for c in row {
            out.push_str(&format!("{c:>6}"));
        }
        out.push('\n');
    }
    out
}

const W: u32 = 900;
const H: u32 = 540;

/// Renders into an RGB buffer with `draw`, then writes `path` as PNG.
fn render<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
{
    ensure_font()?;
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    crate::image::write_png(
        path,
        size.0 as usize,
        size.1 as usize,
        png::ColorType::Rgb,
        &buf,
    )
}

fn range(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if floor_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    (lo, hi + 0.05 * (hi - lo))
}

/// One line of a line plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
}

/// A line plot of `series` against a shared x axis.
///
/// # Errors
/// [`ClientError::Image`], [`ClientError::Io`].
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let xs = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let ys = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    );
    render(path, (W, H), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN];
        for (i, s) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// A heat map of `m` with the count in each cell.
///
/// # Errors
/// [`ClientError::Image`], [`ClientError::Io`].
pub fn confusion_plot(path: &Path, title: &str, m: &[Vec<u64>]) -> Result<()> {
    let n = m.len().max(1);
    let max = m.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let top = n as f64 - 0.5;
    render(path, (640, 640), |root| {
        // Integer coordinates are cell centres; class 0 is the top row, as a matrix reads.
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5..top, -0.5..top)
            .map_err(plot_err)?;
        let class = |v: f64| v.round() as usize;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&|v| class(*v).to_string())
            .y_label_formatter(&|v| (n - 1).saturating_sub(class(*v)).to_string())
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        for (i, row) in m.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            for (j, &c) in row.iter().enumerate() {
                let x = j as f64;
                let t = (c as f64 / max).sqrt();
                let shade = (255.0 * (1.0 - t)) as u8;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        RGBColor(shade, shade, 255).filled(),
                    )))
                    .map_err(plot_err)?;
                let text_color = if t > 0.6 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        c.to_string(),
                        (x - 0.3, y + 0.2),
                        ("sans-serif", 14).into_font().color(&text_color),
                    )))
                    .map_err(plot_err)?;
            }
        }
        Ok(())
    })
}

/// Writes `training_loss_accuracy.png` and `training_epsilon.png` into `dir` from the
/// step history; returns their paths.
///
/// # Errors
/// [`ClientError::Image`], [`ClientError::Io`].
pub fn training_plots(dir: &Path, history: &[StepRecord]) -> Result<Vec<PathBuf>> {
    let step = |r: &StepRecord| (r.step + 1) as f64;
    let loss = dir.join("training_loss_accuracy.png");
    line_plot(
        &loss,
        "Private training: batch loss and accuracy (before each update)",
        "step",
        "loss / accuracy",
        &[
            Series {
                label: "mean loss".into(),
                points: history.iter().map(|r| (step(r), r.loss)).collect(),
            },
            Series {
                label: "batch accuracy".into(),
                points: history.iter().map(|r| (step(r), r.accuracy)).collect(),
            },
        ],
    )?;
    let eps = dir.join("training_epsilon.png");
    line_plot(
        &eps,
        "Privacy spent (RDP accountant)",
        "step",
        "epsilon",
        &[Series {
            label: "epsilon spent".into(),
            points: history.iter().map(|r| (step(r), r.epsilon)).collect(),
        }],
    )?;
    Ok(vec![loss, eps])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_png_files() {
        let tmp = tempfile::tempdir().unwrap();
        let history: Vec<StepRecord> = (0..5)
            .map(|i| StepRecord {
                step: i,
                batch_size: 10,
                loss: 2.0 / (i + 1) as f64,
                accuracy: 0.1 * i as f64,
                epsilon: 0.3 * i as f64,
                seconds: 1.0,
                bytes_up: 1,
                bytes_down: 2,
            })
            .collect();
        let files = training_plots(tmp.path(), &history).unwrap();
        let m = confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
        assert_eq!(m, vec![vec![1, 0, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        let cm = tmp.path().join("cm.png");
        confusion_plot(&cm, "test", &m).unwrap();
        for f in files.iter().chain([&cm]) {
            let img = crate::image::read(f).unwrap();
            assert!(img.width >= 600);
            // Something besides the white background was drawn.
            assert!(img.pixels.iter().any(|&p| p < 0.5));
        }
        assert!(table("t", &[("a", "1".into())]).contains("| a | 1 |"));
        assert!(confusion_text(&m).lines().count() == 4);
    }
}
