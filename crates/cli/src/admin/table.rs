//! Plain-text tables and the small number formats the admin commands print.

use std::time::Duration;

/// A table with a header row, columns left-aligned and two spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `8` for one shard, `8-15` for a range.
pub fn shard_range(start: u64, end: u64) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}

/// A latency in milliseconds with two significant-ish digits: `0.42 ms`, `3.1 ms`, `120 ms`.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "-".to_owned()
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A count with a metric suffix: `950`, `12.3k`, `4.0M`, `1.2G`.
pub fn count(n: f64) -> String {
    let n = if n.is_finite() { n.max(0.0) } else { 0.0 };
    for (unit, scale) in [("G", 1e9), ("M", 1e6), ("k", 1e3)] {
        if n >= scale * 0.9995 {
            return format!("{:.1}{unit}", n / scale);
        }
    }
    format!("{n:.0}")
}

/// A duration for an ETA: `45s`, `3m20s`, `2h05m`.
pub fn eta(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `1200/5000 (24%)`, or what is known of it.
pub fn rows_progress(copied: Option<u64>, total: Option<u64>) -> String {
    match (copied, total) {
        (Some(c), Some(t)) if t > 0 => format!("{c}/{t} ({}%)", percent(c, t)),
        (Some(c), Some(t)) => format!("{c}/{t}"),
        (Some(c), None) => c.to_string(),
        (None, Some(t)) => format!("-/{t}"),
        (None, None) => "-".to_owned(),
    }
}

/// `copied` as a whole percentage of `total`, at most 100 and never rounded up to 100.
pub fn percent(copied: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    let p = (copied.min(total) as u128 * 100 / total as u128) as u64;
    p.min(100)
}

/// A size in bytes with a decimal unit: `512 B`, `1.5 kB`, `33.6 MB`, `1.2 GB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    for (unit, scale) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if n >= scale {
            return format!("{:.1} {unit}", n / scale);
        }
    }
    format!("{n:.0} B")
}

/// A whole number as such, anything else with one decimal: `8`, `1365.3`.
pub fn amount(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

/// A backend's weight, and whether it drains: `1`, `2.5 draining`.
pub fn weight_label(weight: f64, draining: Option<bool>) -> String {
    if draining == Some(true) {
        format!("{weight} draining")
    } else {
        weight.to_string()
    }
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_amounts_and_weights() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(33_600_000), "33.6 MB");
        assert_eq!(amount(8.0), "8");
        assert_eq!(amount(1365.333), "1365.3");
        assert_eq!(weight_label(1.0, Some(false)), "1");
        assert_eq!(weight_label(2.5, Some(true)), "2.5 draining");
    }

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let t = table(
            &["NAME", "URL", "UP"],
            &[
                vec!["db1".into(), "postgres://a".into(), "yes".into()],
                vec!["db10".into(), "p".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME  URL           UP\n\
             db1   postgres://a  yes\n\
             db10  p\n"
        );
    }

    #[test]
    fn short_rows_and_wide_characters() {
        let t = table(&["A", "B"], &[vec!["é".into()], vec![]]);
        assert_eq!(t, "A  B\né\n\n");
    }

    #[test]
    fn ranges() {
        assert_eq!(shard_range(8, 8), "8");
        assert_eq!(shard_range(0, 31), "0-31");
    }

    #[test]
    fn numbers() {
        assert_eq!(millis(0.4), "0.40 ms");
        assert_eq!(millis(3.04), "3.0 ms");
        assert_eq!(millis(120.4), "120 ms");
        assert_eq!(millis(f64::NAN), "-");
        assert_eq!(count(950.0), "950");
        assert_eq!(count(999.7), "1.0k");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(count(4_000_000.0), "4.0M");
        assert_eq!(count(-1.0), "0");
        assert_eq!(eta(Duration::from_secs(45)), "45s");
        assert_eq!(eta(Duration::from_secs(200)), "3m20s");
        assert_eq!(eta(Duration::from_secs(7500)), "2h05m");
    }

    #[test]
    fn progress() {
        assert_eq!(rows_progress(Some(1200), Some(5000)), "1200/5000 (24%)");
        assert_eq!(rows_progress(Some(0), Some(0)), "0/0");
        assert_eq!(rows_progress(None, Some(5)), "-/5");
        assert_eq!(rows_progress(None, None), "-");
        assert_eq!(percent(4999, 5000), 99);
        assert_eq!(percent(6000, 5000), 100);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}
