//! IP → country table for `ip_based` conditions on `country`.
//!
//! No table is bundled: with none loaded only the user's own `country`
//! counts. An operator loads one from a file in the **IP2Location LITE DB1
//! CSV** format, one IPv4 range per line:
//!
//! ```text
//! "16777216","16777471","US","United States of America"
//! ```
//!
//! i.e. range start and end as decimal integers (inclusive), the ISO 3166
//! two-letter code, and an ignored name; quotes are optional, blank lines and
//! lines starting with `#` are skipped. A code of `-` or `--` means "no
//! country". Ranges must not overlap. Lookups are IPv4 dotted quads only
//! (`a.b.c.d`, each part an integer 0..=255), by binary search over range
//! starts, as in Statsig's core.

use crate::value::DynValue;
use std::path::Path;

/// Upper bound on the number of ranges accepted from a file.
pub const MAX_IP_RANGES: usize = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum IpTableError {
    #[error("cannot read IP table {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("IP table line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("IP table has more than {MAX_IP_RANGES} ranges")]
    TooLarge,
}

/// A sorted set of IPv4 ranges with their country.
#[derive(Debug, Default)]
pub struct IpTable {
    starts: Vec<u32>,
    ends: Vec<u32>,
    country: Vec<u16>,
    countries: Vec<DynValue>,
}

impl IpTable {
    pub fn load(path: &Path) -> Result<IpTable, IpTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| IpTableError::Io {
            path: path.display().to_string(),
            source,
        })?;
        IpTable::parse_csv(&text)
    }

    pub fn parse_csv(text: &str) -> Result<IpTable, IpTableError> {
        let mut rows: Vec<(u32, u32, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if rows.len() >= MAX_IP_RANGES {
                return Err(IpTableError::TooLarge);
            }
            let bad = |reason: &str| IpTableError::Line {
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut cols = line.splitn(4, ',').map(|c| c.trim().trim_matches('"'));
            let start: u32 = cols
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("range start is not an integer"))?;
            let end: u32 = cols
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("range end is not an integer"))?;
            let code = cols.next().ok_or_else(|| bad("missing country code"))?;
            if end < start {
                return Err(bad("range end is before its start"));
            }
            rows.push((start, end, code.to_string()));
        }
        rows.sort_by_key(|r| r.0);
        let mut table = IpTable::default();
        let mut codes: Vec<String> = Vec::new();
        for (start, end, code) in rows {
            if table.ends.last().is_some_and(|&e| start <= e) {
                return Err(IpTableError::Line {
                    line: 0,
                    reason: format!("range starting at {start} overlaps the previous one"),
                });
            }
            let idx = if code == "-" || code == "--" || code.is_empty() {
                u16::MAX
            } else {
                match codes.iter().position(|c| *c == code) {
                    Some(p) => p as u16,
                    None => {
                        codes.push(code.clone());
                        table.countries.push(DynValue::from_str_value(&code));
                        (codes.len() - 1) as u16
                    }
                }
            };
            table.starts.push(start);
            table.ends.push(end);
            table.country.push(idx);
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The country of a dotted-quad IPv4 address, if any.
    pub fn country(&self, ip: &str) -> Option<&DynValue> {
        let n = parse_ipv4(ip)?;
        let i = self.starts.partition_point(|&s| s <= n).checked_sub(1)?;
        if n > self.ends[i] {
            return None;
        }
        self.countries.get(self.country[i] as usize)
    }
}

fn parse_ipv4(ip: &str) -> Option<u32> {
    let mut out: u32 = 0;
    let mut parts = 0;
    for p in ip.split('.') {
        let v: u8 = p.parse().ok()?;
        out = (out << 8) | v as u32;
        parts += 1;
    }
    (parts == 4).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let t = IpTable::parse_csv(
            "\"16777216\",\"16777471\",\"AU\",\"Australia\"\n\
             # comment\n\
             134744064,134744319,US,United States\n\
             134744320,134744575,-,-\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        let c = |ip| t.country(ip).and_then(|v| v.string.as_deref());
        assert_eq!(c("1.0.0.1"), Some("AU"));
        assert_eq!(c("8.8.8.8"), Some("US"));
        assert_eq!(c("8.8.9.1"), None);
        assert_eq!(c("9.9.9.9"), None);
        assert_eq!(c("0.0.0.1"), None);
        assert_eq!(c("::1"), None);
        assert_eq!(c("1.2.3"), None);
        assert_eq!(c("1.2.3.256"), None);
    }

    #[test]
    fn bad_tables_are_rejected() {
        assert!(IpTable::parse_csv("x,1,US").is_err());
        assert!(IpTable::parse_csv("5,1,US").is_err());
        assert!(IpTable::parse_csv("1,10,US\n5,20,FR").is_err());
        assert!(IpTable::parse_csv("1,10").is_err());
    }
}
