//! The loss plot: train and validation curves drawn into an RGB image (no font: the axes carry
//! tick marks and grid lines; the numbers are in `log.jsonl`).

use std::path::Path;

use vnr_formats::image::{check_pixel_count, ImageF32};

use crate::error::{Result, TrainError};
use crate::log::{LogRecord, Phase};

/// Plot size and style.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotConfig {
    /// Image width in pixels (at least 64; `width · height` at most
    /// [`MAX_PIXELS`](vnr_formats::image::MAX_PIXELS)).
    pub width: usize,
    /// Image height in pixels (at least 64; `width · height` at most
    /// [`MAX_PIXELS`](vnr_formats::image::MAX_PIXELS)).
    pub height: usize,
    /// Logarithmic loss axis (non-positive losses are left out).
    pub log_scale: bool,
}

impl Default for PlotConfig {
    fn default() -> Self {
        Self {
            width: 800,
            height: 500,
            log_scale: false,
        }
    }
}

const MARGIN_LEFT: usize = 40;
const MARGIN_RIGHT: usize = 20;
const MARGIN_TOP: usize = 20;
const MARGIN_BOTTOM: usize = 30;
const TICKS: usize = 5;
const BLACK: [f32; 3] = [0.0, 0.0, 0.0];
const GRID: [f32; 3] = [0.88, 0.88, 0.88];
/// matplotlib's first two default colours, so the plot reads like the originals' TensorBoard/
/// matplotlib curves: train blue, validation orange.
const TRAIN: [f32; 3] = [0.12, 0.47, 0.71];
const VALIDATION: [f32; 3] = [1.0, 0.5, 0.05];

struct Canvas {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, color: [f32; 3]) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let at = (y as usize * self.width + x as usize) * 3;
        if let Some(px) = self.data.get_mut(at..at + 3) {
            px.copy_from_slice(&color);
        }
    }

    /// A line `thickness` pixels wide from `(x0, y0)` to `(x1, y1)` (sampled at every pixel
    /// step along the longer axis).
    fn line(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        color: [f32; 3],
        thickness: i64,
    ) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dx in 0..thickness {
                for dy in 0..thickness {
                    self.put(x.round() as i64 + dx, y.round() as i64 + dy, color);
                }
            }
        }
    }
}

/// Draws train and validation losses of `records` against the step. A size below 64×64 or
/// above [`MAX_PIXELS`](vnr_formats::image::MAX_PIXELS) is [`TrainError::Config`].
pub fn plot_losses(records: &[LogRecord], config: &PlotConfig) -> Result<ImageF32> {
    if config.width < 64 || config.height < 64 {
        return Err(TrainError::Config(format!(
            "plot must be at least 64×64, got {}×{}",
            config.width, config.height
        )));
    }
    // The canvas is allocated below: the image crate's pixel cap keeps it bounded.
    check_pixel_count(config.width, config.height)
        .map_err(|e| TrainError::Config(format!("plot width × height: {e}")))?;
    let value = |loss: f64| -> Option<f64> {
        let v = if config.log_scale { loss.log10() } else { loss };
        v.is_finite().then_some(v)
    };
    let series = |phase: Phase| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter(|r| r.phase == phase)
            .filter_map(|r| value(r.loss).map(|v| (r.step as f64, v)))
            .collect()
    };
    let (train, validation) = (series(Phase::Train), series(Phase::Validation));
    let all = train.iter().chain(&validation);
    let (mut x_min, mut x_max, mut y_min, mut y_max) = all.fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if !x_min.is_finite() {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if config.log_scale {
        // Whole decades, so the grid lines fall on powers of ten.
        y_min = y_min.floor();
        y_max = y_max.ceil();
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    let mut canvas = Canvas {
        width: config.width,
        height: config.height,
        // At most 3·MAX_PIXELS by the check above.
        data: vec![1.0; config.width * config.height * 3],
    };
    let left = MARGIN_LEFT as f64;
    let right = (config.width - MARGIN_RIGHT) as f64;
    let top = MARGIN_TOP as f64;
    let bottom = (config.height - MARGIN_BOTTOM) as f64;
    let to_px = |(x, y): (f64, f64)| {
        (
            left + (x - x_min) / (x_max - x_min) * (right - left),
            bottom - (y - y_min) / (y_max - y_min) * (bottom - top),
        )
    };
    let y_ticks: Vec<f64> = if config.log_scale {
        let decades = (y_max - y_min) as usize;
        (0..=decades).map(|d| y_min + d as f64).collect()
    } else {
        (0..=TICKS)
            .map(|i| y_min + (y_max - y_min) * i as f64 / TICKS as f64)
            .collect()
    };
    for &y in &y_ticks {
        let (_, py) = to_px((x_min, y));
        canvas.line((left, py), (right, py), GRID, 1);
        canvas.line((left - 5.0, py), (left, py), BLACK, 1);
    }
    for i in 0..=TICKS {
        let x = x_min + (x_max - x_min) * i as f64 / TICKS as f64;
        let (px, _) = to_px((x, y_min));
        canvas.line((px, top), (px, bottom), GRID, 1);
        canvas.line((px, bottom), (px, bottom + 5.0), BLACK, 1);
    }
    canvas.line((left, top), (left, bottom), BLACK, 1);
    canvas.line((left, bottom), (right, bottom), BLACK, 1);
    for (points, color) in [(&train, TRAIN), (&validation, VALIDATION)] {
        for pair in points.windows(2) {
            canvas.line(to_px(pair[0]), to_px(pair[1]), color, 2);
        }
        if points.len() == 1 {
            let p = to_px(points[0]);
            canvas.line(p, p, color, 3);
        }
    }
    Ok(ImageF32::new(config.width, config.height, 3, canvas.data)?)
}

/// Draws the plot and writes it as a PNG (atomically).
pub fn write_loss_plot(records: &[LogRecord], config: &PlotConfig, path: &Path) -> Result<()> {
    plot_losses(records, config)?.write_png(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn curves_are_drawn_in_their_colours_inside_the_axes() {
        let records: Vec<LogRecord> = (1..=50u64)
            .map(|s| LogRecord {
                phase: if s % 10 == 0 {
                    Phase::Validation
                } else {
                    Phase::Train
                },
                step: s,
                epoch: 0,
                loss: 10.0 / s as f64,
                metrics: BTreeMap::new(),
                lr: BTreeMap::new(),
                seconds: 0.0,
            })
            .collect();
        for log_scale in [false, true] {
            let config = PlotConfig {
                log_scale,
                ..Default::default()
            };
            let image = plot_losses(&records, &config).unwrap();
            let count = |c: [f32; 3]| image.data.chunks_exact(3).filter(|p| *p == c).count();
            assert!(count(TRAIN) > 200, "train curve missing");
            assert!(count(VALIDATION) > 100, "validation curve missing");
            assert_eq!(image.pixel(MARGIN_LEFT, 100).unwrap(), &BLACK);
            assert_eq!(image.pixel(5, 5).unwrap(), &[1.0, 1.0, 1.0]);
        }
        assert!(plot_losses(&[], &PlotConfig::default()).is_ok());
    }

    #[test]
    fn huge_plots_are_errors_not_overflows() {
        for (width, height) in [
            (1 << 30, 1 << 30),
            (1 << 20, 1 << 20),
            (usize::MAX, usize::MAX),
            (usize::MAX, 64),
        ] {
            let config = PlotConfig {
                width,
                height,
                log_scale: false,
            };
            match plot_losses(&[], &config) {
                Err(TrainError::Config(m)) => assert!(m.contains("plot width × height"), "{m}"),
                other => panic!("{width}×{height}: {other:?}"),
            }
        }
    }
}
