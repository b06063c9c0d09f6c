//! JSON numbers as PostgreSQL's JSONB stores them: as `numeric`, which holds at most 131072
//! digits before the decimal point and 16383 after, and which it writes back out in full
//! (`1e3` comes back as `1000`, `1e-3` as `0.001`, `1.50` as `1.50`).
//!
//! [`numeric`] says whether a number's text fits, by the same rules as PostgreSQL's
//! `numeric_in` (so nothing PostgreSQL would refuse reaches it), and how many bytes it takes
//! once written out (so a short text cannot become a huge stored body). Pure; the numbers'
//! texts are never changed (bodies keep every digit).

/// Most digits before the decimal point of a PostgreSQL numeric (its weight, in base-10000
/// digits, is an `int16`: values below 10^131072).
pub const MAX_INTEGER_DIGITS: u64 = 131_072;
/// Most digits after the decimal point of a PostgreSQL numeric (its display scale, 14 bits).
pub const MAX_SCALE: u64 = 16_383;
/// `numeric_in` refuses an exponent of this magnitude or more whatever the digits (it keeps
/// its arithmetic within `int`); PostgreSQL 16 accepts exactly this value, older versions do
/// not, so it is refused here.
pub const MAX_EXPONENT: u64 = (i32::MAX / 2) as u64;

/// Where exponents saturate while being read (anything this large is refused anyway).
const EXPONENT_CAP: i64 = 1 << 40;

/// Why a JSON number cannot be stored by PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("is not a JSON number")]
    Syntax,
    #[error(
        "is outside PostgreSQL's numeric range: {digits} digits before the decimal point once \
         written out (at most {MAX_INTEGER_DIGITS})"
    )]
    TooLarge { digits: u64 },
    #[error(
        "is outside PostgreSQL's numeric range: {scale} digits after the decimal point once \
         written out (at most {MAX_SCALE})"
    )]
    TooPrecise { scale: u64 },
    #[error(
        "is outside PostgreSQL's numeric range: its exponent's magnitude must be below \
         {MAX_EXPONENT}"
    )]
    Exponent,
}

/// A number PostgreSQL can store, as it will be written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric {
    /// Digits before the decimal point (1 for `0` and for magnitudes below 1).
    pub integer_digits: u64,
    /// Digits after the decimal point (PostgreSQL's display scale).
    pub scale: u64,
    /// Whether a minus sign is written (not for zero: `-0` is stored as `0`).
    pub negative: bool,
}

impl Numeric {
    /// Bytes of the number written out in full, as PostgreSQL returns it.
    pub fn stored_len(&self) -> u64 {
        u64::from(self.negative)
            + self.integer_digits
            + if self.scale > 0 { 1 + self.scale } else { 0 }
    }
}

/// Reads the text of a JSON number (`-?digits(.digits)?([eE][+-]?digits)?`) the way
/// PostgreSQL's `numeric_in` does, without building it: whether it is within PostgreSQL's
/// range, and its shape once written out. Linear in the text; exponents of any length.
pub fn numeric(text: &str) -> Result<Numeric, NumericError> {
    let b = text.as_bytes();
    let mut i = 0;
    let minus = b.first() == Some(&b'-');
    if minus {
        i += 1;
    }
    let digits_from = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        &b[start..*i]
    };
    let int = digits_from(&mut i);
    if int.is_empty() {
        return Err(NumericError::Syntax);
    }
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = digits_from(&mut i);
        if frac.is_empty() {
            return Err(NumericError::Syntax);
        }
    }
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative_exp = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let e = digits_from(&mut i);
        if e.is_empty() {
            return Err(NumericError::Syntax);
        }
        for d in e {
            exp = (exp * 10 + i64::from(d - b'0')).min(EXPONENT_CAP);
        }
        if exp.unsigned_abs() >= MAX_EXPONENT {
            return Err(NumericError::Exponent);
        }
        if negative_exp {
            exp = -exp;
        }
    }
    if i != b.len() {
        return Err(NumericError::Syntax);
    }

    // The display scale: the fraction's digits, less the exponent, never below 0.
    let scale = (frac.len() as i64 - exp).max(0) as u64;
    if scale > MAX_SCALE {
        return Err(NumericError::TooPrecise { scale });
    }
    // The first significant digit and its power of ten.
    let first = int
        .iter()
        .chain(frac)
        .position(|d| *d != b'0')
        .map(|k| int.len() as i64 - 1 - k as i64 + exp);
    let Some(power) = first else {
        // Zero: stored as 0 with the scale, without a sign.
        return Ok(Numeric {
            integer_digits: 1,
            scale,
            negative: false,
        });
    };
    if power >= MAX_INTEGER_DIGITS as i64 {
        return Err(NumericError::TooLarge {
            digits: power as u64 + 1,
        });
    }
    Ok(Numeric {
        integer_digits: (power + 1).max(1) as u64,
        scale,
        negative: minus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn len(t: &str) -> u64 {
        numeric(t).unwrap().stored_len()
    }

    #[test]
    fn plain_numbers_keep_their_length() {
        for t in [
            "0",
            "1",
            "-1",
            "10",
            "123.456",
            "-0.001",
            "1.000",
            "0.0",
            "9007199254740993",
        ] {
            assert_eq!(len(t), t.len() as u64, "{t}");
        }
    }

    #[test]
    fn exponents_are_written_out() {
        assert_eq!(len("1e3"), 4); // 1000
        assert_eq!(len("1.5e3"), 4); // 1500
        assert_eq!(len("1E+3"), 4);
        assert_eq!(len("1e-3"), 5); // 0.001
        assert_eq!(len("-1e-3"), 6);
        assert_eq!(len("123e-2"), 4); // 1.23
        assert_eq!(len("1.000e2"), 5); // 100.0
        assert_eq!(len("-0"), 1); // 0
        assert_eq!(len("-0.00"), 4); // 0.00
        assert_eq!(len("0e1000000"), 1); // 0
        assert_eq!(len("0.5e-2"), 5); // 0.005
    }

    #[test]
    fn the_range_is_postgresqls() {
        assert_eq!(len("1e131071"), 131_072);
        assert_eq!(len("-9.99e131071"), 131_073);
        assert_eq!(len("0.1e131072"), 131_072);
        assert_eq!(
            numeric("1e131072"),
            Err(NumericError::TooLarge { digits: 131_073 })
        );
        assert_eq!(
            numeric("-1e131072"),
            Err(NumericError::TooLarge { digits: 131_073 })
        );
        assert_eq!(len("1e-16383"), 16_385);
        assert_eq!(len("1.5e-16382"), 16_385);
        assert_eq!(
            numeric("1e-16384"),
            Err(NumericError::TooPrecise { scale: 16_384 })
        );
        // Zero too: its scale is what counts.
        assert_eq!(
            numeric("0e-16384"),
            Err(NumericError::TooPrecise { scale: 16_384 })
        );
        assert_eq!(
            numeric("0.0e-16383"),
            Err(NumericError::TooPrecise { scale: 16_384 })
        );
        assert_eq!(numeric("0e1073741823"), Err(NumericError::Exponent));
        assert_eq!(numeric("1e-1073741823"), Err(NumericError::Exponent));
        let long_exp = format!("1e{}", "9".repeat(100_000));
        assert_eq!(numeric(&long_exp), Err(NumericError::Exponent));
        let zeros_then_one = format!("1e{}1", "0".repeat(100_000));
        assert_eq!(len(&zeros_then_one), 2);
    }

    #[test]
    fn not_numbers() {
        for t in [
            "", "-", "1.", ".5", "1e", "1e+", "1x", "--1", "+1", "1.5.5", "NaN",
        ] {
            assert_eq!(numeric(t), Err(NumericError::Syntax), "{t:?}");
        }
    }

    /// The model: the number written out in full by string manipulation, as PostgreSQL's
    /// `numeric_out` writes it (leading zeros dropped, one `0` before the point at least, the
    /// fraction padded to the scale, no sign on zero).
    fn written_out(neg: bool, int: &str, frac: &str, exp: i64) -> String {
        let digits = format!("{int}{frac}");
        let point = int.len() as i64 + exp; // digits before the point
        let scale = (frac.len() as i64 - exp).max(0) as usize;
        let (mut ip, mut fp) = if point <= 0 {
            (
                String::new(),
                format!("{}{digits}", "0".repeat((-point) as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            let (a, b) = digits.split_at(point as usize);
            (a.to_owned(), b.to_owned())
        };
        ip = ip.trim_start_matches('0').to_owned();
        if ip.is_empty() {
            ip = "0".into();
        }
        while fp.len() < scale {
            fp.push('0');
        }
        fp.truncate(scale);
        let zero = digits.bytes().all(|d| d == b'0');
        let sign = if neg && !zero { "-" } else { "" };
        if scale > 0 {
            format!("{sign}{ip}.{fp}")
        } else {
            format!("{sign}{ip}")
        }
    }

    proptest! {
        #[test]
        fn the_length_is_that_of_the_number_written_out(
            neg in any::<bool>(),
            int in "(0|[1-9][0-9]{0,6})",
            frac in proptest::option::of("[0-9]{1,6}"),
            exp in proptest::option::of(-40i64..40),
            upper in any::<bool>(),
        ) {
            let frac_s = frac.clone().unwrap_or_default();
            let mut text = format!("{}{int}", if neg { "-" } else { "" });
            if let Some(f) = &frac {
                text.push('.');
                text.push_str(f);
            }
            if let Some(e) = exp {
                text.push_str(&format!("{}{e}", if upper { "E" } else { "e" }));
            }
            let full = written_out(neg, &int, &frac_s, exp.unwrap_or(0));
            let n = numeric(&text).unwrap();
            prop_assert_eq!(n.stored_len(), full.len() as u64, "{} → {}", text, full);
            let (ip, fp) = full.trim_start_matches('-').split_once('.').unwrap_or((full.trim_start_matches('-'), ""));
            prop_assert_eq!(n.integer_digits, ip.len() as u64);
            prop_assert_eq!(n.scale, fp.len() as u64);
        }

        #[test]
        fn the_bounds_are_exact(
            digits in "[1-9][0-9]{0,5}",
            frac in "[0-9]{0,5}",
            slack in -3i64..3,
        ) {
            // The exponent that puts the first digit at 10^131071, give or take `slack`.
            let exp = 131_071 - (digits.len() as i64 - 1) + slack;
            let text = if frac.is_empty() { format!("{digits}e{exp}") } else { format!("{digits}.{frac}e{exp}") };
            prop_assert_eq!(numeric(&text).is_ok(), slack <= 0, "{}", text);
            // The exponent that makes the scale 16383, give or take `slack`.
            let exp = -(16_383 - frac.len() as i64) - slack;
            let text = if frac.is_empty() { format!("{digits}e{exp}") } else { format!("{digits}.{frac}e{exp}") };
            prop_assert_eq!(numeric(&text).is_ok(), slack <= 0, "{}", text);
        }

        #[test]
        fn every_double_fits(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default();
            let n = numeric(&text);
            prop_assert!(n.is_ok(), "{} {:?}", text, n);
        }
    }
}
