//! The Cairn storage node.
//!
//! Today this crate holds the node's shard store ([`store`]): the part of a
//! Cairn box that keeps encrypted, erasure-coded shards on the box's data
//! disks and never loses one it has acknowledged. The daemon `cairnd`, its
//! wire protocol and the owner's client grow around it in later modules.

pub mod daemon_config;
pub mod identity;
pub mod ids;
pub mod net;
pub mod proto;
pub mod store;
