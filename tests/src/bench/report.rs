//! Result rows: printed as an aligned table, or as tab-separated lines that
//! `scripts/bench` gathers from several bench binaries into one table.

use std::fmt::Write as _;

/// A target a figure is held to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    None,
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn text(self, unit: &str) -> String {
        match self {
            Target::None => String::new(),
            Target::AtMost(v) => format!("<= {} {unit}", number(v)),
            Target::AtLeast(v) => format!(">= {} {unit}", number(v)),
        }
    }

    fn verdict(self, value: f64) -> &'static str {
        match self {
            Target::None => "",
            Target::AtMost(t) if value <= t => "met",
            Target::AtLeast(t) if value >= t => "met",
            _ => "MISSED",
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Row {
    pub bench: String,
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Target,
    /// Sample count, conditions, anything needed to read the figure.
    pub note: String,
}

impl Row {
    pub fn new(bench: &str, metric: &str, value: f64, unit: &'static str) -> Row {
        Row {
            bench: bench.into(),
            metric: metric.into(),
            value,
            unit,
            target: Target::None,
            note: String::new(),
        }
    }

    pub fn target(mut self, t: Target) -> Row {
        self.target = t;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    fn cells(&self) -> [String; 6] {
        [
            self.bench.clone(),
            self.metric.clone(),
            format!("{} {}", number(self.value), self.unit),
            self.target.text(self.unit),
            self.target.verdict(self.value).into(),
            self.note.clone(),
        ]
    }
}

/// A value with a precision that suits its size.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

const HEADER: [&str; 6] = ["bench", "metric", "value", "target", "verdict", "note"];

/// Tab-separated cells, one row per line, no header (tabs inside cells become spaces).
pub fn tsv(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.cells().iter().map(|c| c.replace('\t', " ")).collect();
        let _ = writeln!(out, "{}", cells.join("\t"));
    }
    out
}

/// An aligned text table with a header.
pub fn table(rows: &[Row]) -> String {
    let body: Vec<[String; 6]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(str::len);
    for cells in &body {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &HEADER.map(String::from));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for cells in &body {
        line(&mut out, cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_target_direction() {
        assert_eq!(Target::AtMost(2.0).verdict(1.5), "met");
        assert_eq!(Target::AtMost(2.0).verdict(2.5), "MISSED");
        assert_eq!(Target::AtLeast(5000.0).verdict(6000.0), "met");
        assert_eq!(Target::AtLeast(5000.0).verdict(10.0), "MISSED");
        assert_eq!(Target::None.verdict(1.0), "");
    }

    #[test]
    fn table_aligns_columns_and_tsv_has_one_line_per_row() {
        let rows = vec![
            Row::new("commit latency", "p50", 1.234, "ms").target(Target::AtMost(2.0)),
            Row::new("throughput", "commits/s", 6543.0, "1/s").note("64 committers"),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].find("metric"), lines[2].find("p50"));
        assert!(
            lines[2].contains("1.23 ms")
                && lines[2].contains("<= 2 ms")
                && lines[2].contains("met")
        );
        let s = tsv(&rows);
        assert_eq!(s.lines().count(), 2);
        assert_eq!(s.lines().next().map(|l| l.split('\t').count()), Some(6));
    }

    #[test]
    fn numbers_keep_useful_precision() {
        assert_eq!(number(6543.21), "6543");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.01234), "0.012");
        assert_eq!(number(3.0), "3");
    }
}
