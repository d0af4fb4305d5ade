//! The lab's figures and report files: the confusion matrix, the few-shot curve and the
//! embedding map as SVG (what the page shows and what it exports, one drawing for both), the
//! metrics of one or more models as CSV, and one self-contained HTML page that opens offline.
//! Plain strings: no plotting crate, since three small figures are less code than any binding,
//! and the page shows exactly what it exports.

use index::lab::Report;

/// Colours for classes (Tableau 10, the matplotlib default), repeating after ten.
pub const PALETTE: [&str; 10] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

pub fn colour(class: usize) -> &'static str {
    PALETTE[class % PALETTE.len()]
}

/// Escapes text for XML and HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn text_width(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.58
}

/// The value shown in confusion cell (`row`, `col`): the count, or the share of the row.
pub fn confusion_value(confusion: &[Vec<usize>], row: usize, col: usize, normalised: bool) -> f64 {
    let v = confusion[row][col] as f64;
    if normalised {
        let total: usize = confusion[row].iter().sum();
        if total == 0 { 0.0 } else { v / total as f64 }
    } else {
        v
    }
}

/// A cell's fill: white to dark blue with the value's share of the largest.
pub fn heat(share: f64) -> String {
    let t = share.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// The confusion matrix: rows are true classes, columns predicted.
pub fn confusion_svg(title: &str, classes: &[String], confusion: &[Vec<usize>], normalised: bool) -> String {
    let k = classes.len();
    let cell = 34.0;
    let left = classes.iter().map(|c| text_width(c, 11.0)).fold(40.0, f64::max) + 12.0;
    let top = 40.0;
    let bottom = classes.iter().map(|c| text_width(c, 11.0)).fold(40.0, f64::max) * 0.75 + 30.0;
    let (w, h) = (left + cell * k as f64 + 20.0, top + cell * k as f64 + bottom);
    let max = (0..k).flat_map(|r| (0..k).map(move |c| (r, c))).map(|(r, c)| confusion_value(confusion, r, c, normalised)).fold(0.0, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{left:.0}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\
         <text x=\"{left:.0}\" y=\"32\" fill=\"#555\">rows: true class · columns: predicted{}</text>",
        esc(title),
        if normalised { " · share of each row" } else { " · counts" }
    );
    for (r, name) in classes.iter().enumerate() {
        let y = top + cell * r as f64;
        s.push_str(&format!("<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 6.0, y + cell / 2.0 + 4.0, esc(name)));
        for c in 0..k {
            let v = confusion_value(confusion, r, c, normalised);
            let share = if max > 0.0 { v / max } else { 0.0 };
            let x = left + cell * c as f64;
            let label = if normalised { format!("{:.0}%", 100.0 * v) } else { format!("{}", confusion[r][c]) };
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"{}\" stroke=\"#fff\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{label}</text>",
                heat(share),
                x + cell / 2.0,
                y + cell / 2.0 + 4.0,
                if share > 0.5 { "white" } else { "#222" }
            ));
        }
    }
    let y0 = top + cell * k as f64 + 8.0;
    for (c, name) in classes.iter().enumerate() {
        let x = left + cell * c as f64 + cell / 2.0;
        s.push_str(&format!("<text transform=\"translate({x:.1},{y0:.1}) rotate(45)\">{}</text>", esc(name)));
    }
    s.push_str("</svg>");
    s
}

/// Accuracy against shots per class (mean ± sd over the seeds), the probe on the whole training
/// part, and zero-shot on the same test images, as horizontal lines.
pub fn few_shot_svg(title: &str, report: &Report) -> Option<String> {
    let probe = report.probe.as_ref()?;
    let (w, h, left, right, top, bottom) = (480.0, 300.0, 50.0, 150.0, 30.0, 40.0);
    let max_shots = probe.few_shot.iter().map(|p| p.shots).max().unwrap_or(1).max(2) as f64;
    let x = |shots: f64| left + (w - left - right) * shots.log2() / max_shots.log2();
    let y = |acc: f64| top + (h - top - bottom) * (1.0 - acc.clamp(0.0, 1.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{left}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    for i in 0..=5 {
        let a = i as f64 / 5.0;
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{a:.1}</text>",
            w - right,
            y(a),
            y(a),
            left - 6.0,
            y(a) + 4.0
        ));
    }
    for p in &probe.few_shot {
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>", x(p.shots as f64), h - bottom + 16.0, p.shots));
    }
    s.push_str(&format!(
        "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">images per class (training)</text>\
         <text transform=\"translate(14,{:.0}) rotate(-90)\" text-anchor=\"middle\">test accuracy</text>",
        (left + w - right) / 2.0,
        h - 6.0,
        (top + h - bottom) / 2.0
    ));
    let mut line = String::new();
    for p in &probe.few_shot {
        let (px, py) = (x(p.shots as f64), y(p.mean));
        line.push_str(&format!("{px:.1},{py:.1} "));
        s.push_str(&format!(
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#1f77b4\"/><circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"#1f77b4\"><title>{} per class: {:.3} ± {:.3} ({} seeds)</title></circle>",
            y(p.mean + p.sd),
            y(p.mean - p.sd),
            p.shots,
            p.mean,
            p.sd,
            p.runs
        ));
    }
    s.push_str(&format!("<polyline points=\"{line}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"));
    let mut legend_y = top + 10.0;
    let mut hline = |acc: f64, colour: &str, dash: &str, label: String, s: &mut String| {
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-dasharray=\"{dash}\" stroke-width=\"1.5\"/>\
             <text x=\"{:.1}\" y=\"{legend_y:.1}\" fill=\"{colour}\">{}</text>",
            w - right,
            y(acc),
            y(acc),
            w - right + 8.0,
            esc(&label)
        ));
        legend_y += 16.0;
    };
    hline(probe.metrics.accuracy, "#2ca02c", "2,0", format!("probe, all ({:.3})", probe.metrics.accuracy), &mut s);
    if let Some(z) = probe.zero_shot_accuracy {
        hline(z, "#d62728", "6,4", format!("zero-shot ({z:.3})"), &mut s);
    }
    s.push_str(&format!("<text x=\"{:.1}\" y=\"{legend_y:.1}\" fill=\"#1f77b4\">few-shot, mean ± sd</text>", w - right + 8.0));
    s.push_str("</svg>");
    Some(s)
}

/// Size of the map's plot area, in SVG units.
pub const MAP_SIZE: f64 = 480.0;
const MAP_PAD: f64 = 12.0;

/// The points' positions in the map's plot area (`[0, MAP_SIZE]²`), keeping the aspect ratio.
pub fn map_layout(points: &[[f32; 2]]) -> Vec<[f64; 2]> {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in points {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d] as f64);
            hi[d] = hi[d].max(p[d] as f64);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-12);
    let scale = (MAP_SIZE - 2.0 * MAP_PAD) / span;
    let off = [(MAP_SIZE - (hi[0] - lo[0]) * scale) / 2.0, (MAP_SIZE - (hi[1] - lo[1]) * scale) / 2.0];
    points.iter().map(|p| [off[0] + (p[0] as f64 - lo[0]) * scale, MAP_SIZE - (off[1] + (p[1] as f64 - lo[1]) * scale)]).collect()
}

/// The embedding map: one dot per image coloured by `colour_of` (a class index, or `None` for
/// unlabelled, grey), with the legend.
pub fn map_svg(title: &str, points: &[[f32; 2]], colour_of: &[Option<usize>], classes: &[String]) -> String {
    let xy = map_layout(points);
    let legend_w = classes.iter().map(|c| text_width(c, 11.0)).fold(60.0, f64::max) + 30.0;
    let (w, h) = (MAP_SIZE + legend_w, MAP_SIZE + 26.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text><g transform=\"translate(0,26)\">",
        esc(title)
    );
    let r = if points.len() > 3000 { 1.6 } else { 3.0 };
    for (p, c) in xy.iter().zip(colour_of) {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{}\" fill-opacity=\"0.8\"/>",
            p[0],
            p[1],
            c.map_or("#bbb", colour)
        ));
    }
    for (i, c) in classes.iter().enumerate() {
        let y = 16.0 + 16.0 * i as f64;
        s.push_str(&format!(
            "<circle cx=\"{:.0}\" cy=\"{:.0}\" r=\"5\" fill=\"{}\"/><text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            MAP_SIZE + 12.0,
            y - 4.0,
            colour(i),
            MAP_SIZE + 22.0,
            y,
            esc(c)
        ));
    }
    s.push_str("</g></svg>");
    s
}

/// The metrics of each evaluation (model) as CSV: one summary row per metric with a column per
/// model, then the per-class rows of each.
pub fn metrics_csv(evaluations: &[(&str, &Report)]) -> String {
    let field = index::lab::labels::csv_field;
    let mut out = String::from("metric");
    for (name, _) in evaluations {
        out.push(',');
        out.push_str(&field(name));
    }
    out.push('\n');
    for (key, _) in SUMMARY {
        out.push_str(key);
        for (_, r) in evaluations {
            out.push(',');
            if let Some(v) = summary_value(r, key) {
                out.push_str(&format!("{v:.6}"));
            }
        }
        out.push('\n');
    }
    out.push_str("\nmodel,class,precision,recall,f1,support\n");
    for (name, r) in evaluations {
        for c in &r.metrics.per_class {
            out.push_str(&format!("{},{},{:.6},{:.6},{:.6},{}\n", field(name), field(&c.label), c.precision, c.recall, c.f1, c.support));
        }
    }
    out
}

/// The summary metrics the lab shows and exports: key and what it means.
pub const SUMMARY: [(&str, &str); 12] = [
    ("accuracy", "zero-shot accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro F1"),
    ("weighted_f1", "weighted F1"),
    ("text_to_image_r1", "text→image R@1"),
    ("text_to_image_r5", "text→image R@5"),
    ("text_to_image_r10", "text→image R@10"),
    ("image_to_text_r1", "image→text R@1"),
    ("image_to_text_r5", "image→text R@5"),
    ("image_to_text_r10", "image→text R@10"),
    ("probe_accuracy", "linear probe accuracy (test part)"),
    ("probe_zero_shot_accuracy", "zero-shot accuracy (same test part)"),
];

pub fn summary_value(r: &Report, key: &str) -> Option<f64> {
    let recall = |v: &[f64], k: usize| r.retrieval.ks.iter().position(|&x| x == k).and_then(|i| v.get(i).copied());
    match key {
        "accuracy" => Some(r.metrics.accuracy),
        "balanced_accuracy" => Some(r.metrics.balanced_accuracy),
        "macro_f1" => Some(r.metrics.macro_f1),
        "weighted_f1" => Some(r.metrics.weighted_f1),
        "text_to_image_r1" => recall(&r.retrieval.text_to_image, 1),
        "text_to_image_r5" => recall(&r.retrieval.text_to_image, 5),
        "text_to_image_r10" => recall(&r.retrieval.text_to_image, 10),
        "image_to_text_r1" => recall(&r.retrieval.image_to_text, 1),
        "image_to_text_r5" => recall(&r.retrieval.image_to_text, 5),
        "image_to_text_r10" => recall(&r.retrieval.image_to_text, 10),
        "probe_accuracy" => r.probe.as_ref().map(|p| p.metrics.accuracy),
        "probe_zero_shot_accuracy" => r.probe.as_ref().and_then(|p| p.zero_shot_accuracy),
        _ => None,
    }
}

/// One HTML page with everything: the metric table of every model, each one's per-class table,
/// confusion matrices and few-shot curve, and the map. No script, no external resource: it opens
/// offline and prints.
pub fn report_html(evaluations: &[(&str, &Report)], map: Option<&str>, when: &str) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Obscura lab report</title>\
         <style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}\
         figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.muted{color:#666}</style></head><body>\
         <h1>Obscura lab report</h1>",
    );
    s.push_str(&format!(
        "<p class=\"muted\">{}. Computed in the browser on this device; zero-shot: one prompt per class and template, \
         the class embedding the renormalised mean over templates, prediction the most similar class.</p>",
        esc(when)
    ));
    s.push_str("<h2>Summary</h2><table><tr><th>metric</th>");
    for (name, r) in evaluations {
        s.push_str(&format!("<th>{}<br><span class=\"muted\">{} images</span></th>", esc(name), r.metrics.n));
    }
    s.push_str("</tr>");
    for (key, label) in SUMMARY {
        if evaluations.iter().all(|(_, r)| summary_value(r, key).is_none()) {
            continue;
        }
        s.push_str(&format!("<tr><td>{label}</td>"));
        for (_, r) in evaluations {
            s.push_str(&format!("<td>{}</td>", summary_value(r, key).map_or(String::from("–"), |v| format!("{v:.3}"))));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    for (name, r) in evaluations {
        s.push_str(&format!("<h2>{}</h2><p class=\"muted\">Templates: {}</p>", esc(name), r.templates.iter().map(|t| esc(t)).collect::<Vec<_>>().join(" · ")));
        s.push_str("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>");
        for c in &r.metrics.per_class {
            s.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                esc(&c.label),
                c.precision,
                c.recall,
                c.f1,
                c.support
            ));
        }
        s.push_str("</table>");
        for normalised in [false, true] {
            s.push_str(&format!("<figure>{}</figure>", confusion_svg(&format!("{name}: confusion"), &r.classes, &r.metrics.confusion, normalised)));
        }
        if let Some(p) = &r.probe {
            if let Some(fig) = few_shot_svg(&format!("{name}: linear probe"), r) {
                s.push_str(&format!("<figure>{fig}</figure>"));
            }
            s.push_str(&format!(
                "<p class=\"muted\">Linear probe: L2 logistic regression on the normalised embeddings, C = {} chosen by {}-fold cross-validation on the \
                 training part ({} images{}), tested on {} held-out images (stratified split).</p>",
                p.c,
                p.folds,
                p.train_size,
                if p.cv_rows < p.train_size { format!("; C chosen on a stratified {} of them", p.cv_rows) } else { String::new() },
                p.test_size
            ));
        }
    }
    if let Some(map) = map {
        s.push_str(&format!("<h2>Embedding map</h2><figure>{map}</figure>"));
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use index::lab::probe::ProbeOptions;

    fn report() -> Report {
        let classes: Vec<String> = ["tumour <a>", "stroma, loose", "mucus"].map(String::from).to_vec();
        // Three well-separated classes in 3-d, ten images each, prompts on the axes.
        let mut images = Vec::new();
        let mut truth = Vec::new();
        for c in 0..3 {
            for i in 0..10 {
                let mut v = vec![0.1 * (i as f32 % 3.0); 3];
                v[c] = 1.0;
                images.push(v);
                truth.push(c);
            }
        }
        let prompts: Vec<Vec<Vec<f32>>> = (0..3).map(|c| vec![(0..3).map(|d| if d == c { 1.0 } else { 0.0 }).collect()]).collect();
        let options = ProbeOptions { test_fraction: 0.3, seed: 1, ..ProbeOptions::default() };
        index::lab::evaluate("m", &["a photo of {}".into()], &classes, &prompts, &images, &truth, Some(&options), &mut |_, _| {})
    }

    #[test]
    fn figures_and_report_hold_what_they_show() {
        let r = report();
        assert_eq!(r.metrics.accuracy, 1.0);
        let svg = confusion_svg("c", &r.classes, &r.metrics.confusion, false);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 9, "one cell per pair of classes");
        assert!(svg.contains("tumour &lt;a&gt;") && !svg.contains("tumour <a>"), "labels are escaped");
        let norm = confusion_svg("c", &r.classes, &r.metrics.confusion, true);
        assert_eq!(norm.matches(">100%<").count(), 3);
        let curve = few_shot_svg("p", &r).expect("a probe was fitted");
        assert!(curve.contains("zero-shot (1.000)"));
        let map = map_svg("m", &[[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]], &[Some(0), Some(2), None], &r.classes);
        assert_eq!(map.matches("r=\"3\"").count(), 3);
        assert!(map.contains("#bbb"), "an unlabelled point is grey");
        let csv = metrics_csv(&[("A", &r), ("B, q8", &r)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "metric,A,\"B, q8\"");
        assert_eq!(lines[1], "accuracy,1.000000,1.000000");
        assert!(csv.contains("A,\"stroma, loose\",1.000000,1.000000,1.000000,10"));
        let html = report_html(&[("A", &r)], Some(&map), "2026-12-04");
        assert!(html.contains("<svg"));
        for external in ["<script", "src=", "href=", "url("] {
            assert!(!html.contains(external), "the page needs nothing outside itself: {external}");
        }
        assert!(html.contains("Linear probe: L2 logistic regression"));
    }

    #[test]
    fn the_map_keeps_its_aspect_and_fits() {
        let xy = map_layout(&[[0.0, 0.0], [10.0, 1.0], [5.0, -1.0]]);
        for p in &xy {
            assert!((0.0..=MAP_SIZE).contains(&p[0]) && (0.0..=MAP_SIZE).contains(&p[1]));
        }
        // x spans the plot; y (a fifth of the span) is centred, and up is up.
        assert!((xy[1][0] - xy[0][0] - (MAP_SIZE - 2.0 * MAP_PAD)).abs() < 1e-9);
        assert!(xy[1][1] < xy[0][1] && xy[0][1] < xy[2][1]);
        assert!((heat(0.0) == "#f7fbff") && heat(1.0) == "#08306b");
    }
}
