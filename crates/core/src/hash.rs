//! The shard function shared with go-mezzanine: `fnv1a_32(bytes) % num_shards`.

use uuid::Uuid;

const OFFSET_BASIS: u32 = 0x811c_9dc5;
const PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits: for each byte, xor then multiply.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}

/// The shard of a row key: FNV-1a over the 16 raw bytes of the UUID.
pub fn shard_for_row_key(row_key: &Uuid, num_shards: u32) -> u32 {
    fnv1a_32(row_key.as_bytes()) % num_shards.max(1)
}

/// The shard of a string key (secondary-index values): FNV-1a over its UTF-8 bytes.
pub fn shard_for_str(key: &str, num_shards: u32) -> u32 {
    fnv1a_32(key.as_bytes()) % num_shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    #[test]
    fn design_vectors_for_uuids() {
        let cases = [
            ("550e8400-e29b-41d4-a716-446655440000", 0x5cb5_50b2, 50, 178),
            ("00000000-0000-0000-0000-000000000000", 0x6969_1905, 5, 2309),
            (
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                0x3607_79f5,
                53,
                2549,
            ),
        ];
        for (key, hash, m64, m4096) in cases {
            let u = uuid(key);
            assert_eq!(fnv1a_32(u.as_bytes()), hash, "{key}");
            assert_eq!(shard_for_row_key(&u, 64), m64, "{key}");
            assert_eq!(shard_for_row_key(&u, 4096), m4096, "{key}");
        }
    }

    #[test]
    fn design_vectors_for_strings() {
        let cases = [
            ("alice@example.com", 0x94a4_b546, 6, 1350),
            ("a", 0xe40c_292c, 44, 2348),
        ];
        for (key, hash, m64, m4096) in cases {
            assert_eq!(fnv1a_32(key.as_bytes()), hash, "{key}");
            assert_eq!(shard_for_str(key, 64), m64, "{key}");
            assert_eq!(shard_for_str(key, 4096), m4096, "{key}");
        }
    }

    #[test]
    fn empty_input_is_the_offset_basis() {
        assert_eq!(fnv1a_32(&[]), OFFSET_BASIS);
    }

    proptest! {
        #[test]
        fn shard_is_always_in_range(bytes in any::<[u8; 16]>(), n in 1u32..=65536) {
            let u = Uuid::from_bytes(bytes);
            prop_assert!(shard_for_row_key(&u, n) < n);
        }

        #[test]
        fn string_and_bytes_agree(s in ".*") {
            prop_assert_eq!(shard_for_str(&s, 4096), fnv1a_32(s.as_bytes()) % 4096);
        }
    }
}
