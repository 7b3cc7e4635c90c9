//! The HTML page: one file, images embedded as data URIs, no script but a check that every
//! image decoded (the tests read it back from headless Chromium).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use phenoflow_evaluation::classification::ClassifierResult;
use phenoflow_schemas::ModelCard;

use crate::figures::Figure;

/// One step of the pipeline file as pf-run recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    pub step: String,
    pub stage: String,
    /// How many of its concrete steps (shards) have a record, of how many.
    pub recorded: usize,
    pub of: usize,
    /// Their summed wall time, when every record holds one.
    pub seconds: Option<f64>,
}

/// The wall time of each step pf-run ran (shards summed: CPU-side cost, not elapsed time when
/// shards ran in parallel), and their total.
fn step_times_section(out: &mut String, times: &[StepTime]) {
    if times.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Wall time per step</h3><p>As pf-run recorded each step when it last ran (the shards of a fan-out \
         step summed; a step that was up to date keeps the time of its last run).</p>\
         <table><tr><th>step</th><th>stage</th><th>jobs recorded</th><th>wall time</th></tr>"
    );
    let mut total = 0.0;
    for time in times {
        let shown = match time.seconds {
            Some(seconds) => {
                total += seconds;
                format!("{seconds:.1} s")
            }
            None => "–".to_string(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}{}</td><td class=\"num\">{shown}</td></tr>",
            escape(&time.step),
            escape(&time.stage),
            time.recorded,
            if time.of > 1 { format!(" of {}", time.of) } else { String::new() }
        );
    }
    let _ = writeln!(
        out,
        "<tr><th colspan=\"3\">total</th><td class=\"num\"><b>{total:.1} s</b></td></tr></table>"
    );
}

/// A protocol's (MoA, correct, total) rows.
pub type Recall = (String, Vec<(String, usize, usize)>);

/// Everything the page shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The generative model's card (absent for a report of supervised classifiers only).
    pub card: Option<&'a ModelCard>,
    pub supervised: &'a [ClassifierResult],
    pub figures: &'a [Figure],
    pub metrics: &'a [crate::inputs::MetricRow],
    /// The spread of replicate runs (one per training seed), from pf-classify summarize.
    pub summary: &'a [phenoflow_schemas::metrics::MetricSummary],
    /// Profiles of the same screen side by side (name, their pf-classify metrics); the oracle,
    /// when present, last.
    pub compared: &'a [(&'a str, Vec<crate::inputs::MetricRow>)],
    pub recall: &'a [Recall],
    pub active: Option<&'a Vec<(String, f64, usize)>>,
    pub provenance: &'a BTreeMap<String, String>,
    pub pipeline: Option<&'a str>,
    /// pf-run's wall time of each step that ran, from its records.
    pub step_times: &'a [StepTime],
    pub notes: &'a [String],
}

/// One row per profile: NSC, NSCB and mAP with their counts, and each as a share of the
/// oracle's when an oracle is among them.
fn compared_section(out: &mut String, compared: &[(&str, Vec<crate::inputs::MetricRow>)]) {
    let value = |rows: &[crate::inputs::MetricRow], metric: &str, protocol: &str| {
        rows.iter()
            .find(|m| m.0 == metric && m.1 == protocol && m.2 == "all")
            .map(|m| (m.3, m.4))
    };
    let columns = [
        ("accuracy", "NSC"),
        ("accuracy", "NSCB"),
        ("mean_average_precision", "NSC"),
    ];
    let oracle = compared
        .iter()
        .find(|(name, _)| name.starts_with("oracle"))
        .map(|(_, rows)| rows);
    let _ = writeln!(
        out,
        "<h2>Profiles compared</h2><p>The same screen, the same pf-aggregate → pf-classify path{}</p>\
         <table><tr><th>profile</th><th>NSC</th><th>NSCB</th><th>mAP</th></tr>",
        if oracle.is_some() {
            "; the oracle profiles the drawn phenotype parameters of every cell, the ceiling of that path on \
             this screen."
        } else {
            "."
        }
    );
    for (name, rows) in compared {
        let _ = write!(out, "<tr><td>{}</td>", escape(name));
        for (metric, protocol) in columns {
            match value(rows, metric, protocol) {
                Some((v, count)) => {
                    let share = oracle
                        .filter(|o| !std::ptr::eq(*o, rows))
                        .and_then(|o| value(o, metric, protocol))
                        .filter(|(o, _)| *o > 0.0)
                        .map(|(o, _)| format!(" · {:.0} % of the oracle", 100.0 * v / o))
                        .unwrap_or_default();
                    let shown = if metric == "accuracy" {
                        format!("{:.1} %", 100.0 * v)
                    } else {
                        format!("{v:.3}")
                    };
                    let _ = write!(
                        out,
                        "<td class=\"num\">{shown} (n {}){share}</td>",
                        count.map(|c| c.to_string()).unwrap_or_default()
                    );
                }
                None => {
                    let _ = write!(out, "<td class=\"num\">–</td>");
                }
            }
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
    per_moa_comparison(out, compared);
}

/// Per MoA, each profile's NSC and NSCB recall and its average precision (mAP over the MoA's
/// queries), side by side.
fn per_moa_comparison(out: &mut String, compared: &[(&str, Vec<crate::inputs::MetricRow>)]) {
    let mut moas: Vec<&str> = compared
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .filter(|m| m.0 == "recall" && m.2 != "all")
        .map(|m| m.2.as_str())
        .collect();
    moas.sort_unstable();
    moas.dedup();
    if moas.is_empty() {
        return;
    }
    let value = |rows: &[crate::inputs::MetricRow], metric: &str, protocol: &str, moa: &str| {
        rows.iter()
            .find(|m| m.0 == metric && m.1 == protocol && m.2 == moa)
            .map(|m| m.3)
    };
    let _ = write!(
        out,
        "<h3>Per MoA</h3><p>NSC and NSCB recall (share of the MoA's treatments whose nearest \
         neighbour has their MoA) and MoA retrieval mean average precision (NSC candidates).</p>\
         <table><tr><th rowspan=\"2\">MoA</th>"
    );
    for (name, _) in compared {
        let _ = write!(out, "<th colspan=\"3\">{}</th>", escape(name));
    }
    let _ = write!(out, "</tr><tr>");
    for _ in compared {
        let _ = write!(out, "<th>NSC</th><th>NSCB</th><th>mAP</th>");
    }
    let _ = writeln!(out, "</tr>");
    for moa in moas {
        let _ = write!(out, "<tr><td>{}</td>", escape(moa));
        for (_, rows) in compared {
            for (metric, protocol, percent) in [
                ("recall", "NSC", true),
                ("recall", "NSCB", true),
                ("mean_average_precision", "NSC", false),
            ] {
                let shown = match value(rows, metric, protocol, moa) {
                    Some(v) if percent => format!("{:.0} %", 100.0 * v),
                    Some(v) => format!("{v:.3}"),
                    None => "–".to_string(),
                };
                let _ = write!(out, "<td class=\"num\">{shown}</td>");
            }
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
}

/// Accuracies and mAP over replicate runs: mean ± sample sd, the range and how many runs.
fn summary_section(out: &mut String, rows: &[phenoflow_schemas::metrics::MetricSummary]) {
    let shown: Vec<&phenoflow_schemas::metrics::MetricSummary> = rows
        .iter()
        .filter(|row| {
            row.scope == "all"
                && matches!(row.metric.as_str(), "accuracy" | "mean_average_precision")
        })
        .collect();
    if shown.is_empty() {
        return;
    }
    let replicates = shown.iter().map(|row| row.replicates).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "<h2>Across seeds</h2><p>The same pipeline trained with {replicates} different seeds: mean ± sample          standard deviation (n − 1) of each score, and its range. Differences between models smaller than          this spread are not differences.</p><p class=\"headline\">"
    );
    let percent = |metric: &str, value: f64| {
        if metric == "accuracy" {
            format!("{:.1} %", 100.0 * value)
        } else {
            format!("{value:.3}")
        }
    };
    let spread = |row: &phenoflow_schemas::metrics::MetricSummary| match row.sd {
        Some(sd) if row.metric == "accuracy" => format!("{:.1}", 100.0 * sd),
        Some(sd) => format!("{sd:.3}"),
        None => "n/a".into(),
    };
    for row in shown.iter().filter(|row| row.metric == "accuracy") {
        let value = match row.sd {
            Some(sd) => format!("{:.1} ± {:.1} %", 100.0 * row.mean, 100.0 * sd),
            None => format!("{:.1} % (one run)", 100.0 * row.mean),
        };
        let _ = write!(out, "<b>{}</b> {value} &nbsp; ", escape(&row.protocol));
    }
    let _ = writeln!(
        out,
        "</p><table><tr><th>metric</th><th>protocol</th><th>mean ± sd</th><th>min – max</th><th>runs</th><th>n</th></tr>"
    );
    for row in shown {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{} ± {}</td><td class=\"num\">{} – {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&row.metric),
            escape(&row.protocol),
            percent(&row.metric, row.mean),
            spread(row),
            percent(&row.metric, row.min),
            percent(&row.metric, row.max),
            row.replicates,
            row.count.map(|c| c.to_string()).unwrap_or_default()
        );
    }
    let _ = writeln!(out, "</table>");
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:1250px;margin:2em auto;\
padding:0 1em;color:#222}h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}\
figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em;max-width:1000px}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}.headline{font-size:1.3em}";

const CHECK: &str = "<script>window.addEventListener('load',function(){var n=0,b=0;for(var i=0;i<document.images.length;i++)\
{var im=document.images[i];n++;if(!(im.complete&&im.naturalWidth>0))b++;}document.body.setAttribute('data-images',n);\
document.body.setAttribute('data-broken-images',b);});</script>";

pub fn page(report: &Report<'_>) -> String {
    let mut out = String::new();
    let title = match report.card {
        Some(card) => card.model.display_name().to_string(),
        None if !report.supervised.is_empty() => "supervised classification".to_string(),
        // A profiling run without a model (CellProfiler features): its profile's name.
        None => report
            .compared
            .first()
            .map_or("profiling run", |(name, _)| name)
            .to_string(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>phenoflow report: {}</title><style>{STYLE}</style>{CHECK}</head><body>\n",
        escape(&title)
    );
    match report.card {
        Some(card) => {
            let _ = writeln!(
                out,
                "<h1>phenoflow report</h1><p>{} · latent {} · {} epochs · {} cells ({} treatments)</p>",
                escape(card.model.display_name()),
                card.hyperparameters.latent_dim,
                card.epochs_completed,
                card.data.n_cells,
                card.data.n_treatments
            );
            if let Some(start) = &card.started_from {
                let _ = writeln!(
                    out,
                    "<p class=\"note\">This run started from a model trained beforehand on the same cells \
                     (content hash checked by pf-train): {}. Its epochs are counted above.</p>",
                    escape(start)
                );
            }
        }
        None => {
            let _ = writeln!(out, "<h1>phenoflow report</h1><p>{}</p>", escape(&title));
        }
    }
    supervised_section(&mut out, report.supervised);

    let accuracy: Vec<_> = report
        .metrics
        .iter()
        .filter(|m| m.0 == "accuracy" && m.2 == "all")
        .collect();
    if !accuracy.is_empty() {
        let _ = writeln!(out, "<h2>MoA prediction</h2><p class=\"headline\">");
        for (_, protocol, _, value, count) in &accuracy {
            let count = count.unwrap_or(0);
            let _ = write!(
                out,
                "<b>{}</b> {:.1} % ({} of {}) &nbsp; ",
                escape(protocol),
                100.0 * value,
                (value * count as f64).round(),
                count
            );
        }
        let _ = writeln!(out, "</p><table><tr><th>metric</th><th>protocol</th><th>scope</th><th>value</th><th>n</th></tr>");
        for (metric, protocol, scope, value, count) in report
            .metrics
            .iter()
            .filter(|m| m.0 != "confusion" && m.0 != "recall")
        {
            let _ = writeln!(out, "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{value:.3}</td><td class=\"num\">{}</td></tr>",
                escape(metric), escape(protocol), escape(scope), count.map(|c| c.to_string()).unwrap_or_default());
        }
        let _ = writeln!(out, "</table>");
    }
    summary_section(&mut out, report.summary);
    if report.compared.len() > 1 {
        compared_section(&mut out, report.compared);
    }
    if !report.recall.is_empty() {
        let _ = writeln!(out, "<h2>Recall per MoA</h2><table><tr><th>MoA</th>");
        for (protocol, _) in report.recall {
            let _ = write!(out, "<th>{}</th>", escape(protocol));
        }
        let _ = writeln!(out, "</tr>");
        let classes: Vec<&String> = report.recall[0]
            .1
            .iter()
            .map(|(class, _, _)| class)
            .collect();
        for class in classes {
            let _ = write!(out, "<tr><td>{}</td>", escape(class));
            for (_, rows) in report.recall {
                match rows.iter().find(|(c, _, _)| c == class) {
                    Some((_, correct, total)) if *total > 0 => {
                        let _ = write!(
                            out,
                            "<td class=\"num\">{:.0} % ({correct}/{total})</td>",
                            100.0 * *correct as f64 / *total as f64
                        );
                    }
                    _ => {
                        let _ = write!(out, "<td class=\"num\">–</td>");
                    }
                }
            }
            let _ = writeln!(out, "</tr>");
        }
        let _ = writeln!(out, "</table>");
    }
    for figure in report.figures {
        let data = base64::engine::general_purpose::STANDARD.encode(&figure.png);
        let _ = writeln!(out, "<h2>{}</h2><figure><img alt=\"{}\" width=\"{}\" height=\"{}\" src=\"data:image/png;base64,{data}\"><figcaption>{} ({}.png beside this file)</figcaption></figure>",
            escape(&figure.title), escape(&figure.title), figure.width, figure.height, escape(&figure.caption), escape(&figure.name));
    }
    if let (Some(active), Some(card)) = (report.active, report.card) {
        let _ = writeln!(out, "<h2>Active latent dimensions (sparse model)</h2><p>Mean fraction of the {} dimensions whose spike probability γ exceeds 0.5, per MoA.</p><table><tr><th>MoA</th><th>active</th><th>cells</th></tr>", card.hyperparameters.latent_dim);
        for (moa, fraction, count) in active {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"num\">{:.1} %</td><td class=\"num\">{count}</td></tr>",
                escape(moa),
                100.0 * fraction
            );
        }
        let _ = writeln!(out, "</table>");
    }
    for note in report.notes {
        let _ = writeln!(out, "<p><i>{}</i></p>", escape(note));
    }
    let _ = writeln!(out, "<h2>Provenance</h2>");
    if let Some(card) = report.card {
        let _ = writeln!(out, "<table><tr><th>model</th><td>{} ({} architecture), {} parameters</td></tr>\
            <tr><th>data</th><td>{} (BLAKE3 {})</td></tr><tr><th>seed</th><td>{}</td></tr><tr><th>pf-train</th><td>{}</td></tr></table>",
            escape(card.model.name()), escape(&card.architecture), card.parameter_count, escape(&card.data.cells), escape(&card.data.content_hash), card.seed, escape(&card.stage_version));
        let _ = writeln!(
            out,
            "<h3>Hyperparameters and normalisation</h3><pre>{}\n{}</pre>",
            escape(&serde_json::to_string_pretty(&card.hyperparameters).unwrap_or_default()),
            escape(&serde_json::to_string(&card.normalization).unwrap_or_default())
        );
    }
    if !report.provenance.is_empty() {
        let _ = writeln!(
            out,
            "<h3>Tables</h3><table><tr><th>file</th><th>written by</th></tr>"
        );
        for (file, stage) in report.provenance {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(file),
                escape(stage)
            );
        }
        let _ = writeln!(out, "</table>");
    }
    step_times_section(&mut out, report.step_times);
    if let Some(pipeline) = report.pipeline {
        let _ = writeln!(out, "<h3>Pipeline</h3><pre>{}</pre>", escape(pipeline));
    }
    let _ = writeln!(
        out,
        "<p style=\"color:#888\">pf-report {}</p></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// The supervised classifiers side by side with the majority-class baseline, then each one's
/// per-class report.
fn supervised_section(out: &mut String, results: &[ClassifierResult]) {
    if results.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>Supervised classification</h2><p>Scores on the held-out split; the majority-class baseline predicts the most frequent training label for every image (its balanced accuracy is 1 / classes).</p>\
        <table><tr><th>classifier</th><th>label</th><th>split</th><th>test rows</th><th>accuracy</th><th>balanced accuracy</th><th>macro-F1</th><th>majority accuracy</th><th>majority balanced accuracy</th></tr>");
    for result in results {
        let get = |key: &str| result.summary.get(key).copied().unwrap_or(f64::NAN);
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td><td class=\"num\"><b>{:.3}</b></td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td></tr>",
            escape(&result.classifier), escape(&result.label_column), escape(&result.protocol), result.n_test,
            get("accuracy"), get("balanced_accuracy"), get("macro_f1"), get("majority_accuracy"), get("majority_balanced_accuracy"));
    }
    let _ = writeln!(out, "</table>");
    for result in results {
        let _ = writeln!(out, "<h3>Per-class report: {}</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>", escape(&result.classifier));
        for (class, precision, recall, f1, support) in &result.per_class {
            let _ = writeln!(out, "<tr><td>{}</td><td class=\"num\">{precision:.3}</td><td class=\"num\">{recall:.3}</td><td class=\"num\">{f1:.3}</td><td class=\"num\">{support}</td></tr>", escape(class));
        }
        let _ = writeln!(out, "</table>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_are_listed_per_step_with_a_total() {
        let time = |step: &str, recorded, of, seconds| StepTime {
            step: step.into(),
            stage: format!("pf-{step}"),
            recorded,
            of,
            seconds,
        };
        let mut out = String::new();
        step_times_section(
            &mut out,
            &[
                time("embed", 2, 2, Some(3.0)),
                time("train", 1, 1, Some(10.0)),
                time("old", 1, 1, None),
            ],
        );
        assert!(out.contains("<td>embed</td><td>pf-embed</td><td class=\"num\">2 of 2</td><td class=\"num\">3.0 s</td>"), "{out}");
        assert!(
            out.contains(
                "<td>old</td><td>pf-old</td><td class=\"num\">1</td><td class=\"num\">–</td>"
            ),
            "{out}"
        );
        assert!(out.contains("<b>13.0 s</b>"), "{out}");
        let mut empty = String::new();
        step_times_section(&mut empty, &[]);
        assert!(empty.is_empty());
    }

    #[test]
    fn the_spread_across_seeds_is_shown_as_mean_and_sd() {
        let row = |metric: &str, protocol: &str, mean, sd, min, max| {
            phenoflow_schemas::metrics::MetricSummary {
                metric: metric.into(),
                protocol: protocol.into(),
                scope: "all".into(),
                mean,
                sd,
                min,
                max,
                replicates: 3,
                count: Some(103),
            }
        };
        let rows = vec![
            row("accuracy", "NSC", 0.8, Some(0.1), 0.7, 0.9),
            row("accuracy", "NSCB", 0.5, None, 0.5, 0.5),
            row(
                "mean_average_precision",
                "NSC",
                0.25,
                Some(0.01),
                0.24,
                0.26,
            ),
        ];
        let mut out = String::new();
        summary_section(&mut out, &rows);
        assert!(out.contains("<b>NSC</b> 80.0 ± 10.0 %"), "{out}");
        assert!(out.contains("<b>NSCB</b> 50.0 % (one run)"), "{out}");
        assert!(
            out.contains(
                "<td class=\"num\">0.250 ± 0.010</td><td class=\"num\">0.240 – 0.260</td>"
            ),
            "{out}"
        );
        assert!(out.contains("trained with 3 different seeds"), "{out}");
        let mut empty = String::new();
        summary_section(&mut empty, &[]);
        assert!(empty.is_empty());
    }

    #[test]
    fn profiles_are_compared_with_the_oracle() {
        let rows = |nsc: f64, nscb: f64| -> Vec<crate::inputs::MetricRow> {
            vec![
                (
                    "accuracy".into(),
                    "NSC".into(),
                    "all".into(),
                    nsc,
                    Some(103),
                ),
                (
                    "accuracy".into(),
                    "NSCB".into(),
                    "all".into(),
                    nscb,
                    Some(92),
                ),
                (
                    "recall".into(),
                    "NSC".into(),
                    "DNA damage".into(),
                    1.0,
                    Some(3),
                ),
            ]
        };
        let compared = vec![
            ("learned profile (this run)", rows(0.4, 0.3)),
            ("oracle (the drawn phenotype parameters)", rows(0.5, 0.6)),
        ];
        let mut out = String::new();
        compared_section(&mut out, &compared);
        assert!(out.contains("40.0 % (n 103) · 80 % of the oracle"), "{out}");
        assert!(out.contains("30.0 % (n 92) · 50 % of the oracle"), "{out}");
        assert!(out.contains("<td>oracle (the drawn phenotype parameters)</td><td class=\"num\">50.0 % (n 103)</td>"), "{out}");
        assert!(
            !out.contains("<td class=\"num\">0.000"),
            "no mAP given: a dash, {out}"
        );
    }
}
