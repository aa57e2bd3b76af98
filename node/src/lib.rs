//! The Cairn storage node: its shard store ([`store`]), which keeps shards
//! on the box's data disks and never loses one it has acknowledged; the wire
//! protocol as plain code ([`proto`]) and its QUIC/Noise transport ([`net`]);
//! and what the daemon `cairnd` (in `src/bin`) is made of.

pub mod client;
pub mod daemon_config;
pub mod discovery;
pub mod disk_watch;
pub mod durable;
pub mod identity;
pub mod ids;
pub mod membership;
pub mod net;
pub mod ownership;
pub mod proto;
pub mod roots;
pub mod steward;
pub mod store;
