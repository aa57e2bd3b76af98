//! The owner's side of Cairn, as plain code: the owner's keys and recovery
//! phrase, sealing chunks into encrypted, erasure-coded shards (and opening
//! and rebuilding them), and choosing where shards go. No I/O here; the
//! `cairn` tool moves the bytes.

pub mod catalog;
pub mod chunk;
pub mod keys;
pub mod placement;
pub mod segment;
pub mod swarm;
