//! The experiment's tables, laid out like the paper's, as Markdown, JSON and CSV.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::experiment::config::WeakKind;
use crate::experiment::{ExperimentDir, plots};
use crate::files::{read_jsonl, write_atomic, write_json};
use crate::modularize::Summary;
use crate::modularize::genetic::ga::InitKind;
use crate::modularize::genetic::grouping::GroupingKind;
use crate::patch::diagnostics::{Diagnostics, Interval, percentile_interval};
use crate::patch::gate::SplitScore;
use crate::patch::metrics::TcMetrics;
use crate::patch::{Accuracies, Control, PatchReport, RuleKind, TcAuroc};
use crate::progress::Progress;
use crate::records::GenerationRecord;

/// RQ1 (Tables 1 and 2): one strong model and its modules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rq1Row {
    /// Model name.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Test accuracy of the model.
    pub model_accuracy: f64,
    /// Test accuracy of the composed modules.
    pub composed_accuracy: f64,
    /// `model_accuracy − composed_accuracy`.
    pub accuracy_loss: f64,
    /// Mean pairwise Jaccard distance of the modules' kernel sets.
    pub diff: f64,
    /// Kernels of the model.
    pub model_kernels: usize,
    /// Mean kernels per module.
    pub module_kernels: f64,
    /// `1 − module_kernels / model_kernels`.
    pub kernel_reduction: f64,
    /// MACs per image of the model.
    pub model_macs: u64,
    /// Mean MACs per image of a module.
    pub module_macs: f64,
    /// `1 − module_macs / model_macs`.
    pub mac_reduction: f64,
    /// Generations run.
    pub generations: usize,
    /// Mean wall seconds per generation (not in the Markdown tables).
    pub seconds_per_generation: f64,
}

impl Rq1Row {
    /// The row of a modularization summary.
    pub fn new(model: &str, dataset: &str, s: &Summary) -> Self {
        Rq1Row {
            model: model.to_string(),
            dataset: dataset.to_string(),
            model_accuracy: s.model_accuracy.test,
            composed_accuracy: s.composed_accuracy.test,
            accuracy_loss: s.model_accuracy.test - s.composed_accuracy.test,
            diff: s.diff,
            model_kernels: s.model_kernels,
            module_kernels: s.mean_kernels,
            kernel_reduction: s.kernel_reduction,
            model_macs: s.model_macs,
            module_macs: s.mean_macs,
            mac_reduction: s.mac_reduction,
            generations: s.generations,
            seconds_per_generation: s.seconds_per_generation,
        }
    }
}

/// RQ2 (Tables 3–6): one weak model before and after patching with one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rq2Row {
    /// Strong model (and weak family) name.
    pub model: String,
    /// Target class (the mix's `--tc`).
    pub tc: usize,
    /// Kind of weak model.
    pub kind: WeakKind,
    /// Patching rule.
    pub rule: RuleKind,
    /// Whether the gate opened (on the validation split).
    pub gate_open: bool,
    /// Validation scores the gate compared (weak, patched).
    pub gate_weak: SplitScore,
    /// The patched side of the gate's comparison.
    pub gate_patched: SplitScore,
    /// The weak model on test.
    pub weak: TcMetrics,
    /// The rule applied regardless of the gate, on test.
    pub ungated: TcMetrics,
    /// The gated result on test: `ungated` if the gate opened, else `weak`.
    pub patched: TcMetrics,
    /// Test accuracy over all classes.
    pub accuracy: Accuracies,
    /// The control: the weak model recalibrated without the module, on test.
    pub control: Option<Control>,
    /// The rule's effect (ungated) on test, image by image: TC counts before and after, fixes,
    /// regressions, images predicted as the TC by true class, bootstrap intervals.
    pub diagnostics: Diagnostics,
    /// AUROC of the TC scores on test.
    pub auroc: TcAuroc,
}

impl Rq2Row {
    /// The row of a patch report.
    pub fn new(model: &str, tc: usize, kind: WeakKind, r: &PatchReport) -> Self {
        Rq2Row {
            model: model.to_string(),
            tc,
            kind,
            rule: r.spec.rule.kind(),
            gate_open: r.spec.gate.open,
            gate_weak: r.spec.gate.weak,
            gate_patched: r.spec.gate.patched,
            weak: r.weak,
            ungated: r.ungated,
            patched: r.patched,
            accuracy: r.accuracy,
            control: r.control,
            diagnostics: r.diagnostics.clone(),
            auroc: r.auroc,
        }
    }
}

/// A mean change over patched models with its bootstrap 95% interval (over the models).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanChange {
    /// Mean of `after − before`.
    pub mean: f64,
    /// 2.5% and 97.5% percentiles of the mean over resamples of the models.
    pub interval: Interval,
}

/// Resamples of the intervals over models.
pub const SUMMARY_RESAMPLES: usize = 2000;

impl MeanChange {
    /// The mean of `changes` and its bootstrap interval (fixed seed).
    pub fn of(changes: &[f64]) -> Self {
        let n = changes.len();
        if n == 0 {
            return MeanChange { mean: 0.0, interval: [0.0, 0.0] };
        }
        let mean = changes.iter().sum::<f64>() / n as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut means: Vec<f64> = (0..SUMMARY_RESAMPLES)
            .map(|_| (0..n).map(|_| changes[rng.random_range(0..n)]).sum::<f64>() / n as f64)
            .collect();
        MeanChange { mean, interval: percentile_interval(&mut means) }
    }
}

/// What an RQ2 summary line measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Patching {
    /// The rule applied to every weak model.
    Ungated,
    /// The rule where the gate opened, the weak model elsewhere.
    Gated,
    /// The control: the calibrated rule without the module (the weak model recalibrated).
    WithoutModule,
}

impl Patching {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Patching::Ungated => "ungated",
            Patching::Gated => "gated",
            Patching::WithoutModule => "control: no module",
        }
    }
}

/// RQ2 over all patched models of one rule, gated or not (or the control).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rq2Summary {
    /// Rule.
    pub rule: RuleKind,
    /// Ungated, gated, or the control.
    pub patching: Patching,
    /// Patched models.
    pub models: usize,
    /// Gates that opened (0 for the control, which has no gate).
    pub gates_open: usize,
    /// TC precision change.
    pub precision: MeanChange,
    /// TC recall change.
    pub recall: MeanChange,
    /// TC F1 change.
    pub f1: MeanChange,
    /// Non-TC accuracy change.
    pub non_tc_accuracy: MeanChange,
    /// Test accuracy change over all classes.
    pub accuracy: MeanChange,
    /// Models better on non-TCs than their weak model.
    pub non_tc_better: usize,
    /// Models as good on non-TCs.
    pub non_tc_tie: usize,
    /// Models worse on non-TCs.
    pub non_tc_worse: usize,
    /// Test images fixed, summed over models (TC + non-TC; not counted for the control).
    pub fixes: usize,
    /// Test images broken, summed over models (TC + non-TC; not counted for the control).
    pub regressions: usize,
    /// The largest drop of test accuracy of one model (most negative change, 0 if none).
    pub worst_accuracy_change: f64,
}

impl Rq2Summary {
    /// The summary of `rows` (all of one rule; for the control, the rows that have one).
    pub fn of(rule: RuleKind, patching: Patching, rows: &[&Rq2Row]) -> Self {
        let rows: Vec<&Rq2Row> =
            rows.iter().copied().filter(|r| patching != Patching::WithoutModule || r.control.is_some()).collect();
        let after = |r: &Rq2Row| match patching {
            Patching::Ungated => (r.ungated, r.accuracy.ungated),
            Patching::Gated => (r.patched, r.accuracy.patched),
            Patching::WithoutModule => r.control.map(|c| (c.metrics, c.accuracy)).expect("filtered"),
        };
        let counted = |r: &Rq2Row| match patching {
            Patching::Ungated => true,
            Patching::Gated => r.gate_open,
            Patching::WithoutModule => false,
        };
        let change = |f: &dyn Fn(&Rq2Row) -> f64| MeanChange::of(&rows.iter().map(|r| f(r)).collect::<Vec<_>>());
        let non_tc: Vec<f64> = rows.iter().map(|r| after(r).0.non_tc_accuracy - r.weak.non_tc_accuracy).collect();
        let acc: Vec<f64> = rows.iter().map(|r| after(r).1 - r.accuracy.weak).collect();
        Rq2Summary {
            rule,
            patching,
            models: rows.len(),
            gates_open: rows.iter().filter(|r| counted(r) && r.gate_open).count(),
            precision: change(&|r| after(r).0.precision - r.weak.precision),
            recall: change(&|r| after(r).0.recall - r.weak.recall),
            f1: change(&|r| after(r).0.f1 - r.weak.f1),
            non_tc_accuracy: MeanChange::of(&non_tc),
            accuracy: MeanChange::of(&acc),
            non_tc_better: non_tc.iter().filter(|&&c| c > 0.0).count(),
            non_tc_tie: non_tc.iter().filter(|&&c| c == 0.0).count(),
            non_tc_worse: non_tc.iter().filter(|&&c| c < 0.0).count(),
            fixes: rows.iter().filter(|r| counted(r)).map(|r| r.diagnostics.fixes.total()).sum(),
            regressions: rows.iter().filter(|r| counted(r)).map(|r| r.diagnostics.regressions.total()).sum(),
            worst_accuracy_change: acc.iter().copied().fold(0.0, f64::min),
        }
    }
}

/// RQ3 (Table 7): one grouping × initialisation run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rq3Row {
    /// Model name.
    pub model: String,
    /// Grouping.
    pub grouping: GroupingKind,
    /// Initialisation.
    pub init: InitKind,
    /// Generation (from 1) of the best modules.
    pub best_generation: usize,
    /// Composed accuracy on the validation split.
    pub composed_validation: f64,
    /// Composed accuracy on the test split.
    pub composed_test: f64,
    /// Diff of the best modules.
    pub diff: f64,
}

impl Rq3Row {
    /// The row of an ablation run's summary.
    pub fn new(model: &str, grouping: GroupingKind, init: InitKind, s: &Summary) -> Self {
        Rq3Row {
            model: model.to_string(),
            grouping,
            init,
            best_generation: s.best_generation + 1,
            composed_validation: s.composed_accuracy.validation,
            composed_test: s.composed_accuracy.test,
            diff: s.diff,
        }
    }
}

/// All tables of a run of `experiment`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reports {
    /// Experiment name.
    pub name: String,
    /// RQ1 rows.
    pub rq1: Vec<Rq1Row>,
    /// RQ2 rows.
    pub rq2: Vec<Rq2Row>,
    /// RQ3 rows.
    pub rq3: Vec<Rq3Row>,
    /// Each modularized model's `generations.jsonl` (for the search plots).
    #[serde(skip)]
    pub searches: Vec<(String, PathBuf)>,
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn signed(v: f64) -> String {
    format!("{:+.2}", 100.0 * v)
}

/// Mean weak and ungated patched metrics of `rows`.
pub fn averages(rows: &[&Rq2Row]) -> (TcMetrics, TcMetrics) {
    let n = rows.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Rq2Row) -> TcMetrics| {
        let sum = |g: fn(&TcMetrics) -> f64| rows.iter().map(|r| g(&f(r))).sum::<f64>() / n;
        TcMetrics {
            precision: sum(|m| m.precision),
            recall: sum(|m| m.recall),
            f1: sum(|m| m.f1),
            non_tc_accuracy: sum(|m| m.non_tc_accuracy),
        }
    };
    (mean(&|r| r.weak), mean(&|r| r.ungated))
}

fn change_cell(c: &MeanChange) -> String {
    format!("{} [{}, {}]", signed(c.mean), signed(c.interval[0]), signed(c.interval[1]))
}

impl Reports {
    /// Table 1 and Table 2 as Markdown.
    pub fn rq1_markdown(&self) -> String {
        let mut s = String::from("### RQ1: modularization (test accuracy)\n\n");
        s += "| Model | Dataset | Model Acc | Kernels | Composed Acc | Acc loss | Diff | Kernels per module | Kernel reduction |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &self.rq1 {
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} | {} | {:.4} | {:.4} | {:.4} | {:.0} | -{}% |",
                r.model,
                r.dataset,
                r.model_accuracy,
                r.model_kernels,
                r.composed_accuracy,
                r.accuracy_loss,
                r.diff,
                r.module_kernels,
                pct(r.kernel_reduction)
            );
        }
        s += "\n| Model | MACs of the model | MACs per module | Reduction |\n|---|---:|---:|---:|\n";
        for r in &self.rq1 {
            let _ =
                writeln!(s, "| {} | {} | {:.0} | -{}% |", r.model, r.model_macs, r.module_macs, pct(r.mac_reduction));
        }
        s += "\nPaper (CIFAR-10 and SVHN, full-width models): mean accuracy loss 0.0289, kernels -43.24%, MACs -57.0%.\n";
        s
    }

    /// The rules the RQ2 rows use, in `RuleKind` order.
    pub fn rq2_rules(&self) -> Vec<RuleKind> {
        let mut rules: Vec<RuleKind> = self.rq2.iter().map(|r| r.rule).collect();
        rules.sort();
        rules.dedup();
        rules
    }

    /// The RQ2 summaries: per rule, ungated then gated; then the control (the calibrated rule
    /// without the module).
    pub fn rq2_summaries(&self) -> Vec<Rq2Summary> {
        let rules = self.rq2_rules();
        let mut out = Vec::new();
        for &rule in &rules {
            let rows: Vec<&Rq2Row> = self.rq2.iter().filter(|r| r.rule == rule).collect();
            out.push(Rq2Summary::of(rule, Patching::Ungated, &rows));
            out.push(Rq2Summary::of(rule, Patching::Gated, &rows));
        }
        // The control depends on the weak model and its validation data only: one line, from
        // the first rule's rows.
        if let Some(&rule) = rules.first() {
            let rows: Vec<&Rq2Row> = self.rq2.iter().filter(|r| r.rule == rule).collect();
            let control = Rq2Summary::of(RuleKind::Calibrated, Patching::WithoutModule, &rows);
            if control.models > 0 {
                out.push(control);
            }
        }
        out
    }

    /// Tables 3–6 as Markdown: the summary per rule, gated and ungated; then per model and rule
    /// one row per TC and kind (in %), and averages per kind.
    pub fn rq2_markdown(&self) -> String {
        let mut s = String::from("### RQ2: patching weak models (TC metrics and non-TC accuracy, %)\n\n");
        s += "Mean change after patching, in points, with a 95% bootstrap interval over the patched models. \
              Ungated: the rule applied to every weak model; gated: only where the gate opened on the \
              validation split (elsewhere the weak model's predictions are kept). The control fits the \
              calibrated rule without the module: what recalibrating the weak model alone gives.\n\n";
        s += "| Rule | Gate | Precision | Recall | F1 | non-TC acc | Test acc | non-TC better / tie / worse | Fixes / regressions | Gates open | Worst test-acc change |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for m in self.rq2_summaries() {
            let control = m.patching == Patching::WithoutModule;
            let (changed, gates) = if control {
                ("-".to_string(), format!("- of {}", m.models))
            } else {
                (format!("{} / {}", m.fixes, m.regressions), format!("{} of {}", m.gates_open, m.models))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {changed} | {gates} | {} |",
                if control { "weak model recalibrated" } else { m.rule.name() },
                m.patching.name(),
                change_cell(&m.precision),
                change_cell(&m.recall),
                change_cell(&m.f1),
                change_cell(&m.non_tc_accuracy),
                change_cell(&m.accuracy),
                m.non_tc_better,
                m.non_tc_tie,
                m.non_tc_worse,
                signed(m.worst_accuracy_change)
            );
        }
        s += "| paper (published: 90 models, CIFAR-10-W and SVHN-W) | none | +12.54 | +2.14 | +7.52 | +1.18 | | 85 of 90 better | | | |\n";
        let mut models: Vec<&str> = self.rq2.iter().map(|r| r.model.as_str()).collect();
        models.dedup();
        let rules = self.rq2_rules();
        for model in models {
            for &rule in &rules {
                let rows: Vec<&Rq2Row> = self.rq2.iter().filter(|r| r.model == model && r.rule == rule).collect();
                if rows.is_empty() {
                    continue;
                }
                let _ = write!(
                    s,
                    "\n#### {model}, {} rule\n\nThe rule's effect on test (ungated); the gate column says whether \
                     the gated model uses it (validation accuracy weak -> patched).\n\n\
                     | TC | Weak model | Gate | Precision weak | patched | Recall weak | patched | F1 weak | patched | non-TC acc weak | patched | TC FP weak -> patched | Fixes | Regressions |\n\
                     |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
                    rule.name()
                );
                for r in &rows {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} ({} -> {}) | {} | {} -> {} | {} | {} |",
                        r.tc,
                        r.kind.name(),
                        if r.gate_open { "open" } else { "closed" },
                        pct(r.gate_weak.accuracy),
                        pct(r.gate_patched.accuracy),
                        metric_cells(&r.weak, &r.ungated),
                        r.diagnostics.before.fp,
                        r.diagnostics.after.fp,
                        r.diagnostics.fixes.total(),
                        r.diagnostics.regressions.total()
                    );
                }
                let mut kinds: Vec<WeakKind> = rows.iter().map(|r| r.kind).collect();
                kinds.sort();
                kinds.dedup();
                for kind in kinds {
                    let of_kind: Vec<&Rq2Row> = rows.iter().copied().filter(|r| r.kind == kind).collect();
                    let (w, p) = averages(&of_kind);
                    let _ = writeln!(s, "| avg | {} | | {} | | | |", kind.name(), metric_cells(&w, &p));
                }
            }
        }
        s
    }

    /// Table 7 as Markdown.
    pub fn rq3_markdown(&self) -> String {
        let mut s = String::from("### RQ3: grouping and initialisation\n\n");
        s += "| Model | Grouping | Initialisation | Generation of the best modules | Composed Acc (val) | Composed Acc (test) | Diff |\n";
        s += "|---|---|---|---:|---:|---:|---:|\n";
        for r in &self.rq3 {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.4} | {:.4} | {:.4} |",
                r.model,
                r.grouping.name(),
                r.init.name(),
                r.best_generation,
                r.composed_validation,
                r.composed_test,
                r.diff
            );
        }
        s
    }

    /// Writes the plots, then `reports/rqK.{md,csv,json}` for every table that has rows; the
    /// last table's JSON comes last (the reports task's done file).
    pub fn write(&self, dir: &ExperimentDir, progress: &dyn Progress) -> Result<()> {
        let root = dir.reports();
        write_plots(self, &root.join("plots"), progress)?;
        let tables: [(&str, bool, String, String); 3] = [
            ("rq1", !self.rq1.is_empty(), self.rq1_markdown(), csv(&self.rq1)),
            ("rq2", !self.rq2.is_empty(), self.rq2_markdown(), csv(&self.rq2)),
            ("rq3", !self.rq3.is_empty(), self.rq3_markdown(), csv(&self.rq3)),
        ];
        for (name, has_rows, markdown, csv) in tables {
            if !has_rows {
                continue;
            }
            let header = format!("# {}\n\n", self.name);
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
            write_atomic(&root.join(format!("{name}.md")), (header + &markdown).as_bytes())?;
            write_atomic(&root.join(format!("{name}.csv")), csv.as_bytes())?;
            write_json(&root.join(format!("{name}.json")), &self.json(name))?;
        }
        Ok(())
    }

    fn json(&self, name: &str) -> serde_json::Value {
        match name {
            "rq1" => serde_json::json!({ "name": self.name, "rows": self.rq1 }),
            "rq2" => serde_json::json!({ "name": self.name, "summary": self.rq2_summaries(), "rows": self.rq2 }),
            _ => serde_json::json!({ "name": self.name, "rows": self.rq3 }),
        }
    }
}

fn metric_cells(w: &TcMetrics, p: &TcMetrics) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | {} | {}",
        pct(w.precision),
        pct(p.precision),
        pct(w.recall),
        pct(p.recall),
        pct(w.f1),
        pct(p.f1),
        pct(w.non_tc_accuracy),
        pct(p.non_tc_accuracy)
    )
}

/// Rows as CSV: one column per field in declaration order, nested fields joined with `_`
/// (`weak_precision`), array entries numbered (`interval_0`); the header is the union of every
/// row's columns, and a row without a column (an absent optional value) leaves its cell empty.
pub fn csv<T: Serialize>(rows: &[T]) -> String {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}_{k}") };
        match v {
            serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
            serde_json::Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, v)| flatten(&key(&i.to_string()), v, out))
            }
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            serde_json::Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|row| {
            let mut cells = Vec::new();
            flatten("", &serde_json::to_value(row).expect("serializable"), &mut cells);
            cells
        })
        .collect();
    let mut header: Vec<&str> = Vec::new();
    for (k, _) in flat.iter().flatten() {
        if !header.contains(&k.as_str()) {
            header.push(k);
        }
    }
    let mut text = header.iter().map(|k| quoted(k)).collect::<Vec<_>>().join(",") + "\n";
    for cells in &flat {
        let cell = |k: &str| cells.iter().find(|(c, _)| c == k).map_or("", |(_, v)| v.as_str());
        text += &header.iter().map(|k| quoted(cell(k))).collect::<Vec<_>>().join(",");
        text.push('\n');
    }
    text
}

/// A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a line
/// break; as it is otherwise.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Every plot of `reports` into `dir`: `search_<model>` and `patch_<model>_<rule>`.
fn write_plots(reports: &Reports, dir: &Path, progress: &dyn Progress) -> Result<()> {
    if !plots::font_ready() {
        progress.note("no TrueType font found for the plots (set CNNSPLITTER_FONT=/path/to/font.ttf); plots skipped");
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (model, log) in &reports.searches {
        let records: Vec<GenerationRecord> = read_jsonl(log)?;
        let series = |label: &str, f: fn(&GenerationRecord) -> f64| plots::Line {
            label: label.to_string(),
            points: records.iter().map(|r| ((r.generation + 1) as f64, f(r))).collect(),
        };
        let lines = [
            series("best fitness", |r| r.best_fitness),
            series("accuracy", |r| r.accuracy),
            series("Diff", |r| r.diff),
        ];
        plots::line_chart(&dir.join(format!("search_{model}")), &format!("{model}: the search"), "generation", &lines)?;
    }
    let mut models: Vec<&str> = reports.rq2.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let rules = reports.rq2_rules();
    for model in models {
        for &rule in &rules {
            let rows: Vec<_> = reports.rq2.iter().filter(|r| r.model == model && r.rule == rule).collect();
            if rows.is_empty() {
                continue;
            }
            let bars = plots::Bars {
                categories: rows.iter().map(|r| format!("TC {} {}", r.tc, r.kind.name())).collect(),
                labels: ["weak".into(), "patched (gated)".into()],
                values: rows.iter().map(|r| [r.weak.f1, r.patched.f1]).collect(),
            };
            let title = format!("{model}: TC F1, weak vs. patched ({} rule, gated)", rule.name());
            plots::bar_chart(&dir.join(format!("patch_{model}_{}", rule.name())), &title, &bars)?;
        }
    }
    Ok(())
}
