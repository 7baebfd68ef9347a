//! PNG plots of a comparison: latency spectra (W1, W2, W6), query times
//! (W3, W4) and memory against dataset size (W5).
//!
//! Text is drawn with an embedded subset of DejaVu Sans (see
//! assets/LICENSE-DejaVu.txt), so nothing depends on the machine's fonts.

use crate::report::{LoadRecord, Report};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const SANS: &str = "sans-serif";

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

fn server_color(i: usize) -> RGBColor {
    const C: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// Draws every plot into `dir`; returns the files written.
pub fn draw_all(r: &Report, dir: &Path) -> Result<Vec<String>> {
    // Registering twice (a second report in one process) is harmless.
    let _ = plotters::style::register_font(SANS, FontStyle::Normal, FONT);
    let mut files = Vec::new();
    let p = dir.join("latency-w1-w2.png");
    latency_w1_w2(r, &p)?;
    files.push(p.display().to_string());
    let p = dir.join("latency-w6.png");
    latency_w6(r, &p)?;
    files.push(p.display().to_string());
    let p = dir.join("queries-w3-w4.png");
    queries(r, &p)?;
    files.push(p.display().to_string());
    let p = dir.join("memory.png");
    memory(r, &p)?;
    files.push(p.display().to_string());
    Ok(files)
}

/// x position of a percentile on the "nines" scale.
fn nines(p: f64) -> f64 {
    let rest = (1.0 - p / 100.0).max(1e-6);
    (-rest.log10()).clamp(0.0, 4.0)
}

fn nines_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-*x));
    if (*x - x.round()).abs() > 1e-6 {
        return String::new();
    }
    match x.round() as i64 {
        0 => "p0".into(),
        1 => "p90".into(),
        2 => "p99".into(),
        3 => "p99.9".into(),
        4 => "p99.99".into(),
        _ => format!("p{p:.3}"),
    }
}

struct Series<'a> {
    label: String,
    color: RGBColor,
    points: &'a [(f64, f64)],
}

fn spectrum_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    series: &[Series<'_>],
) -> Result<()> {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    if all.is_empty() {
        area.titled(&format!("{title}: no data"), (SANS, 16))
            .map_err(pe)?;
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (SANS, 17))
        .margin(8)
        .margin_right(28)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, (lo..hi).log_scale())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&nines_label)
        .y_labels(8)
        .light_line_style(RGBColor(238, 238, 238))
        .y_desc("latency (µs)")
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style((SANS, 13))
        .axis_desc_style((SANS, 13))
        .draw()
        .map_err(pe)?;
    for s in series {
        let color = s.color;
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(p, v)| (nines(p), v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(pe)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((SANS, 13))
        .draw()
        .map_err(pe)?;
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn loads<'a>(r: &'a Report, section: &str, config: &str) -> Vec<&'a LoadRecord> {
    r.loads
        .iter()
        .filter(|l| l.section == section && l.config == config)
        .collect()
}

fn latency_w1_w2(r: &Report, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1600, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let (top, body) = root.split_vertically(40);
    top.titled(
        &format!(
            "Latency by percentile, {} connections (W1 mark_event; W2 point ops at pipeline 1 and 16)",
            r.meta.connections
        ),
        (SANS, 20),
    )
    .map_err(pe)?;
    let panels = body.split_evenly((2, 4));
    let mut configs: Vec<(String, String, String)> = vec![(
        "W1".into(),
        "mark_event".into(),
        "W1 mark_event (MULTI/EXEC)".into(),
    )];
    for cmd in ["SETBIT", "GETBIT", "BITCOUNT"] {
        for p in [1, 16] {
            configs.push((
                "W2".into(),
                format!("{cmd} P{p}"),
                format!("W2 {cmd}, pipeline {p}"),
            ));
        }
    }
    for (panel, (section, config, title)) in panels.iter().zip(&configs) {
        let recs = loads(r, section, config);
        let series: Vec<Series<'_>> = recs
            .iter()
            .map(|l| Series {
                label: format!("{} ({})", l.server, fmt_num(l.ops_per_sec) + "/s"),
                color: server_color(r.servers.iter().position(|s| *s == l.server).unwrap_or(0)),
                points: &l.latency.spectrum,
            })
            .collect();
        spectrum_panel(panel, title, &series)?;
    }
    if let Some(last) = panels.get(7) {
        let style = TextStyle::from((SANS, 15).into_font()).color(&BLACK);
        let lines = [
            "Each line: latency at each percentile".to_string(),
            "(x: p0 .. p99.99 on a log scale of nines).".to_string(),
            "Legend: server (median throughput).".to_string(),
            format!(
                "{} s per run, {} round(s),",
                r.meta.duration_s, r.meta.rounds
            ),
            "servers alternating.".to_string(),
            format!("Dataset {}", r.meta.dataset.label()),
        ];
        for (i, l) in lines.iter().enumerate() {
            last.draw_text(l, &style, (20, 40 + 24 * i as i32))
                .map_err(pe)?;
        }
    }
    root.present().map_err(pe)?;
    Ok(())
}

fn latency_w6(r: &Report, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let (top, body) = root.split_vertically(40);
    top.titled(
        "W6: point-op latency idle, during checkpoints (BGSAVE) and during SIGUSR1 backups (large cache: --cache-size 1GiB)",
        (SANS, 20),
    )
    .map_err(pe)?;
    // Only servers W6 ran on (not those of W1 and W2 alone).
    let servers: Vec<&String> = r
        .servers
        .iter()
        .filter(|s| r.loads.iter().any(|l| l.section == "W6" && &l.server == *s))
        .collect();
    let n = servers.len().clamp(1, 4);
    let panels = body.split_evenly((1, n));
    let phase_colors = [
        ("idle", RGBColor(80, 80, 80)),
        ("during checkpoint", RGBColor(214, 39, 40)),
        ("during backup", RGBColor(255, 127, 14)),
        ("idle, large cache", RGBColor(31, 119, 180)),
        ("during checkpoint, large cache", RGBColor(148, 103, 189)),
    ];
    for (panel, server) in panels.iter().zip(servers) {
        let series: Vec<Series<'_>> = phase_colors
            .iter()
            .filter_map(|(phase, color)| {
                r.loads
                    .iter()
                    .find(|l| l.section == "W6" && l.config == *phase && &l.server == server)
                    .filter(|l| l.latency.count > 0)
                    .map(|l| Series {
                        label: format!("{phase} (p99 {} µs)", fmt_num(l.latency.p99_us)),
                        color: *color,
                        points: &l.latency.spectrum,
                    })
            })
            .collect();
        spectrum_panel(panel, server, &series)?;
    }
    root.present().map_err(pe)?;
    Ok(())
}

fn queries(r: &Report, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1500, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    let mut names: Vec<&str> = Vec::new();
    for q in &r.queries {
        if !names.contains(&q.query.as_str()) {
            names.push(&q.query);
        }
    }
    // Bars: each server warm (W3), and cold first touch (W4) where measured.
    struct Bar {
        label: String,
        color: RGBColor,
        values: Vec<Option<f64>>,
    }
    let mut bars: Vec<Bar> = Vec::new();
    for (i, s) in r.servers.iter().enumerate() {
        let warm: Vec<Option<f64>> = names
            .iter()
            .map(|n| {
                r.queries
                    .iter()
                    .find(|q| q.section == "W3" && q.query == *n && &q.server == s)
                    .map(|q| q.p50_ms)
            })
            .collect();
        bars.push(Bar {
            label: format!("{s}, warm (W3 median)"),
            color: server_color(i),
            values: warm,
        });
        let cold: Vec<Option<f64>> = names
            .iter()
            .map(|n| {
                r.rows
                    .iter()
                    .find(|row| {
                        row.section == "W4" && row.metric.starts_with(&format!("{n}, cold"))
                    })
                    .and_then(|row| row.values.get(s).copied().flatten())
            })
            .collect();
        if i != 1 && cold.iter().any(Option::is_some) {
            let c = server_color(i);
            bars.push(Bar {
                label: format!("{s}, cold first touch (W4)"),
                color: RGBColor(c.0 / 2 + 110, c.1 / 2 + 110, c.2 / 2 + 110),
                values: cold,
            });
        }
    }
    let all: Vec<f64> = bars
        .iter()
        .flat_map(|b| b.values.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    if all.is_empty() {
        root.titled("W3/W4: no query data", (SANS, 20))
            .map_err(pe)?;
        root.present().map_err(pe)?;
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min) / 2.0;
    let hi = all.iter().copied().fold(0.0, f64::max) * 3.0;
    let n = names.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "W3/W4: analytics query time (ms, log scale), dataset {}",
                r.meta.dataset.label()
            ),
            (SANS, 20),
        )
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
        .map_err(pe)?;
    let short: Vec<String> = names.iter().map(|n| short_query(n)).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(names.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - (i as f64 + 0.5)).abs() < 0.01 {
                short.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("milliseconds")
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style((SANS, 13))
        .axis_desc_style((SANS, 14))
        .draw()
        .map_err(pe)?;
    let width = 0.8 / bars.len() as f64;
    for (j, b) in bars.iter().enumerate() {
        let color = b.color;
        let rects: Vec<Rectangle<(f64, f64)>> = b
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let v = (*v)?;
                let x0 = i as f64 + 0.1 + width * j as f64;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + width * 0.92, v)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(pe)?
            .label(b.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((SANS, 14))
        .draw()
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}

fn short_query(q: &str) -> String {
    q.replace("BITOP AND of a week's 7 day keys", "AND 7 days")
        .replace("BITOP OR of a week's 7 day keys", "OR 7 days")
        .replace("BITOP AND of 2 month keys", "AND 2 months")
        .replace("BITOP OR of 2 month keys", "OR 2 months")
        .replace("BITCOUNT key 0 -1 of every key", "BITCOUNT 0 -1 all")
        .replace("BITCOUNT every key", "BITCOUNT all")
        .replace("GET a month key", "GET month")
}

fn memory(r: &Report, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(pe)?;
    type Pick = fn(&crate::report::MemoryPoint) -> Option<u64>;
    let lines: Vec<(String, RGBColor, Pick, usize)> = {
        let mut v: Vec<(String, RGBColor, Pick, usize)> = Vec::new();
        for (i, s) in r.servers.iter().enumerate() {
            let c = server_color(i);
            if i == 1 {
                v.push((format!("{s}: used_memory"), c, |p| p.used_memory, i));
                v.push((
                    format!("{s}: RSS after load"),
                    RGBColor(240, 140, 140),
                    |p| p.rss_after_load,
                    i,
                ));
            } else {
                v.push((format!("{s}: RSS after load"), c, |p| p.rss_after_load, i));
                v.push((
                    format!("{s}: RSS after open (cold)"),
                    RGBColor(150, 190, 230),
                    |p| p.rss_after_open,
                    i,
                ));
                v.push((
                    format!("{s}: RSS after touching every key"),
                    RGBColor(20, 60, 120),
                    |p| p.rss_after_touch,
                    i,
                ));
                v.push((
                    format!("{s}: database on disk"),
                    RGBColor(120, 120, 120),
                    |p| p.db_bytes,
                    i,
                ));
            }
        }
        v
    };
    let mut all = Vec::new();
    let mut xmax: f64 = 0.0;
    for p in &r.memory {
        xmax = xmax.max(p.bits as f64 / 1e6);
        for (_, _, pick, _) in &lines {
            if let Some(b) = pick(p) {
                all.push(b as f64 / 1e6);
            }
        }
    }
    if all.is_empty() {
        root.titled("W5: no memory data", (SANS, 20)).map_err(pe)?;
        root.present().map_err(pe)?;
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(0.1) / 1.5;
    // Room above the highest line for the legend.
    let hi = all.iter().copied().fold(0.0, f64::max) * 20.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "W5: memory against dataset size (analytics dataset, fewer or more days)",
            (SANS, 20),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax * 1.05, (lo..hi).log_scale())
        .map_err(pe)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_desc("set bits in the dataset (millions)")
        .y_desc("MB (log scale)")
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style((SANS, 13))
        .axis_desc_style((SANS, 14))
        .draw()
        .map_err(pe)?;
    for (label, color, pick, si) in &lines {
        let server = &r.servers[*si];
        let mut pts: Vec<(f64, f64)> = r
            .memory
            .iter()
            .filter(|p| &p.server == server)
            .filter_map(|p| pick(p).map(|b| (p.bits as f64 / 1e6, b as f64 / 1e6)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(pe)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(pe)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((SANS, 14))
        .draw()
        .map_err(pe)?;
    root.present().map_err(pe)?;
    Ok(())
}
