//! Durations written the way Go writes them (`5s`, `100ms`, `1m30s`, `1.5h`), as go-mezzanine's
//! environment variables are.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (examples: 5s, 100ms, 1m30s)")]
pub struct DurationError {
    input: String,
    why: &'static str,
}

/// Parses a Go-style duration: one or more `<number><unit>` with units ns, us, µs, ms, s, m, h.
/// A bare `0` is zero. Negative durations are refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += n * nanos_per;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_examples() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refusals() {
        for bad in ["", "5", "s", "-1s", "5 parsecs", "1x", "..s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Fuzzing: any text, and text made of a duration's pieces, is read or refused with
        /// an error; never a panic, never a negative or overflowing duration.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,24}", pieces in "[-+0-9.eE]{0,12}(ns|us|µs|ms|s|m|h|d|x)?([0-9.]{0,8}(ns|us|ms|s|m|h))?") {
            for t in [text.as_str(), pieces.as_str()] {
                if let Ok(d) = parse_duration(t) {
                    prop_assert!(d <= Duration::from_secs(u64::MAX / 1_000_000_000 + 1), "{t}: {d:?}");
                }
            }
        }

        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")).unwrap(), Duration::from_millis(ms));
        }
    }
}
