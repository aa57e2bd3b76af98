//! The file-level API: an open [`Session`] puts paths, reads a path back
//! (any version, by number or by time), lists, removes and reports health,
//! and commits each change as a new catalog under a new signed root record.
//! Every operation returns a report type; nothing here prints. Notes for
//! the person (a steward that could not be told, say) are collected and
//! handed out by [`Session::take_notes`].

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use cairn_proto::ids::NodeId;

use crate::ClientError;
use crate::catalog::{BlobRef, Catalog, Manifest, SegmentRef, Selector, VersionEntry};
use crate::home::{CachedCatalog, ClientHome};
use crate::keys::OwnerSecret;
use crate::segment::TAG_LEN;
use crate::swarm::{Swarm, TransferStats};
use crate::writeback::EarlyWriteback;

/// Told how far a transfer has come, for a progress bar.
pub trait Progress: Sync {
    /// A transfer of `total` bytes of `what` begins.
    fn start(&self, what: &str, total: u64);
    /// `bytes` more were moved.
    fn advance(&self, bytes: u64);
    /// The transfer ended.
    fn finish(&self);
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What one transfer moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Segments.
    pub segments: usize,
    /// Segments already stored, not uploaded again.
    pub reused_segments: usize,
    /// Shard bytes sent or received.
    pub shard_bytes: u64,
    /// Segments rebuilt from parity because holders were missing.
    pub decoded_segments: usize,
    /// Shards that failed verification and were not used.
    pub bad_shards: Vec<BadShard>,
    /// Holders that did not answer (`cn…`).
    pub unreachable_nodes: Vec<String>,
}

/// A shard that failed verification, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadShard {
    /// The shard id (hex).
    pub shard: String,
    /// The holder (`cn…`).
    pub holder: String,
}

impl From<&TransferStats> for TransferReport {
    fn from(stats: &TransferStats) -> Self {
        Self {
            bytes: stats.bytes,
            segments: stats.segments,
            reused_segments: stats.reused,
            shard_bytes: stats.shard_bytes,
            decoded_segments: stats.decoded,
            bad_shards: stats
                .bad_shards
                .iter()
                .map(|(shard, holder)| BadShard {
                    shard: shard.to_hex(),
                    holder: holder.to_human(),
                })
                .collect(),
            unreachable_nodes: stats.unreachable.iter().map(|n| n.to_human()).collect(),
        }
    }
}

/// One file stored by [`Session::put_paths`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutReport {
    /// The absolute path it is stored under.
    pub stored: String,
    /// Its new version number.
    pub version: u32,
    /// Its size in bytes.
    pub size: u64,
    /// What the upload moved.
    pub transfer: TransferReport,
}

/// One file read back by [`Session::get_to_path`] or [`Session::get_to_writer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetReport {
    /// The path read.
    pub read: String,
    /// The version read.
    pub version: u32,
    /// What the download moved.
    pub transfer: TransferReport,
}

/// A path present in the catalog, as [`Session::list`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// The path.
    pub path: String,
    /// Size of its newest version.
    pub size: u64,
    /// Its newest version number.
    pub version: u32,
    /// When that version was stored (Unix seconds).
    pub time: u64,
}

/// One version of a path, as [`Session::versions`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    /// The version number.
    pub version: u32,
    /// When it was stored or removed (Unix seconds).
    pub time: u64,
    /// Its size.
    pub size: u64,
    /// Whether this version is a removal.
    pub removed: bool,
}

/// A path removed by [`Session::remove`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    /// The path.
    pub removed: String,
    /// The version number of the removal.
    pub version: u32,
}

/// How well one stored file survives, from fresh audits of its shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileHealth {
    /// The path.
    pub path: String,
    /// Its newest version.
    pub version: u32,
    /// Its size.
    #[serde(skip)]
    pub size: u64,
    /// Healthy shards of its weakest segment (content or manifest).
    pub healthy_shards_min: usize,
    /// Shards per segment (k + m).
    pub shards_per_segment: usize,
    /// Shards needed to read a segment.
    pub k: usize,
    /// Further node losses it survives.
    pub survives_node_losses: usize,
    /// Whether the file has any content (an empty file is always readable).
    #[serde(skip)]
    pub empty: bool,
}

impl FileHealth {
    /// Whether a segment has fewer reachable healthy shards than it needs.
    pub fn unreadable(&self) -> bool {
        self.healthy_shards_min < self.k && !self.empty
    }
}

/// An open session: keys, nodes, and the catalog as the swarm has it.
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn_client::ClientError> {
/// use cairn_client::{ClientHome, NoProgress, Selector, Session};
/// let mut session = Session::open(ClientHome::at("/home/me/.config/cairn")).await?;
/// let stored = session.put_paths(&["notes.txt".into()], &NoProgress).await?;
/// let path = &stored[0].stored;
/// let (report, bytes) = session
///     .get_to_writer(path, Selector::Latest, Vec::new(), &NoProgress)
///     .await?;
/// assert_eq!(bytes.len() as u64, report.transfer.bytes);
/// session.close().await;
/// # Ok(()) }
/// ```
pub struct Session {
    home: ClientHome,
    swarm: Arc<Swarm>,
    secret: OwnerSecret,
    steward: Option<NodeId>,
    seq: u64,
    catalog: Catalog,
    notes: Mutex<Vec<String>>,
}

impl Session {
    /// Opens a session from the client directory: reads the secret and
    /// settings, finds the newest root record and its catalog (from the
    /// cache when the root names it).
    pub async fn open(home: ClientHome) -> Result<Self, ClientError> {
        let (swarm, secret) = home.swarm(None)?;
        let steward = home.config()?.steward;
        let mut session = Self {
            home,
            swarm,
            secret,
            steward,
            seq: 0,
            catalog: Catalog::default(),
            notes: Mutex::new(Vec::new()),
        };
        let root = session
            .swarm
            .latest_root()
            .await
            .map_err(ClientError::swarm("finding your newest root record"))?;
        if let Some((seq, pointer)) = root {
            session.seq = seq;
            session.catalog = match session.home.cache() {
                Some(cache) if cache.stored_as == pointer.catalog => cache.catalog,
                _ => {
                    let catalog_ref = session.located(&pointer.catalog).await;
                    let bytes = session
                        .read_blob(&catalog_ref, "reading the catalog from the swarm")
                        .await?;
                    decode(&bytes, "the stored catalog")?
                }
            };
        }
        Ok(session)
    }

    /// The swarm handle (for node-level requests).
    pub fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// The client directory.
    pub fn home(&self) -> &ClientHome {
        &self.home
    }

    /// The owner secret.
    pub fn secret(&self) -> &OwnerSecret {
        &self.secret
    }

    /// The catalog as of the newest root record.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Notes for the person collected since the last call: things that did
    /// not fail the operation but that they should know.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *cairn_host::lock(&self.notes))
    }

    /// Closes the session's connections.
    pub async fn close(self) {
        self.swarm.close().await;
    }

    /// Stores the files under `paths` (each a file or a directory, walked
    /// in name order) as new versions, reusing the previous version's
    /// segments where the data is unchanged, then commits and tells the
    /// steward.
    pub async fn put_paths(
        &mut self,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<Vec<PutReport>, ClientError> {
        let mut files = Vec::new();
        for path in paths {
            files_under(path, &mut files)?;
        }
        let mut reports = Vec::new();
        let mut stored: Vec<BlobRef> = Vec::new();
        for file in files {
            let shown = file.display().to_string();
            let absolute = std::path::absolute(&file).map_err(ClientError::file(&shown))?;
            let key = absolute.to_string_lossy().into_owned();
            let meta = std::fs::metadata(&file).map_err(ClientError::file(&shown))?;
            let mut known: HashMap<[u8; 32], SegmentRef> = HashMap::new();
            if let Ok(previous) = self.catalog.select(&key, Selector::Latest) {
                let previous = previous.clone();
                if let Ok(manifest) = self.manifest(&previous).await {
                    for segment in manifest.content.segments {
                        known.insert(segment.key, segment);
                    }
                }
            }
            let reader = std::fs::File::open(&file).map_err(ClientError::file(&shown))?;
            progress.start(&key, meta.len());
            let (content, stats) = self
                .swarm
                .put_blob(reader, &known, &|n| progress.advance(n))
                .await
                .map_err(ClientError::swarm(format!("storing {key}")))?;
            progress.finish();
            let size = content.len();
            let manifest = Manifest {
                content,
                mode: meta.permissions().mode() & 0o7777,
            };
            let manifest_ref = self.store_record(&manifest, "storing the manifest").await?;
            let version =
                self.catalog
                    .add_version(&key, cairn_host::unix_now(), size, manifest_ref.clone());
            stored.push(manifest.content);
            stored.push(manifest_ref);
            reports.push(PutReport {
                stored: key,
                version,
                size,
                transfer: TransferReport::from(&stats),
            });
        }
        let catalog_ref = self.commit().await?;
        stored.push(catalog_ref);
        self.track(&stored.iter().collect::<Vec<_>>()).await;
        Ok(reports)
    }

    /// Reads a version of `path` into the file `out`: written beside it and
    /// renamed over it only when complete, verified and durable, with the
    /// stored mode. A device or pipe (`/dev/null`, a FIFO) is written as it
    /// is, since renaming over it would replace the device itself.
    pub async fn get_to_path(
        &self,
        path: &str,
        selector: Selector,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let (entry, manifest) = self.version(path, selector).await?;
        let shown = out.display().to_string();
        let special = std::fs::metadata(out).is_ok_and(|meta| !meta.is_file());
        progress.start(path, entry.size);
        let stats = if special {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .map_err(ClientError::file(&shown))?;
            let (stats, _) = self.download(path, &manifest, file, progress).await?;
            whole(path, &stats, entry.size)?;
            stats
        } else {
            let tmp = out.with_file_name(format!(
                ".{}.cairn-partial",
                out.file_name()
                    .map_or("out".into(), |n| n.to_string_lossy())
            ));
            let file = std::fs::File::create(&tmp).map_err(ClientError::file(&shown))?;
            let writer = EarlyWriteback::new(file).map_err(ClientError::file(&shown))?;
            let result = self.download(path, &manifest, writer, progress).await;
            let finished = result.and_then(|(stats, writer)| {
                whole(path, &stats, entry.size)?;
                let file = writer.finish().map_err(ClientError::file(&shown))?;
                Ok((stats, file))
            });
            let (stats, file) = match finished {
                Ok(done) => done,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            drop(file);
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(manifest.mode))
                .map_err(ClientError::file(&shown))?;
            std::fs::rename(&tmp, out).map_err(ClientError::file(&shown))?;
            stats
        };
        progress.finish();
        Ok(GetReport {
            read: path.to_owned(),
            version: entry.version,
            transfer: TransferReport::from(&stats),
        })
    }

    /// Reads a version of `path` into `out`, and gives `out` back. A short
    /// read is an error, but the bytes already written cannot be taken
    /// back: write to a file with [`Session::get_to_path`] to get all or
    /// nothing.
    pub async fn get_to_writer<W: Write + Send + 'static>(
        &self,
        path: &str,
        selector: Selector,
        out: W,
        progress: &dyn Progress,
    ) -> Result<(GetReport, W), ClientError> {
        let (entry, manifest) = self.version(path, selector).await?;
        progress.start(path, entry.size);
        let (stats, out) = self.download(path, &manifest, out, progress).await?;
        whole(path, &stats, entry.size)?;
        progress.finish();
        let report = GetReport {
            read: path.to_owned(),
            version: entry.version,
            transfer: TransferReport::from(&stats),
        };
        Ok((report, out))
    }

    /// The paths present (not removed) under `prefix`, newest versions.
    pub fn list(&self, prefix: &str) -> Vec<ListEntry> {
        self.catalog
            .present(prefix)
            .map(|(path, entry)| ListEntry {
                path: path.to_owned(),
                size: entry.size,
                version: entry.version,
                time: entry.time,
            })
            .collect()
    }

    /// Every version of `path`, oldest first.
    pub fn versions(&self, path: &str) -> Result<Vec<VersionReport>, ClientError> {
        let versions = self.catalog.files.get(path).ok_or_else(|| {
            ClientError::Usage(format!("{path} is not stored; `cairn ls` lists what is"))
        })?;
        Ok(versions
            .iter()
            .map(|v| VersionReport {
                version: v.version,
                time: v.time,
                size: v.size,
                removed: v.deleted,
            })
            .collect())
    }

    /// Hides `path` from now on (earlier versions stay readable), commits
    /// and tells the steward.
    pub async fn remove(&mut self, path: &str) -> Result<RemoveReport, ClientError> {
        let version = self.catalog.remove(path, cairn_host::unix_now())?;
        let catalog_ref = self.commit().await?;
        self.track(&[&catalog_ref]).await;
        Ok(RemoveReport {
            removed: path.to_owned(),
            version,
        })
    }

    /// Audits every present file under `prefix` with fresh challenges.
    pub async fn status(&self, prefix: &str) -> Result<Vec<FileHealth>, ClientError> {
        let entries: Vec<(String, VersionEntry)> = self
            .catalog
            .present(prefix)
            .map(|(p, e)| (p.to_owned(), e.clone()))
            .collect();
        let mut out = Vec::new();
        for (path, entry) in entries {
            let manifest = self.manifest(&entry).await?;
            let (content_worst, total) = self.audit_blob(&manifest.content).await;
            // The file is only as readable as its manifest, which has
            // segments (and holders) of its own.
            let manifest_ref = self.located(&entry.manifest).await;
            let (manifest_worst, _) = self.audit_blob(&manifest_ref).await;
            let worst = content_worst.min(manifest_worst);
            let k = manifest.content.coding.map_or(0, |c| usize::from(c.k));
            out.push(FileHealth {
                path,
                version: entry.version,
                size: entry.size,
                healthy_shards_min: worst,
                shards_per_segment: total,
                k,
                survives_node_losses: worst.saturating_sub(k),
                empty: manifest.content.is_empty(),
            });
        }
        Ok(out)
    }

    /// Stores the catalog and points a new root record at it; returns the
    /// catalog's reference.
    pub async fn commit(&mut self) -> Result<BlobRef, ClientError> {
        let blob = self
            .store_record(&self.catalog, "storing the catalog")
            .await?;
        let seq = self.seq + 1;
        self.swarm.put_root(seq, &blob).await.map_err(ClientError::swarm(
            "publishing the new root record (another cairn may have changed your files at the same time; run the command again)",
        ))?;
        self.seq = seq;
        self.home.save_cache(&CachedCatalog {
            stored_as: blob.clone(),
            catalog: self.catalog.clone(),
        })?;
        Ok(blob)
    }

    /// Hands what was just stored to the steward. The data is stored
    /// either way; without a steward nothing repairs or renews it.
    async fn track(&self, blobs: &[&BlobRef]) {
        let Some(steward) = self.steward else {
            return;
        };
        if let Err(e) = self.swarm.track(steward, blobs).await {
            self.note(format!(
                "warning: stored, but {e}; until the steward is told, nothing audits, repairs or renews this data: once it answers, put the same files again (unchanged data is not uploaded twice, and the steward is told)"
            ));
        }
    }

    /// `blob` with holders from the steward where it knows better (shards
    /// it repaired onto other nodes); as stored when there is no steward or
    /// it cannot be asked.
    async fn located(&self, blob: &BlobRef) -> BlobRef {
        let mut blob = blob.clone();
        if let Some(steward) = self.steward
            && let Err(e) = self.swarm.relocate(steward, &mut blob).await
        {
            self.note(format!("note: {e}; reading from the holders as stored"));
        }
        blob
    }

    /// A version's entry and manifest, its content's holders as the
    /// steward knows them now.
    async fn version(
        &self,
        path: &str,
        selector: Selector,
    ) -> Result<(VersionEntry, Manifest), ClientError> {
        let entry = self.catalog.select(path, selector)?.clone();
        let manifest = self.manifest(&entry).await?;
        Ok((entry, manifest))
    }

    async fn manifest(&self, entry: &VersionEntry) -> Result<Manifest, ClientError> {
        let manifest_ref = self.located(&entry.manifest).await;
        let bytes = self
            .read_blob(&manifest_ref, "reading the file's manifest")
            .await?;
        let mut manifest: Manifest = decode(&bytes, "the manifest")?;
        manifest.content = self.located(&manifest.content).await;
        Ok(manifest)
    }

    async fn download<W: Write + Send + 'static>(
        &self,
        path: &str,
        manifest: &Manifest,
        out: W,
        progress: &dyn Progress,
    ) -> Result<(TransferStats, W), ClientError> {
        self.swarm
            .get_blob(&manifest.content, out, &|n| progress.advance(n))
            .await
            .map_err(ClientError::swarm(format!("reading {path}")))
    }

    async fn read_blob(&self, blob: &BlobRef, what: &str) -> Result<Vec<u8>, ClientError> {
        let (_, bytes) = self
            .swarm
            .get_blob(blob, Vec::new(), &|_| {})
            .await
            .map_err(ClientError::swarm(what))?;
        Ok(bytes)
    }

    async fn store_record<T: Serialize>(
        &self,
        record: &T,
        what: &str,
    ) -> Result<BlobRef, ClientError> {
        let bytes = postcard::to_stdvec(record).map_err(|e| ClientError::Decode {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        let (blob, _) = self
            .swarm
            .put_blob(std::io::Cursor::new(bytes), &HashMap::new(), &|_| {})
            .await
            .map_err(ClientError::swarm(what))?;
        Ok(blob)
    }

    /// The fewest healthy shards of any segment (each audited with a fresh
    /// challenge), and shards per segment.
    async fn audit_blob(&self, blob: &BlobRef) -> (usize, usize) {
        let coding = blob.coding.unwrap_or(self.swarm.coding);
        let mut worst = coding.total();
        for segment in &blob.segments {
            let shard_len = coding.shard_len(segment.plain_len as usize + TAG_LEN) as u64;
            let mut healthy = 0;
            for shard in &segment.shards {
                let mut seed = [0u8; 32];
                let _ = getrandom::fill(&mut seed);
                if self
                    .swarm
                    .audit(shard.holder, shard.id, shard_len, seed)
                    .await
                {
                    healthy += 1;
                }
            }
            worst = worst.min(healthy);
        }
        (worst, coding.total())
    }

    fn note(&self, note: String) {
        cairn_host::lock(&self.notes).push(note);
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ClientError> {
    postcard::from_bytes(bytes).map_err(|e| ClientError::Decode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks that a read delivered every byte the manifest names.
fn whole(path: &str, stats: &TransferStats, size: u64) -> Result<(), ClientError> {
    if stats.bytes != size {
        return Err(ClientError::ShortRead {
            path: path.to_owned(),
            read: stats.bytes,
            size,
        });
    }
    Ok(())
}

/// Files under `path` (itself if it is a file), sorted.
fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ClientError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(ClientError::file(&shown))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect())
            .map_err(ClientError::file(&shown))?;
        entries.sort();
        for entry in entries {
            files_under(&entry, out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_owned());
    }
    Ok(())
}
