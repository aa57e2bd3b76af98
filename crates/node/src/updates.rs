//! Receiving system update bundles from the box's owner.
//!
//! The owner's `cairn update` offers a bundle (its BLAKE3, size and
//! version, signed) and sends it in parts; the box appends each part to
//! `state_dir/updates/<hash>.part` and answers how much it has, so a
//! transfer cut off resumes where it stopped. When the last byte is in and
//! the whole file hashes to the offer, it becomes `ready.raucb`, which
//! root's `cairn-update.path` hands to RAUC: RAUC checks the release
//! signature and the version, writes the other slot, and the box reboots
//! into it. cairnd itself never writes a system partition.
//!
//! An offer may instead name a member that holds the bundle: the box then
//! fetches it from there itself (`crate::net::update_fetch`), part by part
//! into the same file, checked the same way. Once whole, a box keeps the
//! bundle (a second link to the file RAUC takes away) and serves it to
//! other members, so a bundle crosses a household's uplink once and
//! spreads box to box.
//!
//! Files in the directory (format 1, docs/UPDATES.md): `offer.toml` (the
//! bundle being received, and from whom), `<hash>.part`, `ready.raucb`,
//! `<hash>.raucb` with `serving.toml` (the bundle kept whole and served),
//! and `downgrade.toml` (the owner's signed offer that allows going back
//! to an older release, which `cairn-slot pre-install` checks itself:
//! root does not take cairnd's word for it).

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_proto::ids::NodeId;
use cairn_proto::{BundleRef, UpdateInfo, UpdateOutcome};
use serde::{Deserialize, Serialize};

use crate::daemon_config::UpdateSection;

/// Free space kept on the state directory's file system beyond a bundle.
const SPARE_BYTES: u64 = 32 << 20;

/// Why an offer or a part was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The box is installing a bundle it has already.
    #[error("this box is installing an update now; offer another once it has rebooted")]
    Installing,
    /// A part for a bundle that was not offered (or another one was since).
    #[error("this box was not offered that bundle (or another since); offer it first")]
    NotOffered,
    /// A part that does not start where the box's copy ends.
    #[error("this box has {have} bytes of the bundle; send from there")]
    WrongOffset {
        /// Bytes the box has.
        have: u64,
    },
    /// A part that goes beyond the offered size.
    #[error("the part goes beyond the bundle's {size} bytes")]
    TooLong {
        /// The offered size.
        size: u64,
    },
    /// The whole bundle does not hash to what was offered; it was dropped.
    #[error("the bundle received does not hash to the one offered; it was dropped: send it again")]
    HashMismatch,
    /// Not enough room on the box's writable partition for the bundle.
    #[error(
        "this box has {free_mib} MiB free for updates and the bundle needs {need_mib} MiB; make room on its /var"
    )]
    NoSpace {
        /// MiB free.
        free_mib: u64,
        /// MiB needed.
        need_mib: u64,
    },
    /// A member asked for a bundle this box does not keep whole.
    #[error("this box does not keep that update bundle; fetch it from a box that has it")]
    NotServing,
    /// The box was told to fetch a bundle from itself, and has none.
    #[error("this box does not hold that bundle itself; name a member that does, or send it")]
    NotHeld,
    /// The updates directory could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Tries of a fetch that brought no byte before it gives up (about a
/// quarter of an hour: a member that reboots into its own update is back
/// well within it).
pub const FETCH_TRIES: u32 = 20;

/// How a box paces failed tries to fetch a bundle from a member: waits
/// that double from 2 s to a minute, and an end after [`FETCH_TRIES`]
/// tries without progress (a part that arrives starts the count again).
#[derive(Debug, Default)]
pub struct FetchTries {
    tries: u32,
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchFailed {
    /// Tries failed in a row.
    pub tries: u32,
    /// How long to wait before the next.
    pub wait: std::time::Duration,
    /// Whether to stop and drop the offer.
    pub give_up: bool,
}

impl FetchTries {
    /// Counts a failed try.
    pub fn failed(&mut self) -> FetchFailed {
        self.tries += 1;
        let doubling = 2u64 << (self.tries - 1).min(5);
        FetchFailed {
            tries: self.tries,
            wait: std::time::Duration::from_secs(doubling.min(60)),
            give_up: self.tries >= FETCH_TRIES,
        }
    }
}

/// The BLAKE3 of the first `at` bytes of the bundle being received.
struct Hashing {
    hash: [u8; 32],
    at: u64,
    hasher: blake3::Hasher,
}

impl std::fmt::Debug for Hashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hashing {{ at: {} }}", self.at)
    }
}

/// A bundle as the inbox's files name it: `offer.toml` (the one being
/// received) and `serving.toml` (the one kept whole, without `from`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Offer {
    format: u32,
    hash: String,
    size: u64,
    version: String,
    /// The member to fetch it from (hex node id), if the box fetches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

impl Offer {
    fn bundle(&self) -> Option<BundleRef> {
        Some(BundleRef {
            hash: unhex(&self.hash)?,
            size: self.size,
            version: self.version.clone(),
        })
    }
}

/// An owner's offer as the box received it, signature and all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOffer {
    /// The bundle.
    pub bundle: BundleRef,
    /// The owner lets the box go back to this version.
    pub allow_downgrade: bool,
    /// The member to fetch it from, if not sent.
    pub from: Option<NodeId>,
    /// When the signature expires.
    pub not_after: u64,
    /// The owner's signature over [`cairn_proto::signed::update_message`].
    pub signature: Vec<u8>,
}

/// The file in the inbox that lets root's installer go back to an older
/// release: the owner's signed offer, kept as it came.
pub const DOWNGRADE_FILE: &str = "downgrade.toml";

/// The owner's signed offer with `allow_downgrade`, as `downgrade.toml`
/// keeps it (format 1). Root's installer checks the signature against the
/// box's owner itself: a cairnd taken over by an attacker could write
/// this file, but not sign it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DowngradeOffer {
    format: u32,
    node: String,
    hash: String,
    size: u64,
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    not_after: u64,
    signature: String,
}

/// Why a downgrade offer does not allow the bundle being installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DowngradeError {
    /// The file is not a downgrade offer Cairn writes.
    #[error(
        "{0} is not a downgrade offer of format 1; remove it, and have the owner send the bundle again with --allow-downgrade"
    )]
    Format(String),
    /// It was signed for another box.
    #[error("the downgrade offer was signed for another box")]
    OtherNode,
    /// It allows another version.
    #[error("the owner allowed going back to {allowed}, not to {bundle}")]
    OtherVersion {
        /// The version the owner signed.
        allowed: String,
        /// The bundle's.
        bundle: String,
    },
    /// The box has no owner to have signed it.
    #[error("this box has no owner, so nobody can allow a downgrade")]
    NoOwner,
    /// The signature is not the box owner's.
    #[error("the downgrade offer is not signed by this box's owner")]
    NotOwners,
}

impl DowngradeOffer {
    fn new(offer: &SignedOffer, me: NodeId) -> DowngradeOffer {
        DowngradeOffer {
            format: 1,
            node: me.to_hex(),
            hash: hex(&offer.bundle.hash),
            size: offer.bundle.size,
            version: offer.bundle.version.clone(),
            from: offer.from.map(|f| f.to_hex()),
            not_after: offer.not_after,
            signature: hex(&offer.signature),
        }
    }

    /// Reads one from the text of `downgrade.toml` (`path` for messages).
    pub fn parse(text: &str, path: &str) -> Result<DowngradeOffer, DowngradeError> {
        toml::from_str::<DowngradeOffer>(text)
            .ok()
            .filter(|d| d.format == 1)
            .ok_or_else(|| DowngradeError::Format(path.to_owned()))
    }

    /// Checks that `owner` signed this offer for `node`, allowing
    /// `version`. The expiry is not checked again: it bounded when the box
    /// took the offer, and the owner's consent to this version on this box
    /// stands while the bundle is installed.
    pub fn allows(
        &self,
        node: &NodeId,
        owner: Option<&cairn_proto::ids::OwnerId>,
        version: &str,
    ) -> Result<(), DowngradeError> {
        let format = || DowngradeError::Format(DOWNGRADE_FILE.to_owned());
        if NodeId::from_hex(&self.node).map_err(|_| format())? != *node {
            return Err(DowngradeError::OtherNode);
        }
        if self.version != version {
            return Err(DowngradeError::OtherVersion {
                allowed: self.version.clone(),
                bundle: version.to_owned(),
            });
        }
        let owner = owner.ok_or(DowngradeError::NoOwner)?;
        let from = match &self.from {
            Some(f) => Some(NodeId::from_hex(f).map_err(|_| format())?),
            None => None,
        };
        let bundle = BundleRef {
            hash: unhex(&self.hash).ok_or_else(format)?,
            size: self.size,
            version: self.version.clone(),
        };
        let signature = unhex_bytes(&self.signature).ok_or_else(format)?;
        let message =
            cairn_proto::signed::update_message(node, &bundle, true, from.as_ref(), self.not_after);
        cairn_proto::signed::verify(owner, &message, &signature)
            .map_err(|_| DowngradeError::NotOwners)
    }
}

/// A bundle to fetch from a member: what the fetcher does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchJob {
    /// The member that holds it.
    pub from: NodeId,
    /// The bundle.
    pub bundle: BundleRef,
    /// Bytes the box has already.
    pub have: u64,
}

/// The box's inbox for update bundles, and what it says of its system.
#[derive(Debug)]
pub struct UpdateInbox {
    dir: PathBuf,
    config: UpdateSection,
    /// Offers and parts one at a time (a part appends to the file an offer
    /// may replace), and the hash of the bundle so far: each part is hashed
    /// as it comes, so the last one is checked at once rather than by
    /// reading the whole bundle again within one request's time.
    lock: std::sync::Mutex<Option<Hashing>>,
    /// Why the fetcher's last try failed, for the owner to see.
    trouble: std::sync::Mutex<Option<String>>,
    /// Rung when an offer names a member to fetch from.
    wake: tokio::sync::Notify,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpdateError + '_ {
    move |source| UpdateError::Io {
        path: path.to_owned(),
        source,
    }
}

impl UpdateInbox {
    /// The inbox in `state_dir/updates`.
    pub fn new(state_dir: &Path, config: UpdateSection) -> UpdateInbox {
        UpdateInbox {
            dir: state_dir.join("updates"),
            config,
            lock: std::sync::Mutex::new(None),
            trouble: std::sync::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Notified when there may be a bundle to fetch from a member.
    pub fn woken(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    fn kept_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.raucb", hex(hash)))
    }

    fn serving_path(&self) -> PathBuf {
        self.dir.join("serving.toml")
    }

    fn serving(&self) -> Option<BundleRef> {
        let text = std::fs::read_to_string(self.serving_path()).ok()?;
        let serving = toml::from_str::<Offer>(&text)
            .ok()
            .filter(|s| s.format == 1)?
            .bundle()?;
        // Kept only while its file is whole.
        std::fs::metadata(self.kept_path(&serving.hash))
            .ok()
            .filter(|m| m.len() == serving.size)?;
        Some(serving)
    }

    /// Writes `value` as TOML to `path`, durably (old or new after a crash).
    fn write_toml(
        &self,
        path: &Path,
        value: &impl Serialize,
        mode: u32,
    ) -> Result<(), UpdateError> {
        let text = toml::to_string(value).map_err(|e| UpdateError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        cairn_host::durable::replace_file(path, text.as_bytes(), mode).map_err(io(path))
    }

    /// `len` bytes at `offset` of the bundle this box keeps whole, for a
    /// member that fetches it.
    pub fn read_kept(
        &self,
        hash: &[u8; 32],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, UpdateError> {
        use std::io::{Read, Seek};
        let serving = self
            .serving()
            .filter(|s| s.hash == *hash)
            .ok_or(UpdateError::NotServing)?;
        if offset.saturating_add(len) > serving.size {
            return Err(UpdateError::TooLong { size: serving.size });
        }
        let path = self.kept_path(hash);
        let mut file = std::fs::File::open(&path).map_err(io(&path))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(io(&path))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact(&mut bytes).map_err(io(&path))?;
        Ok(bytes)
    }

    /// The bundle to fetch from a member next, if an offer asks for one.
    pub fn fetch_job(&self) -> Option<FetchJob> {
        let _hashing = cairn_host::lock(&self.lock);
        if self.ready_path().exists() {
            return None;
        }
        let offer = self.offer()?;
        let from = NodeId::from_hex(offer.from.as_deref()?).ok()?;
        let bundle = offer.bundle()?;
        let have = self.have(&bundle.hash);
        Some(FetchJob { from, bundle, have })
    }

    /// Records why fetching failed (`None`: it goes well again).
    pub fn set_fetch_trouble(&self, trouble: Option<String>) {
        *cairn_host::lock(&self.trouble) = trouble;
    }

    /// Gives up fetching `hash`: drops the offer and what came of it.
    pub fn give_up(&self, hash: &[u8; 32]) -> Result<(), UpdateError> {
        let mut hashing = cairn_host::lock(&self.lock);
        if self.offer().is_some_and(|o| o.hash == hex(hash)) {
            *hashing = None;
            self.drop_partial()?;
        }
        Ok(())
    }

    fn offer_path(&self) -> PathBuf {
        self.dir.join("offer.toml")
    }

    fn part_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.part", hex(hash)))
    }

    /// Where a complete, verified bundle waits for root to install it.
    pub fn ready_path(&self) -> PathBuf {
        self.dir.join("ready.raucb")
    }

    fn offer(&self) -> Option<Offer> {
        let text = std::fs::read_to_string(self.offer_path()).ok()?;
        toml::from_str::<Offer>(&text)
            .ok()
            .filter(|o| o.format == 1)
    }

    fn have(&self, hash: &[u8; 32]) -> u64 {
        std::fs::metadata(self.part_path(hash)).map_or(0, |m| m.len())
    }

    /// Takes an offer: keeps what the box has of the same bundle (to
    /// resume), drops any other, and says how much it has. With `from`,
    /// the box fetches the rest from that member itself. A box that runs
    /// the bundle's version already takes nothing (unless the owner allows
    /// going to it as a downgrade); one that keeps the bundle whole
    /// installs it at once.
    pub fn take_offer(&self, offer: &SignedOffer, me: NodeId) -> Result<UpdateInfo, UpdateError> {
        let (bundle, allow_downgrade, from) = (&offer.bundle, offer.allow_downgrade, offer.from);
        let mut hashing = cairn_host::lock(&self.lock);
        if self.ready_path().exists() {
            return Err(UpdateError::Installing);
        }
        if self.running() == bundle.version && !allow_downgrade {
            return Ok(self.info_locked());
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let kept = self.serving().filter(|s| s == bundle);
        if kept.is_none() && from == Some(me) {
            return Err(UpdateError::NotHeld);
        }
        self.set_downgrade(offer, me)?;
        if kept.is_some() {
            // Offered again what it keeps (its install rolled back, say):
            // installed from there, nothing sent.
            *hashing = None;
            self.drop_partial()?;
            self.hand_over(&self.kept_path(&bundle.hash), &bundle.version, true)?;
            return Ok(self.info_locked());
        }
        let same = self
            .offer()
            .is_some_and(|o| o.hash == hex(&bundle.hash) && o.size == bundle.size);
        // A new bundle replaces the one half received and the one kept:
        // their bytes count as free, but go only once the new one is
        // known to fit.
        let kept_bytes = self.serving().map_or(0, |s| s.size);
        let (have, reclaimed) = match self.offer().and_then(|o| unhex(&o.hash)) {
            Some(old) if same => (self.have(&old), kept_bytes),
            Some(old) => (0, self.have(&old) + kept_bytes),
            None => (0, kept_bytes),
        };
        let free = rustix::fs::statvfs(&self.dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| UpdateError::Io {
                path: self.dir.clone(),
                source: e.into(),
            })?
            + reclaimed;
        let need = bundle.size.saturating_sub(have) + SPARE_BYTES;
        if free < need {
            return Err(UpdateError::NoSpace {
                free_mib: free >> 20,
                need_mib: need.div_ceil(1 << 20),
            });
        }
        self.drop_kept()?;
        let from = from.map(|f| f.to_hex());
        if !same || self.offer().is_some_and(|o| o.from != from) {
            if !same {
                *hashing = None;
                self.drop_partial()?;
            }
            let offer = Offer {
                format: 1,
                hash: hex(&bundle.hash),
                size: bundle.size,
                version: bundle.version.clone(),
                from: from.clone(),
            };
            self.write_toml(&self.offer_path(), &offer, 0o600)?;
        }
        self.set_fetch_trouble(None);
        if from.is_some() {
            self.wake.notify_one();
        }
        Ok(self.info_locked())
    }

    /// Keeps the owner's signed offer for root's installer when it allows
    /// a downgrade, and drops any earlier one when it does not.
    fn set_downgrade(&self, offer: &SignedOffer, me: NodeId) -> Result<(), UpdateError> {
        let allow = self.dir.join(DOWNGRADE_FILE);
        if offer.allow_downgrade {
            self.write_toml(&allow, &DowngradeOffer::new(offer, me), 0o644)
        } else {
            match std::fs::remove_file(&allow) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&allow)(e)),
                _ => Ok(()),
            }
        }
    }

    /// Drops the bundle kept whole (a newer one comes).
    fn drop_kept(&self) -> Result<(), UpdateError> {
        let read = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for entry in read.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.ends_with(".raucb") && name != "ready.raucb") || name == "serving.toml" {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(())
    }

    /// Makes `whole` (a verified bundle) `ready.raucb` for root's
    /// installer: linked when the box keeps it, else moved.
    fn hand_over(&self, whole: &Path, version: &str, link: bool) -> Result<(), UpdateError> {
        // Its version, for root's record if RAUC refuses it unread.
        let version_path = self.dir.join("ready.version");
        cairn_host::durable::replace_file(&version_path, version.as_bytes(), 0o644)
            .map_err(io(&version_path))?;
        if link {
            std::fs::hard_link(whole, self.ready_path()).map_err(io(whole))?;
        } else {
            std::fs::rename(whole, self.ready_path()).map_err(io(whole))?;
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    fn running(&self) -> String {
        std::fs::read_to_string(&self.config.release_file)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| format!("cairnd {}", cairn_net::software()))
    }

    fn drop_partial(&self) -> Result<(), UpdateError> {
        let read = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for entry in read.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".part") || name == "offer.toml" {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(())
    }

    /// Appends a part at `offset` (which must be what the box has). With
    /// the last byte, checks the whole bundle's hash and hands it to root.
    pub fn take_part(
        &self,
        hash: &[u8; 32],
        offset: u64,
        bytes: &[u8],
    ) -> Result<UpdateInfo, UpdateError> {
        let mut hashing = cairn_host::lock(&self.lock);
        let offer = self
            .offer()
            .filter(|o| o.hash == hex(hash))
            .ok_or(UpdateError::NotOffered)?;
        let have = self.have(hash);
        if offset != have {
            return Err(UpdateError::WrongOffset { have });
        }
        if have + bytes.len() as u64 > offer.size {
            return Err(UpdateError::TooLong { size: offer.size });
        }
        let path = self.part_path(hash);
        // The hash so far: kept from the last part, or (after a restart of
        // cairnd) read once from what the box has.
        let mut running = match hashing.take() {
            Some(running) if running.hash == *hash && running.at == have => running,
            _ => {
                let mut hasher = blake3::Hasher::new();
                if have > 0 {
                    use std::io::Read;
                    let file = std::fs::File::open(&path).map_err(io(&path))?;
                    hasher.update_reader(file.take(have)).map_err(io(&path))?;
                }
                Hashing {
                    hash: *hash,
                    at: have,
                    hasher,
                }
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(bytes).map_err(io(&path))?;
        // What the box says it has must be on its disk: a resumed transfer
        // starts there.
        file.sync_data().map_err(io(&path))?;
        drop(file);
        running.hasher.update(bytes);
        running.at += bytes.len() as u64;
        if running.at < offer.size {
            *hashing = Some(running);
        } else {
            if running.hasher.finalize().as_bytes() != hash {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(self.offer_path());
                return Err(UpdateError::HashMismatch);
            }
            // Kept whole to serve other members: a second link to the
            // file root's installer takes away, so it costs no space.
            let kept = self.kept_path(hash);
            std::fs::hard_link(&path, &kept).map_err(io(&kept))?;
            let serving = Offer {
                from: None,
                ..offer.clone()
            };
            self.write_toml(&self.serving_path(), &serving, 0o644)?;
            std::fs::remove_file(self.offer_path()).map_err(io(&self.offer_path()))?;
            self.hand_over(&path, &offer.version, false)?;
            self.set_fetch_trouble(None);
            tracing::info!(
                "update bundle {} received whole and verified: installing it",
                offer.version
            );
        }
        Ok(self.info_locked())
    }

    /// What the box runs, what it receives, how its last update ended.
    pub fn info(&self) -> UpdateInfo {
        let _hashing = cairn_host::lock(&self.lock);
        self.info_locked()
    }

    fn info_locked(&self) -> UpdateInfo {
        let version = self.running();
        // cairnd cannot read /proc/cmdline (ProcSubset=pid): the gate
        // records the booted slot at every boot.
        let status = cairn_update::state::StateDir::new(&self.config.status_dir)
            .status()
            .ok()
            .flatten();
        let slot = status.as_ref().map(|s| s.slot.bootname().to_owned());
        let offer = self.offer();
        let receiving = offer.as_ref().and_then(|o| {
            let bundle = o.bundle()?;
            let have = self.have(&bundle.hash);
            Some((bundle, have))
        });
        let fetching_from = offer
            .and_then(|o| o.from)
            .and_then(|f| NodeId::from_hex(&f).ok());
        let last = status.and_then(|s| s.last).map(|l| UpdateOutcome {
            version: l.version,
            result: l.result.as_str().to_owned(),
            reason: l.reason,
            at: l.at,
        });
        UpdateInfo {
            version,
            slot,
            receiving,
            installing: self.ready_path().exists(),
            last,
            fetching_from,
            fetch_trouble: cairn_host::lock(&self.trouble).clone(),
            serving: self.serving(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    unhex_bytes(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId([1; 32]);

    /// An offer as the handler passes it on (its signature checked there).
    fn signed(bundle: &BundleRef, allow_downgrade: bool, from: Option<NodeId>) -> SignedOffer {
        SignedOffer {
            bundle: bundle.clone(),
            allow_downgrade,
            from,
            not_after: 1_900_000_000,
            signature: vec![0; 64],
        }
    }

    fn inbox(dir: &Path) -> UpdateInbox {
        UpdateInbox::new(
            dir,
            UpdateSection {
                enabled: true,
                release_file: dir.join("release"),
                status_dir: dir.join("status"),
            },
        )
    }

    fn bundle(bytes: &[u8], version: &str) -> BundleRef {
        BundleRef {
            hash: *blake3::hash(bytes).as_bytes(),
            size: bytes.len() as u64,
            version: version.into(),
        }
    }

    #[test]
    fn a_bundle_arrives_in_parts_resumes_and_is_handed_over_only_whole_and_right() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("release"), "1.0.0\n").unwrap();
        let inbox = inbox(dir.path());
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let offer = bundle(&bytes, "2.0.0");
        let info = inbox.take_offer(&signed(&offer, false, None), ME).unwrap();
        assert_eq!(info.version, "1.0.0");
        assert_eq!(info.receiving, Some((offer.clone(), 0)));
        inbox.take_part(&offer.hash, 0, &bytes[..40_000]).unwrap();
        // A part that does not start where the box's copy ends is refused.
        assert!(matches!(
            inbox.take_part(&offer.hash, 0, &bytes[..10]),
            Err(UpdateError::WrongOffset { have: 40_000 })
        ));
        // Offered again (the sender restarted): the box resumes.
        let info = inbox.take_offer(&signed(&offer, false, None), ME).unwrap();
        assert_eq!(info.receiving.unwrap().1, 40_000);
        assert!(matches!(
            inbox.take_part(&offer.hash, 40_000, &vec![0; 70_000]),
            Err(UpdateError::TooLong { size: 100_000 })
        ));
        // cairnd restarted (a new inbox, its running hash gone): the next
        // part continues from the file, and the whole is checked.
        let inbox = super::UpdateInbox::new(dir.path(), inbox.config.clone());
        inbox
            .take_part(&offer.hash, 40_000, &bytes[40_000..70_000])
            .unwrap();
        let info = inbox
            .take_part(&offer.hash, 70_000, &bytes[70_000..])
            .unwrap();
        assert!(info.installing);
        assert_eq!(std::fs::read(inbox.ready_path()).unwrap(), bytes);
        assert!(matches!(
            inbox.take_offer(&signed(&offer, false, None), ME),
            Err(UpdateError::Installing)
        ));
    }

    #[test]
    fn a_wrong_bundle_is_dropped_and_another_offer_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(dir.path());
        let bytes = vec![7u8; 5000];
        let mut offer = bundle(&bytes, "2.0.0");
        offer.hash[0] ^= 1;
        inbox.take_offer(&signed(&offer, false, None), ME).unwrap();
        assert!(matches!(
            inbox.take_part(&offer.hash, 0, &bytes),
            Err(UpdateError::HashMismatch)
        ));
        assert!(!inbox.ready_path().exists());
        assert!(matches!(
            inbox.take_part(&offer.hash, 0, &bytes),
            Err(UpdateError::NotOffered)
        ));
        // A half-received bundle gives way to a new offer.
        let first = bundle(&bytes, "2.0.0");
        inbox.take_offer(&signed(&first, false, None), ME).unwrap();
        inbox.take_part(&first.hash, 0, &bytes[..100]).unwrap();
        let second = bundle(&[1u8; 300], "3.0.0");
        let info = inbox.take_offer(&signed(&second, true, None), ME).unwrap();
        assert_eq!(info.receiving, Some((second.clone(), 0)));
        assert!(matches!(
            inbox.take_part(&first.hash, 100, &bytes[100..]),
            Err(UpdateError::NotOffered)
        ));
        let kept = std::fs::read_to_string(dir.path().join("updates").join(DOWNGRADE_FILE));
        let kept = DowngradeOffer::parse(&kept.unwrap(), DOWNGRADE_FILE).unwrap();
        assert_eq!(kept, DowngradeOffer::new(&signed(&second, true, None), ME));
        // Too big for the disk: refused before anything is written.
        let huge = BundleRef {
            hash: [9; 32],
            size: 1 << 60,
            version: "4.0".into(),
        };
        assert!(matches!(
            inbox.take_offer(&signed(&huge, false, None), ME),
            Err(UpdateError::NoSpace { .. })
        ));
    }

    #[test]
    fn a_kept_bundle_is_served_reinstalled_without_a_transfer_and_dropped_for_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("release"), "1.0.0\n").unwrap();
        let inbox = inbox(dir.path());
        let bytes = vec![3u8; 10_000];
        let offer = bundle(&bytes, "2.0.0");
        // Told to fetch it from itself while it has none: refused.
        assert!(matches!(
            inbox.take_offer(&signed(&offer, false, Some(ME)), ME),
            Err(UpdateError::NotHeld)
        ));
        let from = NodeId([2; 32]);
        inbox
            .take_offer(&signed(&offer, false, Some(from)), ME)
            .unwrap();
        assert_eq!(
            inbox.fetch_job(),
            Some(FetchJob {
                from,
                bundle: offer.clone(),
                have: 0
            })
        );
        inbox.take_part(&offer.hash, 0, &bytes).unwrap();
        assert_eq!(inbox.fetch_job(), None);
        assert_eq!(
            inbox.read_kept(&offer.hash, 9_000, 1_000).unwrap(),
            &bytes[9_000..]
        );
        assert!(matches!(
            inbox.read_kept(&offer.hash, 9_000, 1_001),
            Err(UpdateError::TooLong { .. })
        ));
        assert!(matches!(
            inbox.read_kept(&[0; 32], 0, 1),
            Err(UpdateError::NotServing)
        ));
        // Root's installer takes ready.raucb; the install rolls back and
        // the owner offers the same bundle again: it is installed from
        // the kept copy, nothing sent.
        std::fs::remove_file(inbox.ready_path()).unwrap();
        let info = inbox
            .take_offer(&signed(&offer, false, Some(ME)), ME)
            .unwrap();
        assert!(info.installing);
        assert_eq!(std::fs::read(inbox.ready_path()).unwrap(), bytes);
        std::fs::remove_file(inbox.ready_path()).unwrap();
        // Once it runs that version, an offer of it takes nothing.
        std::fs::write(dir.path().join("release"), "2.0.0\n").unwrap();
        let info = inbox.take_offer(&signed(&offer, false, None), ME).unwrap();
        assert!(!info.installing && info.receiving.is_none());
        assert_eq!(info.serving, Some(offer.clone()));
        // A newer bundle replaces the kept one.
        let newer = bundle(&[4u8; 100], "3.0.0");
        inbox.take_offer(&signed(&newer, false, None), ME).unwrap();
        assert_eq!(inbox.info().serving, None);
        assert!(matches!(
            inbox.read_kept(&offer.hash, 0, 1),
            Err(UpdateError::NotServing)
        ));
    }

    #[test]
    fn failed_fetches_wait_longer_each_time_and_end() {
        let mut tries = FetchTries::default();
        let waits: Vec<u64> = (0..FETCH_TRIES)
            .map(|_| tries.failed())
            .inspect(|f| assert_eq!(f.give_up, f.tries == FETCH_TRIES))
            .map(|f| f.wait.as_secs())
            .collect();
        assert_eq!(&waits[..7], &[2, 4, 8, 16, 32, 60, 60]);
        // Given up within about a quarter of an hour.
        let total: u64 = waits.iter().sum();
        assert!((600..=1200).contains(&total), "{total}");
    }

    #[test]
    fn root_allows_a_downgrade_only_as_the_box_owner_signed_it() {
        use cairn_proto::signed;
        let owner_key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let owner = signed::owner_id(&owner_key);
        let bundle = bundle(&[1u8; 50], "1.5.0");
        let from = Some(NodeId([3; 32]));
        let not_after = 1_900_000_000;
        let offer = SignedOffer {
            bundle: bundle.clone(),
            allow_downgrade: true,
            from,
            not_after,
            signature: signed::sign(
                &owner_key,
                &signed::update_message(&ME, &bundle, true, from.as_ref(), not_after),
            ),
        };
        let text = toml::to_string(&DowngradeOffer::new(&offer, ME)).unwrap();
        let kept = DowngradeOffer::parse(&text, "downgrade.toml").unwrap();
        assert_eq!(kept.allows(&ME, Some(&owner), "1.5.0"), Ok(()));
        // Another version, another box, another owner, no owner: refused.
        assert!(matches!(
            kept.allows(&ME, Some(&owner), "1.4.0"),
            Err(DowngradeError::OtherVersion { .. })
        ));
        assert_eq!(
            kept.allows(&NodeId([9; 32]), Some(&owner), "1.5.0"),
            Err(DowngradeError::OtherNode)
        );
        let stranger = signed::owner_id(&ed25519_dalek::SigningKey::from_bytes(&[6; 32]));
        assert_eq!(
            kept.allows(&ME, Some(&stranger), "1.5.0"),
            Err(DowngradeError::NotOwners)
        );
        assert_eq!(
            kept.allows(&ME, None, "1.5.0"),
            Err(DowngradeError::NoOwner)
        );
        // A file cairnd wrote with the version changed after signing.
        let forged = text.replace("1.5.0", "1.4.0");
        let forged = DowngradeOffer::parse(&forged, "downgrade.toml").unwrap();
        assert_eq!(
            forged.allows(&ME, Some(&owner), "1.4.0"),
            Err(DowngradeError::NotOwners)
        );
        assert!(DowngradeOffer::parse("1.5.0\n", "downgrade.toml").is_err());
    }
}
