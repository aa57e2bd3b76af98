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
//! Files in the directory (format 1, docs/UPDATES.md): `offer.toml` (the
//! bundle being received), `<hash>.part`, `ready.raucb`, and
//! `allow-downgrade` (a version the owner allowed to go back to, read by
//! `cairn-slot pre-install`).

use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// The updates directory could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Offer {
    format: u32,
    hash: String,
    size: u64,
    version: String,
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
        }
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
    /// resume), drops any other, and says how much it has.
    pub fn take_offer(
        &self,
        bundle: &BundleRef,
        allow_downgrade: bool,
    ) -> Result<UpdateInfo, UpdateError> {
        let mut hashing = cairn_host::lock(&self.lock);
        if self.ready_path().exists() {
            return Err(UpdateError::Installing);
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let same = self
            .offer()
            .is_some_and(|o| o.hash == hex(&bundle.hash) && o.size == bundle.size);
        // A new bundle replaces the one half received: its bytes count as
        // free, but go only once the new one is known to fit.
        let (have, reclaimed) = match self.offer().and_then(|o| unhex(&o.hash)) {
            Some(old) if same => (self.have(&old), 0),
            Some(old) => (0, self.have(&old)),
            None => (0, 0),
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
        if !same {
            *hashing = None;
            self.drop_partial()?;
            let offer = Offer {
                format: 1,
                hash: hex(&bundle.hash),
                size: bundle.size,
                version: bundle.version.clone(),
            };
            let text = toml::to_string(&offer).map_err(|e| UpdateError::Io {
                path: self.offer_path(),
                source: std::io::Error::other(e),
            })?;
            cairn_host::durable::replace_file(&self.offer_path(), text.as_bytes(), 0o600)
                .map_err(io(&self.offer_path()))?;
        }
        let allow = self.dir.join("allow-downgrade");
        if allow_downgrade {
            cairn_host::durable::replace_file(
                &allow,
                format!("{}\n", bundle.version).as_bytes(),
                0o644,
            )
            .map_err(io(&allow))?;
        } else {
            match std::fs::remove_file(&allow) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&allow)(e)),
                _ => {}
            }
        }
        Ok(self.info_locked())
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
            // Its version, for root's record if RAUC refuses it unread.
            let version_path = self.dir.join("ready.version");
            cairn_host::durable::replace_file(&version_path, offer.version.as_bytes(), 0o644)
                .map_err(io(&version_path))?;
            std::fs::rename(&path, self.ready_path()).map_err(io(&path))?;
            std::fs::remove_file(self.offer_path()).map_err(io(&self.offer_path()))?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
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
        let version = std::fs::read_to_string(&self.config.release_file)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| format!("cairnd {}", cairn_net::software()));
        // cairnd cannot read /proc/cmdline (ProcSubset=pid): the gate
        // records the booted slot at every boot.
        let status = cairn_update::state::StateDir::new(&self.config.status_dir)
            .status()
            .ok()
            .flatten();
        let slot = status.as_ref().map(|s| s.slot.bootname().to_owned());
        let receiving = self.offer().and_then(|o| {
            let hash = unhex(&o.hash)?;
            Some((
                BundleRef {
                    hash,
                    size: o.size,
                    version: o.version,
                },
                self.have(&hash),
            ))
        });
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
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let info = inbox.take_offer(&offer, false).unwrap();
        assert_eq!(info.version, "1.0.0");
        assert_eq!(info.receiving, Some((offer.clone(), 0)));
        inbox.take_part(&offer.hash, 0, &bytes[..40_000]).unwrap();
        // A part that does not start where the box's copy ends is refused.
        assert!(matches!(
            inbox.take_part(&offer.hash, 0, &bytes[..10]),
            Err(UpdateError::WrongOffset { have: 40_000 })
        ));
        // Offered again (the sender restarted): the box resumes.
        let info = inbox.take_offer(&offer, false).unwrap();
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
            inbox.take_offer(&offer, false),
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
        inbox.take_offer(&offer, false).unwrap();
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
        inbox.take_offer(&first, false).unwrap();
        inbox.take_part(&first.hash, 0, &bytes[..100]).unwrap();
        let second = bundle(&[1u8; 300], "3.0.0");
        let info = inbox.take_offer(&second, true).unwrap();
        assert_eq!(info.receiving, Some((second, 0)));
        assert!(matches!(
            inbox.take_part(&first.hash, 100, &bytes[100..]),
            Err(UpdateError::NotOffered)
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("updates/allow-downgrade")).unwrap(),
            "3.0.0\n"
        );
        // Too big for the disk: refused before anything is written.
        let huge = BundleRef {
            hash: [9; 32],
            size: 1 << 60,
            version: "4.0".into(),
        };
        assert!(matches!(
            inbox.take_offer(&huge, false),
            Err(UpdateError::NoSpace { .. })
        ));
    }
}
