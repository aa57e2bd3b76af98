//! Sealing one chunk into shards and opening it again: encrypt with an AEAD
//! under a key derived from the chunk and the owner's convergence key, then
//! Reed–Solomon into k data + m parity shards of equal length, each named by
//! its BLAKE3 hash. Any k shards bring the chunk back; the plaintext is
//! checked against its key before it is returned.
//!
//! The chunk key is BLAKE3 keyed by the owner's convergence key over the
//! plaintext: one owner's equal chunks seal to the same shards (so they are
//! stored once), while nobody without that key can derive it or test whether
//! the owner stores a given chunk. Each key encrypts exactly one plaintext,
//! so a fixed nonce is safe.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use cairn_proto::ids::ShardId;

/// Associated data of every segment: binds ciphertexts to this format.
const AAD: &[u8] = b"cairn/1 segment";
/// Shard lengths are multiples of this (Reed–Solomon SIMD wants even sizes;
/// 64 keeps its fast paths).
pub const SHARD_ALIGN: usize = 64;
/// The AEAD tag's length.
pub const TAG_LEN: usize = 16;

/// How segments are erasure-coded: k data shards, m parity shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Coding {
    /// Shards needed to read a segment.
    pub k: u8,
    /// Shards that may be lost.
    pub m: u8,
}

impl Default for Coding {
    fn default() -> Self {
        Self { k: 4, m: 2 }
    }
}

impl Coding {
    /// All shards of a segment.
    pub fn total(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Checks the numbers are usable.
    pub fn validate(&self) -> Result<(), SegmentError> {
        if self.k == 0
            || self.m == 0
            || !reed_solomon_simd::ReedSolomonEncoder::supports(self.k.into(), self.m.into())
        {
            return Err(SegmentError::BadCoding(*self));
        }
        Ok(())
    }

    /// The length of each shard of a segment whose ciphertext is `cipher_len` bytes.
    pub fn shard_len(&self, cipher_len: usize) -> usize {
        cipher_len
            .div_ceil(usize::from(self.k))
            .next_multiple_of(SHARD_ALIGN)
            .max(SHARD_ALIGN)
    }
}

/// What went wrong sealing or opening a segment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    /// k or m is zero or beyond what the erasure code supports.
    #[error("erasure coding {}+{} is not supported; k and m must each be at least 1", .0.k, .0.m)]
    BadCoding(Coding),
    /// Fewer than k usable shards.
    #[error(
        "only {have} of the {need} shards needed are available; the segment cannot be read now"
    )]
    NotEnoughShards {
        /// Usable shards given.
        have: usize,
        /// k.
        need: usize,
    },
    /// A shard has the wrong length or index.
    #[error("shard {index} does not belong to this segment (wrong length or index)")]
    BadShard {
        /// Its index.
        index: usize,
    },
    /// Decryption or the plaintext check failed: the shards do not make this segment.
    #[error("the segment does not decrypt to what the manifest names; its shards are wrong")]
    Corrupt,
    /// The erasure code itself failed.
    #[error("erasure coding failed: {0}")]
    Coding(String),
}

/// A chunk sealed into shards, and what the manifest needs to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// The chunk's key (secret: it lives only in the encrypted manifest).
    pub key: [u8; 32],
    /// Plaintext length.
    pub plain_len: u64,
    /// The shards, data first, then parity; index = position.
    pub shards: Vec<(ShardId, Vec<u8>)>,
}

/// ChaCha20-Poly1305 (ring's, the fastest on both x86 and the Pi's NEON)
/// under a chunk key.
fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for ChaCha20-Poly1305")),
    )
}

/// The key of a chunk for an owner.
pub fn chunk_key(convergence: &[u8; 32], plaintext: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(convergence, plaintext).as_bytes()
}

/// Encrypts `plaintext` and erasure-codes it.
pub fn seal(
    convergence: &[u8; 32],
    coding: Coding,
    plaintext: &[u8],
) -> Result<SealedSegment, SegmentError> {
    coding.validate()?;
    let key = chunk_key(convergence, plaintext);
    let shard_len = coding.shard_len(plaintext.len() + TAG_LEN);
    // Encrypted in place inside the buffer the data shards are cut from.
    let mut padded = Vec::with_capacity(shard_len * usize::from(coding.k));
    padded.extend_from_slice(plaintext);
    let tag = aead_key(&key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(AAD),
            &mut padded,
        )
        .map_err(|_| SegmentError::Coding("encryption failed".into()))?;
    padded.extend_from_slice(tag.as_ref());
    padded.resize(shard_len * usize::from(coding.k), 0);
    let data: Vec<&[u8]> = padded.chunks(shard_len).collect();
    let parity = reed_solomon_simd::encode(coding.k.into(), coding.m.into(), &data)
        .map_err(|e| SegmentError::Coding(e.to_string()))?;
    let shards = data
        .into_iter()
        .map(<[u8]>::to_vec)
        .chain(parity)
        .map(|bytes| (ShardId::of(&bytes), bytes))
        .collect();
    Ok(SealedSegment {
        key,
        plain_len: plaintext.len() as u64,
        shards,
    })
}

/// Opens a segment from any k of its shards, `(index, bytes)`, each already
/// verified against its id. Checks the plaintext against `key`.
pub fn open(
    convergence: &[u8; 32],
    coding: Coding,
    key: &[u8; 32],
    plain_len: u64,
    shards: &[(usize, &[u8])],
) -> Result<Vec<u8>, SegmentError> {
    coding.validate()?;
    let k = usize::from(coding.k);
    let cipher_len = usize::try_from(plain_len)
        .ok()
        .and_then(|len| len.checked_add(TAG_LEN))
        .ok_or(SegmentError::Corrupt)?;
    let shard_len = coding.shard_len(cipher_len);
    for &(index, bytes) in shards {
        if index >= coding.total() || bytes.len() != shard_len {
            return Err(SegmentError::BadShard { index });
        }
    }
    let mut data: Vec<Option<&[u8]>> = vec![None; k];
    let mut parity = Vec::new();
    for &(index, bytes) in shards {
        if index < k {
            data[index] = Some(bytes);
        } else {
            parity.push((index - k, bytes));
        }
    }
    let present = data.iter().flatten().count();
    if present + parity.len() < k {
        return Err(SegmentError::NotEnoughShards {
            have: present + parity.len(),
            need: k,
        });
    }
    let mut padded = Vec::with_capacity(shard_len * k);
    if present == k {
        for bytes in data.iter().flatten() {
            padded.extend_from_slice(bytes);
        }
    } else {
        let originals = data
            .iter()
            .enumerate()
            .filter_map(|(i, bytes)| bytes.map(|b| (i, b)));
        let restored = reed_solomon_simd::decode(k, coding.m.into(), originals, parity)
            .map_err(|e| SegmentError::Coding(e.to_string()))?;
        for (i, bytes) in data.iter().enumerate() {
            match bytes {
                Some(bytes) => padded.extend_from_slice(bytes),
                None => padded.extend_from_slice(restored.get(&i).ok_or(SegmentError::Corrupt)?),
            }
        }
    }
    padded.truncate(cipher_len);
    let plaintext_len = aead_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(AAD),
            &mut padded,
        )
        .map_err(|_| SegmentError::Corrupt)?
        .len();
    padded.truncate(plaintext_len);
    let plaintext = padded;
    // The AEAD proves the ciphertext was made with this key; this proves the
    // key is the one the owner's convergence key gives for this plaintext.
    if chunk_key(convergence, &plaintext) != *key {
        return Err(SegmentError::Corrupt);
    }
    Ok(plaintext)
}

/// Rebuilds lost shards of a segment from any k others, without any key:
/// this is what repair runs. `have` are `(index, bytes)`; returns the shards
/// at `want` indices.
pub fn rebuild(
    coding: Coding,
    have: &[(usize, &[u8])],
    want: &[usize],
) -> Result<Vec<(usize, Vec<u8>)>, SegmentError> {
    coding.validate()?;
    let k = usize::from(coding.k);
    let shard_len = have.first().map(|(_, b)| b.len()).unwrap_or(0);
    for &(index, bytes) in have {
        if index >= coding.total() || bytes.len() != shard_len || shard_len == 0 {
            return Err(SegmentError::BadShard { index });
        }
    }
    if have.len() < k {
        return Err(SegmentError::NotEnoughShards {
            have: have.len(),
            need: k,
        });
    }
    let originals = have.iter().filter(|(i, _)| *i < k).map(|&(i, b)| (i, b));
    let recovery = have
        .iter()
        .filter(|(i, _)| *i >= k)
        .map(|&(i, b)| (i - k, b));
    let restored = reed_solomon_simd::decode(k, coding.m.into(), originals, recovery)
        .map_err(|e| SegmentError::Coding(e.to_string()))?;
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(k);
    for i in 0..k {
        match have.iter().find(|(index, _)| *index == i) {
            Some((_, bytes)) => data.push(bytes.to_vec()),
            None => data.push(restored.get(&i).ok_or(SegmentError::Corrupt)?.clone()),
        }
    }
    let parity = if want.iter().any(|&i| i >= k) {
        reed_solomon_simd::encode(k, coding.m.into(), &data)
            .map_err(|e| SegmentError::Coding(e.to_string()))?
    } else {
        Vec::new()
    };
    want.iter()
        .map(|&i| {
            let bytes = if i < k {
                data.get(i).cloned()
            } else {
                parity.get(i - k).cloned()
            };
            bytes
                .map(|b| (i, b))
                .ok_or(SegmentError::BadShard { index: i })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONVERGENCE: [u8; 32] = [3; 32];

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_k_shards_open_the_segment(
            len in 0usize..20_000,
            seed in any::<u8>(),
            k in 1u8..6,
            m in 1u8..4,
            lose in any::<u64>(),
        ) {
            let coding = Coding { k, m };
            let plaintext = bytes(len, seed);
            let sealed = seal(&CONVERGENCE, coding, &plaintext).unwrap();
            prop_assert_eq!(sealed.shards.len(), coding.total());
            // Drop m shards chosen by `lose`.
            let mut indices: Vec<usize> = (0..coding.total()).collect();
            let mut state = lose;
            for _ in 0..m {
                let victim = (state % indices.len() as u64) as usize;
                indices.remove(victim);
                state = state.rotate_left(13) ^ 0x9e37_79b9_7f4a_7c15;
            }
            let kept: Vec<(usize, &[u8])> =
                indices.iter().map(|&i| (i, &sealed.shards[i].1[..])).collect();
            let opened = open(&CONVERGENCE, coding, &sealed.key, sealed.plain_len, &kept).unwrap();
            prop_assert_eq!(opened, plaintext);
            // Repair rebuilds exactly the lost shards, byte for byte, without the key.
            let lost: Vec<usize> = (0..coding.total()).filter(|i| !indices.contains(i)).collect();
            for (i, rebuilt) in rebuild(coding, &kept, &lost).unwrap() {
                prop_assert_eq!(&rebuilt, &sealed.shards[i].1);
            }
        }
    }

    #[test]
    fn equal_chunks_seal_equal_and_owners_differ() {
        let coding = Coding::default();
        let chunk = bytes(5000, 1);
        let a = seal(&CONVERGENCE, coding, &chunk).unwrap();
        let b = seal(&CONVERGENCE, coding, &chunk).unwrap();
        assert_eq!(a, b, "one owner's equal chunks dedup");
        let other = seal(&[4; 32], coding, &chunk).unwrap();
        assert!(
            a.shards.iter().all(|s| !other.shards.contains(s)),
            "another owner's shards share nothing"
        );
    }

    #[test]
    fn no_shard_contains_the_plaintext() {
        let canary = b"CAIRN-CANARY-0123456789".repeat(200);
        let sealed = seal(&CONVERGENCE, Coding::default(), &canary).unwrap();
        for (_, shard) in &sealed.shards {
            assert!(!shard.windows(12).any(|w| w == &canary[..12]));
        }
    }

    #[test]
    fn too_few_or_wrong_shards_are_errors_not_garbage() {
        let coding = Coding::default();
        let plaintext = bytes(10_000, 2);
        let sealed = seal(&CONVERGENCE, coding, &plaintext).unwrap();
        let three: Vec<(usize, &[u8])> = (0..3).map(|i| (i, &sealed.shards[i].1[..])).collect();
        assert_eq!(
            open(&CONVERGENCE, coding, &sealed.key, sealed.plain_len, &three),
            Err(SegmentError::NotEnoughShards { have: 3, need: 4 })
        );
        // A flipped bit in a data shard: decryption refuses it.
        let mut bad = sealed.shards[1].1.clone();
        bad[7] ^= 1;
        let mixed: Vec<(usize, &[u8])> = vec![
            (0, &sealed.shards[0].1),
            (1, &bad),
            (2, &sealed.shards[2].1),
            (3, &sealed.shards[3].1),
        ];
        assert_eq!(
            open(&CONVERGENCE, coding, &sealed.key, sealed.plain_len, &mixed),
            Err(SegmentError::Corrupt)
        );
        // The wrong owner's convergence key: the plaintext check refuses it.
        let four: Vec<(usize, &[u8])> = (0..4).map(|i| (i, &sealed.shards[i].1[..])).collect();
        assert_eq!(
            open(&[9; 32], coding, &sealed.key, sealed.plain_len, &four),
            Err(SegmentError::Corrupt)
        );
    }

    #[test]
    fn unsupported_codings_are_refused() {
        assert!(Coding { k: 0, m: 2 }.validate().is_err());
        assert!(Coding { k: 4, m: 0 }.validate().is_err());
        assert!(Coding { k: 4, m: 2 }.validate().is_ok());
    }
}
