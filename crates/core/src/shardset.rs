//! Sets of shards as operators write them: `8-15`, `3`, `0-3,8,10-12`.

/// Why a shard set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardSetError {
    #[error("empty: write a shard (\"8\"), a range (\"8-15\") or a list (\"0-3,8,10-12\")")]
    Empty,
    #[error("{part:?} is not a shard number or a range like 8-15 (a list: 0-3,8,10-12)")]
    Syntax { part: String },
    #[error("shard {shard} does not exist: the shards are 0-{max} (NUM_SHARDS is {num_shards})")]
    OutOfRange {
        shard: u64,
        max: u32,
        num_shards: u32,
    },
    #[error("range {start}-{end} is backwards: write {end}-{start}")]
    Inverted { start: u32, end: u32 },
}

/// Reads a shard set against `num_shards`: sorted, without repeats.
pub fn parse_shard_set(text: &str, num_shards: u32) -> Result<Vec<u32>, ShardSetError> {
    let mut out = Vec::new();
    if text.trim().is_empty() {
        return Err(ShardSetError::Empty);
    }
    for part in text.split(',') {
        let part = part.trim();
        let syntax = || ShardSetError::Syntax {
            part: part.to_owned(),
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let number = |t: &str| -> Result<u32, ShardSetError> {
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(syntax());
            }
            let v: u64 = t.parse().map_err(|_| syntax())?;
            if v >= u64::from(num_shards) {
                return Err(ShardSetError::OutOfRange {
                    shard: v,
                    max: num_shards.saturating_sub(1),
                    num_shards,
                });
            }
            Ok(v as u32)
        };
        let (start, end) = (number(a)?, number(b)?);
        if start > end {
            return Err(ShardSetError::Inverted { start, end });
        }
        out.extend(start..=end);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A range of shards as a user writes it: `shard 31`, `shards 64-127`.
pub fn shard_range_text(start: u32, end: u32) -> String {
    match start == end {
        true => format!("shard {start}"),
        false => format!("shards {start}-{end}"),
    }
}

/// Writes a sorted shard set compactly: `[0,1,2,3,8]` → `0-3,8`.
pub fn format_shard_set(shards: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_operators_write() {
        assert_eq!(
            parse_shard_set("8-15", 64).unwrap(),
            (8..=15).collect::<Vec<_>>()
        );
        assert_eq!(parse_shard_set("3", 64).unwrap(), vec![3]);
        assert_eq!(
            parse_shard_set(" 0-2, 8 ,2-3", 64).unwrap(),
            vec![0, 1, 2, 3, 8]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse_shard_set("", 64), Err(ShardSetError::Empty));
        assert!(matches!(
            parse_shard_set("8-", 64),
            Err(ShardSetError::Syntax { .. })
        ));
        assert!(matches!(
            parse_shard_set("-3", 64),
            Err(ShardSetError::Syntax { .. })
        ));
        assert!(matches!(
            parse_shard_set("a", 64),
            Err(ShardSetError::Syntax { .. })
        ));
        assert_eq!(
            parse_shard_set("60-64", 64).unwrap_err().to_string(),
            "shard 64 does not exist: the shards are 0-63 (NUM_SHARDS is 64)"
        );
        assert_eq!(
            parse_shard_set("9-8", 64).unwrap_err().to_string(),
            "range 9-8 is backwards: write 8-9"
        );
        assert_eq!(shard_range_text(31, 31), "shard 31");
        assert_eq!(shard_range_text(64, 127), "shards 64-127");
        assert_eq!(
            parse_shard_set("9-8", 64),
            Err(ShardSetError::Inverted { start: 9, end: 8 })
        );
        assert!(matches!(
            parse_shard_set("99999999999999999999999", 64),
            Err(ShardSetError::Syntax { .. })
        ));
    }

    proptest! {
        /// Fuzzing: any text, and text made of a shard set's pieces, is read or refused with
        /// an error; never a panic. What is read is sorted, without repeats, in range.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,30}", pieces in "[0-9, \\-]{0,30}", n in 1u32..5000) {
            for t in [text.as_str(), pieces.as_str()] {
                if let Ok(set) = parse_shard_set(t, n) {
                    prop_assert!(!set.is_empty());
                    prop_assert!(set.windows(2).all(|w| w[0] < w[1]), "{t}: {set:?}");
                    prop_assert!(set.iter().all(|&s| s < n));
                }
            }
        }

        #[test]
        fn format_then_parse_round_trips(set in proptest::collection::btree_set(0u32..500, 1..60)) {
            let v: Vec<u32> = set.into_iter().collect();
            let text = format_shard_set(&v);
            prop_assert_eq!(parse_shard_set(&text, 500).unwrap(), v);
        }
    }
}
