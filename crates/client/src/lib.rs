//! The owner's side of Cairn as a library, for the `cairn` tool and for any
//! program that stores files in a Cairn swarm.
//!
//! Plain code: the owner's keys and recovery phrase ([`keys`]), chunking
//! ([`chunk`]), sealing chunks into encrypted, erasure-coded shards and
//! opening or rebuilding them ([`segment`]), choosing where shards go
//! ([`placement`]), references to stored segments and the sealed root
//! pointer ([`catalog`]), snapshots as trees of directory nodes with packed
//! small files ([`tree`], format in `docs/SNAPSHOTS.md`) and retention
//! rules ([`retention`]). I/O: [`swarm::Swarm`] moves pieces to and from
//! the nodes; [`backup`] builds a new snapshot from the previous one,
//! [`restore`] brings trees back, [`local`] keeps the tree cache and the
//! put journal; [`Session`] is the file-level API on top (put, get, restore,
//! list, versions, remove, forget, prune, status), and [`account`] the
//! owner's identity, nodes and swarm. Every operation returns a report type; nothing here
//! prints, parses arguments or touches a node's store.
//!
//! Storing a file and reading it back (the `store-and-read` example runs
//! this against a local swarm):
//!
//! ```no_run
//! use cairn_client::{ClientError, ClientHome, Excludes, NoProgress, Selector, Session, account};
//! use cairn_proto::{NodeAddr, NodeId};
//!
//! async fn store_and_read(node: NodeId) -> Result<Vec<u8>, ClientError> {
//!     let home = ClientHome::at("/tmp/my-app/cairn");
//!     let identity = account::init(&home, false)?; // once; keep identity.phrase
//!     // The node must admit identity.client_key (its allow list, a claim or a swarm).
//!     let entry = NodeAddr { node, addr: "127.0.0.1:7420".into(), site: None };
//!     account::add_node(&home, &entry, true)?;
//!
//!     let mut session = Session::open(home).await?;
//!     session.put(&["/home/me/report.pdf".into()], &Excludes::default(), &NoProgress).await?;
//!     let (_, bytes) = session
//!         .get_to_writer("/home/me/report.pdf", Selector::Latest, Vec::new(), &NoProgress)
//!         .await?;
//!     session.close().await;
//!     Ok(bytes)
//! }
//! ```

pub mod account;
pub mod backup;
pub mod catalog;
pub mod chunk;
mod error;
pub mod home;
pub mod keys;
pub mod local;
pub mod placement;
pub mod restore;
pub mod retention;
pub mod segment;
pub mod session;
pub mod swarm;
pub mod tree;
mod writeback;

pub use backup::{Excludes, PutSummary};
pub use catalog::Selector;
pub use error::ClientError;
pub use home::{ClientConfig, ClientHome};
pub use retention::Policy;
pub use session::{NoProgress, Progress, Session, SnapshotPick};
