//! Percentiles, the stdout table, and the latency plot (hand-written SVG: empirical CDFs of
//! crisp against the floor, so a reader sees the whole distribution, not three numbers).

use std::fmt::Write as _;

use serde_json::{json, Value};

/// Latency samples in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: std::time::Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Nearest-rank percentile; NaN when empty.
    pub fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.0.len(),
            "p50_ms": round3(self.pct(50.0)),
            "p90_ms": round3(self.pct(90.0)),
            "p99_ms": round3(self.pct(99.0)),
            "max_ms": round3(self.pct(100.0)),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A plain text table with right-aligned numeric columns.
pub struct Table {
    title: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, head: &[&str]) -> Table {
        Table {
            title: title.into(),
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.head.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let mut s = String::from(" ");
            for (i, c) in r.iter().enumerate().take(cols) {
                if i == 0 {
                    let _ = write!(s, " {:<w$}", c, w = width[i]);
                } else {
                    let _ = write!(s, "  {:>w$}", c, w = width[i]);
                }
            }
            s.push('\n');
            s
        };
        let mut out = format!("\n{}\n", self.title);
        out.push_str(&line(&self.head));
        let total: usize = width.iter().sum::<usize>() + 2 * cols + 1;
        out.push_str(&format!("  {}\n", "-".repeat(total.saturating_sub(2))));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

pub fn ms(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x.abs() < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

/// One panel of the plot: a title and named series.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, &'a Samples, &'a str)>,
}

/// Empirical CDFs, one panel per operation, x in ms (linear, clipped at the largest p99
/// times 1.25 so one outlier does not squash the rest; the clip is written on the axis).
/// Over 80 lines because it writes one SVG document top to bottom: frame, axes, curves, legend.
pub fn cdf_svg(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let (pw, ph) = (460.0, 300.0);
    let (ml, mr, mt, mb) = (58.0, 16.0, 34.0, 46.0);
    let width = pw * panels.len() as f64;
    let height = ph + 56.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"
     viewBox="0 0 {width} {height}"
     font-family="DejaVu Sans, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="20" font-size="15" font-weight="bold">{}</text>
<text x="12" y="38" fill="#444">{}</text>
"##,
        esc(title),
        esc(subtitle)
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = i as f64 * pw;
        let y0 = 56.0;
        let (left, top) = (x0 + ml, y0 + mt);
        let (w, h) = (pw - ml - mr, ph - mt - mb);
        let xmax = panel
            .series
            .iter()
            .map(|(_, s, _)| s.pct(99.0))
            .fold(0.0_f64, f64::max)
            * 1.25;
        let xmax = nice_ceil(xmax.max(0.001));
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>
<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>
"##,
            left,
            top - 10.0,
            esc(panel.title)
        );
        for k in 0..=5 {
            let fx = k as f64 / 5.0;
            let gx = left + fx * w;
            let gy = top + h - fx * h;
            let _ = write!(
                s,
                r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{}" stroke="#eee"/>
<text x="{gx:.1}" y="{}" text-anchor="middle">{}</text>
<line x1="{left}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#eee"/>
<text x="{}" y="{:.1}" text-anchor="end">{:.1}</text>
"##,
                top + h,
                top + h + 16.0,
                trim_num(fx * xmax),
                left + w,
                left - 6.0,
                gy + 4.0,
                fx
            );
        }
        let _ = write!(
            s,
            r##"<text x="{}" y="{}"
      text-anchor="middle">latency, ms (axis ends at 1.25 × the largest p99)</text>
<text x="{}" y="{}" text-anchor="middle"
      transform="rotate(-90 {} {})">fraction of calls ≤ x</text>
"##,
            left + w / 2.0,
            top + h + 34.0,
            x0 + 16.0,
            top + h / 2.0,
            x0 + 16.0,
            top + h / 2.0
        );
        for (j, (name, samples, color)) in panel.series.iter().enumerate() {
            let v = samples.sorted();
            let n = v.len().max(1) as f64;
            let mut path = String::new();
            for (k, x) in v.iter().enumerate() {
                let px = left + (x / xmax).min(1.0) * w;
                let py_prev = top + h - (k as f64 / n) * h;
                let py = top + h - ((k + 1) as f64 / n) * h;
                let _ = write!(
                    path,
                    "{}{px:.1},{py_prev:.1} L{px:.1},{py:.1} ",
                    if k == 0 { "M" } else { "L" }
                );
            }
            let p50 = samples.pct(50.0);
            let lx = left + 10.0;
            let ly = top + h - 16.0 - 16.0 * j as f64;
            let _ = write!(
                s,
                r##"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>
<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>
<text x="{}" y="{}">{} (p50 {} ms, p99 {} ms)</text>
"##,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                esc(name),
                ms(p50),
                ms(samples.pct(99.0)),
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceil(x: f64) -> f64 {
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

fn trim_num(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
