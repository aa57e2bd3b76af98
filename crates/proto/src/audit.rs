//! Audits: the challenger names random byte ranges of a shard; the holder
//! answers with bao slices (the bytes plus the BLAKE3 tree nodes that link
//! them to the root); the challenger checks them against nothing but the
//! shard id, which is that root. No stored challenges, unlimited audits.

use std::io::{Cursor, Read};

use crate::ids::ShardId;

/// BLAKE3's chunk size: ranges aligned to it carry no wasted bytes.
pub const CHUNK: u64 = 1024;
/// Most ranges one audit may name.
pub const MAX_RANGES: usize = 16;
/// Longest range one audit may name.
pub const MAX_RANGE_LEN: u64 = 64 * 1024;

/// Why an audit request or answer is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    /// The challenge names too many or too long ranges.
    #[error("an audit may name at most {MAX_RANGES} ranges of at most {MAX_RANGE_LEN} bytes")]
    TooLarge,
    /// A range is empty or lies outside the shard.
    #[error("range {offset}+{len} is empty or outside a shard of {shard_len} bytes")]
    OutOfBounds {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// The shard's length.
        shard_len: u64,
    },
    /// The answer has a different number of slices than ranges asked.
    #[error("the answer has {got} slices for {asked} ranges")]
    WrongCount {
        /// Slices received.
        got: usize,
        /// Ranges asked.
        asked: usize,
    },
    /// A slice does not verify against the shard id: the holder lied or lost data.
    #[error("slice {index} does not verify against the shard id")]
    Forged {
        /// Which slice.
        index: usize,
    },
}

/// Picks `count` chunk-aligned ranges of `range_len` bytes (shorter at the
/// end of the shard) from a shard of `shard_len` bytes, from a random `seed`
/// the challenger chooses. Deterministic in its inputs.
pub fn challenge(seed: [u8; 32], shard_len: u64, count: usize, range_len: u64) -> Vec<(u64, u64)> {
    if shard_len == 0 {
        return Vec::new();
    }
    let count = count.min(MAX_RANGES);
    let range_len = range_len.clamp(1, MAX_RANGE_LEN);
    let chunks = shard_len.div_ceil(CHUNK);
    let mut stream = blake3::Hasher::new_keyed(&seed).finalize_xof();
    (0..count)
        .map(|_| {
            let mut word = [0u8; 8];
            stream.fill(&mut word);
            let offset = (u64::from_le_bytes(word) % chunks) * CHUNK;
            (offset, range_len.min(shard_len - offset))
        })
        .collect()
}

/// Checks how many and how long the ranges are (before the shard is read).
pub fn check_size(ranges: &[(u64, u64)]) -> Result<(), AuditError> {
    if ranges.len() > MAX_RANGES || ranges.iter().any(|&(_, len)| len > MAX_RANGE_LEN) {
        return Err(AuditError::TooLarge);
    }
    Ok(())
}

/// Checks the ranges of an audit request against the shard's length.
pub fn validate(ranges: &[(u64, u64)], shard_len: u64) -> Result<(), AuditError> {
    check_size(ranges)?;
    for &(offset, len) in ranges {
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > shard_len) {
            return Err(AuditError::OutOfBounds {
                offset,
                len,
                shard_len,
            });
        }
    }
    Ok(())
}

/// The holder's side: bao slices of `shard` for each range. The caller has
/// validated the ranges.
pub fn prove(shard: &[u8], ranges: &[(u64, u64)]) -> std::io::Result<Vec<Vec<u8>>> {
    let (outboard, _) = bao::encode::outboard(shard);
    ranges
        .iter()
        .map(|&(offset, len)| {
            let mut slice = Vec::new();
            bao::encode::SliceExtractor::new_outboard(
                Cursor::new(shard),
                Cursor::new(&outboard[..]),
                offset,
                len,
            )
            .read_to_end(&mut slice)?;
            Ok(slice)
        })
        .collect()
}

/// The challenger's side: verifies each slice against the shard id and the
/// shard's length (which the challenger knows from storing it), and returns
/// the bytes of each range.
pub fn verify(
    id: &ShardId,
    shard_len: u64,
    ranges: &[(u64, u64)],
    slices: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, AuditError> {
    if slices.len() != ranges.len() {
        return Err(AuditError::WrongCount {
            got: slices.len(),
            asked: ranges.len(),
        });
    }
    let root = bao::Hash::from(id.0);
    ranges
        .iter()
        .zip(slices)
        .enumerate()
        .map(|(index, (&(offset, len), slice))| {
            // A slice starts with the shard's length. Bao authenticates it only in
            // slices that reach the last chunk, so it is checked here for all.
            if slice.get(..8) != Some(&shard_len.to_le_bytes()[..]) {
                return Err(AuditError::Forged { index });
            }
            let mut bytes = Vec::new();
            bao::decode::SliceDecoder::new(&slice[..], &root, offset, len)
                .read_to_end(&mut bytes)
                .map_err(|_| AuditError::Forged { index })?;
            if bytes.len() as u64 != len {
                return Err(AuditError::Forged { index });
            }
            Ok(bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: usize, seed: u8) -> (ShardId, Vec<u8>) {
        let mut bytes = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut bytes);
        (ShardId::of(&bytes), bytes)
    }

    #[test]
    fn an_honest_holder_passes_for_many_sizes_and_seeds() {
        for len in [1, 1023, 1024, 1025, 5000, 65_536, 300_001] {
            let (id, bytes) = shard(len, len as u8);
            for seed in 0..8u8 {
                let ranges = challenge([seed; 32], len as u64, 4, 2048);
                validate(&ranges, len as u64).unwrap();
                let slices = prove(&bytes, &ranges).unwrap();
                let got = verify(&id, len as u64, &ranges, &slices).unwrap();
                for ((offset, len), part) in ranges.iter().zip(got) {
                    assert_eq!(part, bytes[*offset as usize..(offset + len) as usize]);
                }
            }
        }
    }

    #[test]
    fn any_flipped_bit_in_a_proof_is_caught() {
        let (id, bytes) = shard(200_000, 1);
        let ranges = challenge([7; 32], 200_000, 2, 4096);
        let slices = prove(&bytes, &ranges).unwrap();
        for position in (0..slices[1].len()).step_by(97) {
            let mut forged = slices.clone();
            forged[1][position] ^= 0x10;
            assert_eq!(
                verify(&id, 200_000, &ranges, &forged).map(|_| ()),
                Err(AuditError::Forged { index: 1 }),
                "flip at {position}"
            );
        }
    }

    #[test]
    fn a_holder_of_other_bytes_fails() {
        let (id, _) = shard(100_000, 2);
        let (_, other) = shard(100_000, 3);
        let ranges = challenge([1; 32], 100_000, 3, 1024);
        let slices = prove(&other, &ranges).unwrap();
        assert!(matches!(
            verify(&id, 100_000, &ranges, &slices),
            Err(AuditError::Forged { .. })
        ));
        assert_eq!(
            verify(&id, 100_000, &ranges, &slices[..2]),
            Err(AuditError::WrongCount { got: 2, asked: 3 })
        );
    }

    #[test]
    fn challenges_stay_inside_the_shard_and_differ_by_seed() {
        let a = challenge([1; 32], 10_000, 8, 4096);
        let b = challenge([2; 32], 10_000, 8, 4096);
        assert_ne!(a, b);
        validate(&a, 10_000).unwrap();
        assert!(a.iter().all(|(offset, _)| offset % CHUNK == 0));
        assert_eq!(
            validate(&[(9_000, 2_000)], 10_000),
            Err(AuditError::OutOfBounds {
                offset: 9_000,
                len: 2_000,
                shard_len: 10_000
            })
        );
        assert_eq!(validate(&[(0, 1); 17], 10), Err(AuditError::TooLarge));
    }
}
