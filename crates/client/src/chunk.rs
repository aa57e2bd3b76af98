//! Content-defined chunking (FastCDC 2020), keyed per owner: the gear table
//! is mixed with the owner's seed, so equal data of one owner is cut the same
//! way in every file and version (and stored once), while the cut points say
//! nothing that another owner's would. Streams: memory is bounded by the
//! largest chunk.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

/// Chunk size bounds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// No chunk is smaller, except a file's last.
    pub min: usize,
    /// The typical chunk.
    pub avg: usize,
    /// No chunk is larger.
    pub max: usize,
}

impl Default for ChunkSizes {
    /// 1 MiB chunks on average: a 4+2 segment makes ~256 KiB shards, and a
    /// 1 MiB edit in a large file re-uploads a few MiB.
    fn default() -> Self {
        Self {
            min: 256 << 10,
            avg: 1 << 20,
            max: 4 << 20,
        }
    }
}

/// Splits `reader` into chunks, keyed by `seed`.
pub fn chunks<R: Read>(
    reader: R,
    seed: u64,
    sizes: ChunkSizes,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamCDC::with_level_and_seed(
        reader,
        sizes.min,
        sizes.avg,
        sizes.max,
        Normalization::Level1,
        seed,
    )
    .map(|chunk| {
        chunk.map(|c| c.data).map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: ChunkSizes = ChunkSizes {
        min: 2 << 10,
        avg: 8 << 10,
        max: 32 << 10,
    };

    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn cut(bytes: &[u8], seed: u64) -> Vec<Vec<u8>> {
        chunks(bytes, seed, SMALL).map(Result::unwrap).collect()
    }

    #[test]
    fn chunks_rebuild_the_input_within_bounds() {
        for len in [0, 1, 100, 2048, 70_000, 1_000_000] {
            let input = data(len, 1);
            let pieces = cut(&input, 7);
            assert_eq!(pieces.concat(), input);
            let (last, rest) = match pieces.split_last() {
                Some(split) => split,
                None => continue,
            };
            assert!(last.len() <= SMALL.max);
            assert!(
                rest.iter()
                    .all(|c| (SMALL.min..=SMALL.max).contains(&c.len()))
            );
        }
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let original = data(4 << 20, 2);
        let mut edited = original.clone();
        let middle = edited.len() / 2;
        edited[middle..middle + (64 << 10)].copy_from_slice(&data(64 << 10, 3));
        let before: std::collections::HashSet<Vec<u8>> = cut(&original, 7).into_iter().collect();
        let after = cut(&edited, 7);
        let new_bytes: usize = after
            .iter()
            .filter(|c| !before.contains(*c))
            .map(Vec::len)
            .sum();
        // The 64 KiB edit plus the chunks it touches at each end.
        assert!(
            new_bytes <= (64 << 10) + 2 * SMALL.max,
            "{new_bytes} new bytes"
        );
    }

    #[test]
    fn owners_cut_the_same_data_differently() {
        let input = data(1 << 20, 4);
        let a = cut(&input, 7);
        let b = cut(&input, 8);
        let lens_a: Vec<usize> = a.iter().map(Vec::len).collect();
        let lens_b: Vec<usize> = b.iter().map(Vec::len).collect();
        assert_ne!(lens_a, lens_b);
    }
}
