//! The node's tokio services on top of `cairn-net`: the request server,
//! gossip, the LAN responder and the steward's round. Each one turns the
//! decisions of the plain-code modules beside them into I/O.

pub mod discovery;
pub mod gossip;
pub mod handler;
pub mod portmap;
pub mod reach;
pub mod server;
pub mod steward;
pub mod update_fetch;
pub mod web;

pub use handler::{AllowList, ServerConfig, Services};
pub use server::Server;
