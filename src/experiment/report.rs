//! The experiment's tables, laid out like the paper's, as Markdown, JSON and CSV.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::experiment::config::WeakKind;
use crate::experiment::{ExperimentDir, grouping_name, init_name, plots};
use crate::json::write_json;
use crate::model::write_atomic;
use crate::modularize::Summary;
use crate::modularize::ga::InitKind;
use crate::modularize::grouping::GroupingKind;
use crate::patch::metrics::TcMetrics;
use crate::progress::Progress;

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

/// RQ2 (Tables 3–6): one weak model before and after patching.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rq2Row {
    /// Strong model (and weak family) name.
    pub model: String,
    /// Target class (the mix's `--tc`).
    pub tc: usize,
    /// Kind of weak model.
    pub kind: WeakKind,
    /// The weak model.
    pub weak: TcMetrics,
    /// The patched model.
    pub patched: TcMetrics,
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

/// Mean weak and patched metrics of `rows`, and how many got better on non-TCs.
pub fn averages(rows: &[&Rq2Row]) -> (TcMetrics, TcMetrics, usize) {
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
    let improved = rows.iter().filter(|r| r.patched.non_tc_accuracy > r.weak.non_tc_accuracy).count();
    (mean(&|r| r.weak), mean(&|r| r.patched), improved)
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

    /// Tables 3–6 as Markdown: per model, one row per TC and kind (in %), then averages.
    pub fn rq2_markdown(&self) -> String {
        let mut s = String::from("### RQ2: patching weak models (TC metrics and non-TC accuracy, %)\n");
        let mut models: Vec<&str> = self.rq2.iter().map(|r| r.model.as_str()).collect();
        models.dedup();
        for model in models {
            let rows: Vec<&Rq2Row> = self.rq2.iter().filter(|r| r.model == model).collect();
            let _ = write!(
                s,
                "\n#### {model}\n\n| TC | Weak model | Precision weak | patched | Recall weak | patched | F1 weak | patched | non-TC acc weak | patched |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            );
            for r in &rows {
                let _ = writeln!(s, "| {} | {} | {} |", r.tc, r.kind.name(), metric_cells(&r.weak, &r.patched));
            }
            let mut kinds: Vec<WeakKind> = rows.iter().map(|r| r.kind).collect();
            kinds.sort();
            kinds.dedup();
            for kind in kinds {
                let of_kind: Vec<&Rq2Row> = rows.iter().copied().filter(|r| r.kind == kind).collect();
                let (w, p, _) = averages(&of_kind);
                let _ = writeln!(s, "| avg | {} | {} |", kind.name(), metric_cells(&w, &p));
            }
        }
        let all: Vec<&Rq2Row> = self.rq2.iter().collect();
        let (w, p, improved) = averages(&all);
        let _ = write!(
            s,
            "\nMean change over {} patched models: precision {}, recall {}, F1 {}, non-TC accuracy {} points; {} of {} better on non-TCs.\n\
             Paper (90 models): precision +12.54, recall +2.14, F1 +7.52, non-TC accuracy +1.18 points; 85 of 90 better on non-TCs.\n",
            all.len(),
            signed(p.precision - w.precision),
            signed(p.recall - w.recall),
            signed(p.f1 - w.f1),
            signed(p.non_tc_accuracy - w.non_tc_accuracy),
            improved,
            all.len()
        );
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
                grouping_name(r.grouping),
                init_name(r.init),
                r.best_generation,
                r.composed_validation,
                r.composed_test,
                r.diff
            );
        }
        s
    }

    /// Writes `reports/rqK.{md,json,csv}` for every table that has rows, and the plots.
    pub fn write(&self, dir: &ExperimentDir, progress: &dyn Progress) -> Result<()> {
        let root = dir.reports();
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
            write_json(&root.join(format!("{name}.json")), &self.json(name))?;
            write_atomic(&root.join(format!("{name}.md")), (header + &markdown).as_bytes())?;
            write_atomic(&root.join(format!("{name}.csv")), csv.as_bytes())?;
        }
        plots::write_all(self, &root.join("plots"), progress)
    }

    fn json(&self, name: &str) -> serde_json::Value {
        match name {
            "rq1" => serde_json::json!({ "name": self.name, "rows": self.rq1 }),
            "rq2" => serde_json::json!({ "name": self.name, "rows": self.rq2 }),
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
/// (`weak_precision`).
pub fn csv<T: Serialize>(rows: &[T]) -> String {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
                    flatten(&key, v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut text = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut cells = Vec::new();
        flatten("", &serde_json::to_value(row).expect("serializable"), &mut cells);
        if i == 0 {
            text += &cells.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(",");
            text.push('\n');
        }
        text += &cells.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(",");
        text.push('\n');
    }
    text
}
