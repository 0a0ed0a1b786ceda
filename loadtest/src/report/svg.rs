//! A small SVG chart library for the report: line charts over the seconds of the measured
//! phase (a shaded fault window) and grouped bar charts with 95 % whiskers; one colour per
//! profile. Written as text, no dependency.

use std::fmt::Write as _;

use super::record::FaultWindow;

pub(super) const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub(super) const WIDTH: f64 = 760.0;
pub(super) const HEIGHT: f64 = 380.0;
pub(super) const LEFT: f64 = 64.0;
pub(super) const RIGHT: f64 = 190.0;
pub(super) const TOP: f64 = 40.0;
pub(super) const BOTTOM: f64 = 56.0;

pub(super) fn colour(profiles: &[String], profile: &str) -> &'static str {
    let i = profiles.iter().position(|p| p == profile).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

pub(super) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// A round axis maximum and tick step for data up to `max` (steps of 1, 2 or 5 × 10^k).
pub(super) fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

pub(super) fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

pub(super) struct Frame {
    pub(super) x_max: f64,
    pub(super) y_max: f64,
}

impl Frame {
    pub(super) fn plot_w() -> f64 {
        WIDTH - LEFT - RIGHT
    }
    fn plot_h() -> f64 {
        HEIGHT - TOP - BOTTOM
    }
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * Self::plot_w()
    }
    fn y(&self, v: f64) -> f64 {
        TOP + Self::plot_h() - v.min(self.y_max) / self.y_max * Self::plot_h()
    }
}

pub(super) fn svg_open(title: &str) -> String {
    svg_document(title, WIDTH, HEIGHT, LEFT + Frame::plot_w() / 2.0)
}

/// The start of an SVG document of `width` x `height`: white background, `title` as its
/// `<title>` and centred at `title_x` on top. The caller closes it with `</svg>`.
pub(super) fn svg_document(title: &str, width: f64, height: f64, title_x: f64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>{}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         <text x=\"{title_x:.1}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        xml(title),
        xml(title)
    );
    o
}

/// Y axis with ticks and grid lines, the axis label, and the X axis line.
pub(super) fn y_axis(o: &mut String, frame: &Frame, step: f64, label: &str) {
    let mut v = 0.0;
    while v <= frame.y_max + step * 1e-9 {
        let y = frame.y(v);
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + Frame::plot_w(),
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
        v += step;
    }
    let mid = TOP + Frame::plot_h() / 2.0;
    let _ = writeln!(
        o,
        "<text x=\"16\" y=\"{mid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {mid:.1})\">{}</text>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#000000\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000000\"/>",
        xml(label),
        TOP + Frame::plot_h(),
        TOP + Frame::plot_h(),
        LEFT + Frame::plot_w(),
        TOP + Frame::plot_h()
    );
}

pub(super) fn legend(o: &mut String, entries: &[(String, &str)]) {
    let x = WIDTH - RIGHT + 16.0;
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = TOP + 8.0 + i as f64 * 20.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 9.0,
            x + 20.0,
            xml(name)
        );
    }
}

pub(super) struct Series {
    pub(super) name: String,
    pub(super) colour: &'static str,
    pub(super) points: Vec<(f64, f64)>,
}

/// Lines over time; a gap in the seconds breaks a line rather than bridging it.
pub(super) fn line_chart(
    title: &str,
    y_label: &str,
    series: &[Series],
    y_max: Option<f64>,
    shade: Option<FaultWindow>,
) -> String {
    let last_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0 + 1.0))
        .chain(shade.map(|w| w.end_s))
        .fold(1.0, f64::max);
    let data_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_top, y_step) = nice_axis(y_max.unwrap_or(data_max));
    let (x_top, x_step) = nice_axis(last_x);
    let frame = Frame {
        x_max: x_top,
        y_max: y_top,
    };
    let mut o = svg_open(title);
    if let Some(w) = shade {
        let (x0, x1) = (frame.x(w.start_s.max(0.0)), frame.x(w.end_s.min(x_top)));
        let _ = writeln!(
            o,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#999999\" \
             fill-opacity=\"0.25\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#555555\">fault</text>",
            (x1 - x0).max(0.0),
            Frame::plot_h(),
            (x0 + x1) / 2.0,
            TOP + 14.0
        );
    }
    y_axis(&mut o, &frame, y_step, y_label);
    let mut v = 0.0;
    while v <= x_top + x_step * 1e-9 {
        let x = frame.x(v);
        let base = TOP + Frame::plot_h();
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{base:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#000000\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            base + 5.0,
            base + 18.0,
            tick_label(v, x_step)
        );
        v += x_step;
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds of the measured phase (mean over trials)</text>",
        LEFT + Frame::plot_w() / 2.0,
        HEIGHT - 12.0
    );
    for s in series {
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut previous: Option<f64> = None;
        for &(t, v) in &s.points {
            // Each point sits at the middle of its one-second window.
            let p = (frame.x(t + 0.5), frame.y(v));
            match segments.last_mut() {
                Some(seg) if previous == Some(t - 1.0) => seg.push(p),
                _ => segments.push(vec![p]),
            }
            previous = Some(t);
        }
        for seg in segments {
            if let [(x, y)] = seg[..] {
                // A lone second: a dot, since a one-point line draws nothing.
                let _ = writeln!(
                    o,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    s.colour
                );
                continue;
            }
            let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                o,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"><title>{}</title></polyline>",
                s.colour,
                pts.join(" "),
                xml(&s.name)
            );
        }
    }
    let entries: Vec<(String, &str)> = series.iter().map(|s| (s.name.clone(), s.colour)).collect();
    legend(&mut o, &entries);
    o.push_str("</svg>\n");
    o
}

pub(super) struct Bar {
    pub(super) colour: &'static str,
    /// The bar's height; `None` draws "n/a".
    pub(super) value: Option<f64>,
    pub(super) half_width: Option<f64>,
    /// Drawn hatched to the top of the axis with this label instead of a value.
    pub(super) hatched: Option<String>,
}

/// Grouped bars; each group's bars in legend order; whiskers show the 95 % CI.
pub(super) fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<Bar>)],
    legend_entries: &[(String, &str)],
    y_floor: f64,
    reference: Option<(f64, &str)>,
) -> String {
    let data_max = groups
        .iter()
        .flat_map(|(_, bars)| bars)
        .filter_map(|b| b.value.map(|v| v + b.half_width.unwrap_or(0.0)))
        .fold(y_floor, f64::max);
    let (y_top, y_step) = nice_axis(data_max * 1.05);
    let frame = Frame {
        x_max: 1.0,
        y_max: y_top,
    };
    let mut o = svg_open(title);
    let _ = writeln!(
        o,
        "<defs><pattern id=\"hatch\" patternUnits=\"userSpaceOnUse\" width=\"8\" height=\"8\" \
         patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#ffffff\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" stroke=\"#999999\" stroke-width=\"2\"/>\
         </pattern></defs>"
    );
    y_axis(&mut o, &frame, y_step, y_label);
    let base = TOP + Frame::plot_h();
    let mid = TOP + Frame::plot_h() / 2.0;
    let group_w = Frame::plot_w() / groups.len().max(1) as f64;
    for (g, (label, bars)) in groups.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w;
        let bar_w = ((group_w * 0.8) / bars.len().max(1) as f64).min(56.0);
        let first_x = gx + (group_w - bar_w * bars.len() as f64) / 2.0;
        for (b, bar) in bars.iter().enumerate() {
            let x = first_x + b as f64 * bar_w;
            let w = bar_w * 0.9;
            let cx = x + w / 2.0;
            if let Some(text) = &bar.hatched {
                // Not a number: a hatched bar to the top of the axis, labelled.
                let _ = writeln!(
                    o,
                    "<rect x=\"{x:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{:.1}\" \
                     fill=\"url(#hatch)\" stroke=\"{}\" stroke-width=\"2\"/>\n\
                     <text x=\"{cx:.1}\" y=\"{mid:.1}\" text-anchor=\"middle\" \
                     dominant-baseline=\"middle\" font-size=\"11\" font-weight=\"bold\" \
                     stroke=\"#ffffff\" stroke-width=\"4\" paint-order=\"stroke\" \
                     transform=\"rotate(-90 {cx:.1} {mid:.1})\">{}</text>",
                    Frame::plot_h(),
                    bar.colour,
                    xml(text)
                );
                continue;
            }
            match bar.value {
                Some(v) => {
                    let y = frame.y(v);
                    let _ = writeln!(
                        o,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" \
                         fill=\"{}\"><title>{v:.2}</title></rect>",
                        base - y,
                        bar.colour
                    );
                    if let Some(hw) = bar.half_width {
                        // The 95 % interval as a whisker with caps.
                        let (lo, hi) = (frame.y((v - hw).max(0.0)), frame.y(v + hw));
                        let (c0, c1) = (cx - w / 4.0, cx + w / 4.0);
                        let _ = writeln!(
                            o,
                            "<path d=\"M{cx:.1} {lo:.1}V{hi:.1}M{c0:.1} {lo:.1}H{c1:.1}\
                             M{c0:.1} {hi:.1}H{c1:.1}\" stroke=\"#000000\" fill=\"none\"/>"
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        o,
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"start\" \
                         font-size=\"9\" transform=\"rotate(-90 {cx:.1} {:.1})\">n/a</text>",
                        base - 4.0,
                        base - 4.0
                    );
                }
            }
        }
        // Labels split after an arrow go on two lines (`gateway→` / `orders`).
        let lx = gx + group_w / 2.0;
        let lines: Vec<String> = match label.split_once('→') {
            Some((a, b)) => vec![format!("{a}→"), b.to_string()],
            None => vec![label.clone()],
        };
        let _ = write!(
            o,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">",
            base + 17.0
        );
        for (i, line) in lines.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { 14.0 };
            let _ = write!(o, "<tspan x=\"{lx:.1}\" dy=\"{dy}\">{}</tspan>", xml(line));
        }
        o.push_str("</text>\n");
    }
    legend(&mut o, legend_entries);
    if let Some((v, text)) = reference {
        let y = frame.y(v);
        let ly = TOP + 8.0 + legend_entries.len() as f64 * 20.0;
        let lx = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#000000\" \
             stroke-dasharray=\"4 3\"/>\n\
             <line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000000\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            LEFT + Frame::plot_w(),
            ly - 4.0,
            lx + 14.0,
            ly - 4.0,
            lx + 20.0,
            xml(text)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(2.6), (3.0, 1.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(37.0), (40.0, 10.0));
        assert_eq!(tick_label(0.4, 0.2), "0.4");
    }
}
