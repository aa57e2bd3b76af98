//! The Cairn node's service, everything `cairnd` is made of except its
//! arguments, logging and systemd notifications: the request server and its
//! admission rules, swarm membership and gossip, LAN discovery, who owns
//! the box, owners' root records, the steward, the disk watch, the
//! configuration file and the board loop. The shard store is `cairn-store`,
//! the transport `cairn-net`, the wire format `cairn-proto`.

pub mod admission;
pub mod board_loop;
pub mod daemon_config;
pub mod discovery;
pub mod disk_watch;
pub mod disks;
pub mod donation;
pub mod face;
pub mod gossip_codec;
pub mod membership;
pub mod missing;
pub mod net;
pub mod node_status;
pub mod ownership;
pub mod peers;
pub mod rendezvous;
pub mod roots;
pub mod service;
pub mod settings;
pub mod spent;
pub mod steward;
pub mod updates;
