//! Helpers shared by the tests that run real `cairnd` and `cairn` processes.
#![allow(dead_code)] // each test uses a different part

pub mod daemon;
pub mod lab;
pub mod owner;

/// `len` bytes that depend only on `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}
