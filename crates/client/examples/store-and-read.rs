//! Stores a file in a Cairn swarm through `cairn-client` and reads it back,
//! as an application built on the swarm would.
//!
//! ```text
//! cargo run -p cairn-client --example store-and-read -- CLIENT_DIR FILE
//! ```
//!
//! `CLIENT_DIR` is an owner's client directory whose nodes admit its client
//! key: the one `scripts/local-swarm` makes (`CAIRN_KEEP=1` keeps it, in
//! `$work/owner`), or one set up with `cairn init` and `cairn add-node`.

use std::path::{Path, PathBuf};

use cairn_client::{ClientError, ClientHome, Excludes, NoProgress, Selector, Session};

/// What the round trip did.
#[derive(Debug)]
pub struct RoundTrip {
    /// The path the file is stored under.
    pub stored: String,
    /// Its version number.
    pub version: u32,
    /// Bytes stored.
    pub size: u64,
    /// Shard bytes uploaded.
    pub uploaded: u64,
    /// Whether the bytes read back equal the file's.
    pub same: bool,
}

/// Stores `file` in a new snapshot, reads it back into memory and
/// compares it with the file.
pub async fn store_and_read(client_dir: &Path, file: &Path) -> Result<RoundTrip, ClientError> {
    let mut session = Session::open(ClientHome::at(client_dir)).await?;
    let stored = session
        .put(&[file.to_owned()], &Excludes::default(), &NoProgress)
        .await?;
    let path = std::path::absolute(file)
        .map_err(|source| ClientError::File {
            path: file.display().to_string(),
            source,
        })?
        .display()
        .to_string();
    let (read, bytes) = session
        .get_to_writer(&path, Selector::Latest, Vec::new(), &NoProgress)
        .await?;
    session.close().await;
    let original = std::fs::read(file).map_err(|source| ClientError::File {
        path: file.display().to_string(),
        source,
    })?;
    Ok(RoundTrip {
        stored: path,
        version: read.version,
        size: bytes.len() as u64,
        uploaded: stored.shard_bytes,
        same: bytes == original,
    })
}

#[allow(dead_code)] // a test includes this file for `store_and_read`
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [client_dir, file] = args.as_slice() else {
        eprintln!("usage: store-and-read CLIENT_DIR FILE");
        return std::process::ExitCode::from(2);
    };
    match store_and_read(client_dir, file).await {
        Ok(trip) if trip.same => {
            println!(
                "stored {} (version {}, {} bytes, {} shard bytes uploaded) and read it back bit-exact",
                trip.stored, trip.version, trip.size, trip.uploaded
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(trip) => {
            eprintln!("store-and-read: {} read back DIFFERENT bytes", trip.stored);
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("store-and-read: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
