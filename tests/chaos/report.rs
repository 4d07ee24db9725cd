//! A scenario's figures, and the suite's table. Each scenario appends its row to
//! `<out>/rows.tsv` and rewrites `<out>/table.txt` from all rows so far, so after the last
//! scenario the table is complete (`scripts/chaos` empties the rows first and saves the
//! table to `chaos/results/latest.txt`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use crate::harness::out_dir;

#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub rows: usize,
    pub processes: usize,
    pub faults: usize,
    /// Rows not delivered: not `sent`, or `sent` without the server ever receiving them,
    /// and not in a final state the scenario accepts.
    pub lost: usize,
    /// Rows ended `failed`/`bounced` by an injected permanent rejection, as designed.
    pub legit_final: usize,
    /// Rows whose Message-ID reached the server more than once, and the extra copies.
    pub duplicates: usize,
    pub extra_copies: usize,
    /// Duplicates in flight at a fault or whose 250 the server withheld.
    pub explained: usize,
    /// Worst time from a fault being lifted until throughput was back (or the queue drained).
    pub recovery_max: Duration,
    /// Worst time from a fault until every row in flight at it was final.
    pub settled_max: Duration,
    /// From the start of the workers until no row was queued or sending.
    pub drained_in: Option<Duration>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, rows: usize) -> Report {
        Report {
            scenario: scenario.to_string(),
            rows,
            ..Report::default()
        }
    }

    pub fn passed(&self) -> bool {
        self.lost == 0 && self.explained == self.duplicates && self.problems.is_empty()
    }

    /// Prints the report, adds its row to the suite's table, then fails the test if any
    /// check failed (after the row is saved, so a failing scenario still shows up).
    pub fn save_and_assert(self) {
        println!("[{}] {}", self.scenario, self.summary());
        for n in &self.notes {
            println!("[{}]   note: {n}", self.scenario);
        }
        for p in &self.problems {
            println!("[{}]   PROBLEM: {p}", self.scenario);
        }
        let dir = out_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("rows.tsv"))
            .unwrap();
        writeln!(f, "{}", self.tsv()).unwrap();
        drop(f);
        let rows = std::fs::read_to_string(dir.join("rows.tsv")).unwrap();
        let table = render(&rows);
        std::fs::write(dir.join("table.txt"), &table).unwrap();
        println!("\n{table}");
        assert!(
            self.passed(),
            "chaos scenario {} failed: {:?}",
            self.scenario,
            self.problems
        );
    }

    fn summary(&self) -> String {
        format!(
            "rows={} lost={} duplicates={} (extra copies {}) explained={} legit_final={} \
             recovery_max={} in_flight_settled_max={} drained_in={}",
            self.rows,
            self.lost,
            self.duplicates,
            self.extra_copies,
            self.explained,
            self.legit_final,
            secs(self.recovery_max),
            secs(self.settled_max),
            self.drained_in.map_or("HUNG".into(), secs),
        )
    }

    fn tsv(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        [
            self.scenario.clone(),
            self.rows.to_string(),
            self.processes.to_string(),
            self.faults.to_string(),
            self.lost.to_string(),
            self.legit_final.to_string(),
            format!("{} ({})", self.duplicates, self.extra_copies),
            format!("{}/{}", self.explained, self.duplicates),
            if self.faults == 0 {
                "-".into()
            } else {
                secs(self.recovery_max)
            },
            if self.settled_max.is_zero() {
                "-".into()
            } else {
                secs(self.settled_max)
            },
            self.drained_in.map_or("HUNG".into(), secs),
            if self.passed() { "ok" } else { "FAIL" }.into(),
            clean(&self.notes.join("; ")),
        ]
        .join("\t")
    }
}

/// Table order: the baseline, then processes, PostgreSQL, SMTP.
const ORDER: [&str; 11] = [
    "control",
    "sigkill",
    "sigterm",
    "pg_restart",
    "pg_terminate",
    "pg_exhausted",
    "smtp_refuse",
    "smtp_replies",
    "smtp_drop",
    "smtp_lost_250",
    "smtp_stall",
];

const HEADER: [&str; 12] = [
    "scenario",
    "rows",
    "procs",
    "faults",
    "lost",
    "final(5xx)",
    "dup (copies)",
    "explained",
    "recovery max",
    "in-flight done",
    "drained in",
    "verdict",
];

/// The table: one line per scenario, then each scenario's notes.
fn render(tsv: &str) -> String {
    let mut rows: Vec<Vec<&str>> = tsv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let rank = |name: &str| ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len());
    rows.sort_by_key(|r| rank(r[0]));
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(s, "{cell:<w$}");
            } else {
                let _ = write!(s, "  {cell:>w$}");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&HEADER));
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(&r[..HEADER.len().min(r.len())]));
        out.push('\n');
    }
    let noted: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r.get(12).is_some_and(|n| !n.is_empty()))
        .collect();
    if !noted.is_empty() {
        out.push('\n');
        for r in noted {
            let _ = writeln!(out, "{}: {}", r[0], r[12]);
        }
    }
    out
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
