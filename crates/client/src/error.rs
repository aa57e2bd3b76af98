//! What can go wrong in a client session, each with what to do about it.

use std::path::PathBuf;

use cairn_net::NetError;
use cairn_proto::ids::ParseIdError;

use crate::catalog::CatalogError;
use crate::keys::KeyError;
use crate::segment::SegmentError;
use crate::swarm::SwarmError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No client directory was named and `HOME` is not set.
    #[error("neither --home, CAIRN_HOME nor HOME is set; name the client directory")]
    NoHome,
    /// The client directory has no owner secret.
    #[error("no owner identity in {}; run `cairn init` (or `cairn recover`)", dir.display())]
    NoIdentity {
        /// The client directory.
        dir: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The owner secret file is not 32 bytes.
    #[error("{} is damaged; run `cairn recover` with your phrase", path.display())]
    DamagedSecret {
        /// The secret file.
        path: PathBuf,
    },
    /// `init` would replace an existing owner secret.
    #[error(
        "an owner identity already exists in {}; use --force to replace it (keep its phrase!)",
        dir.display()
    )]
    IdentityExists {
        /// The client directory.
        dir: PathBuf,
    },
    /// A file of the client directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file to store or restore could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The path, as the owner named it.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `client.toml` does not parse or does not fit.
    #[error("{}: {reason}; fix or remove the file", path.display())]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No node is configured.
    #[error("no nodes known; add one with `cairn add-node ID HOST:PORT`")]
    NoNodes,
    /// A node or member id does not parse.
    #[error("{what}: {source}")]
    BadId {
        /// Which id.
        what: String,
        /// Why.
        source: ParseIdError,
    },
    /// Something the owner typed is not what the command expects.
    #[error("{0}")]
    Usage(String),
    /// A swarm ticket does not parse or does not admit this client.
    #[error("{what}: {reason}")]
    Ticket {
        /// Which ticket.
        what: String,
        /// Why.
        reason: String,
    },
    /// The recovery phrase or new key failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The coding in the settings is not usable.
    #[error("client.toml: {0}")]
    Coding(#[from] SegmentError),
    /// A path or version is not in the catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Moving data to or from the swarm failed.
    #[error("{what}: {source}")]
    Swarm {
        /// What was being done.
        what: String,
        /// The cause.
        source: SwarmError,
    },
    /// A node could not be reached or refused a request.
    #[error("{what}: {source}")]
    Node {
        /// What was being done, with which node.
        what: String,
        /// The cause.
        source: NetError,
    },
    /// Stored data (a manifest, the catalog) does not decode.
    #[error(
        "{what} does not decode ({reason}); it was written by an incompatible cairn, or is damaged"
    )]
    Decode {
        /// What was read.
        what: String,
        /// The decoder's words.
        reason: String,
    },
    /// A read delivered fewer or more bytes than the manifest names.
    #[error(
        "{path}: read {read} bytes, but its manifest says {size}: this version's record is damaged; try another (`cairn versions {path}`)"
    )]
    ShortRead {
        /// The path.
        path: String,
        /// Bytes read.
        read: u64,
        /// Bytes the manifest names.
        size: u64,
    },
    /// A swarm operation needs the swarm's founder, or a swarm.
    #[error("{0}")]
    Membership(String),
    /// None of the owner's nodes answered.
    #[error("none of your nodes answered; are they running?")]
    NoAnswer,
}

impl ClientError {
    pub(crate) fn swarm(what: impl Into<String>) -> impl FnOnce(SwarmError) -> Self {
        let what = what.into();
        move |source| Self::Swarm { what, source }
    }

    pub(crate) fn node(what: impl Into<String>) -> impl FnOnce(NetError) -> Self {
        let what = what.into();
        move |source| Self::Node { what, source }
    }

    pub(crate) fn file(path: &str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::File { path, source }
    }
}
