//! What a box donates, and to whom: the box owner's policy (`[donation]` in
//! `cairnd.toml`) and the owners it evicted (`evicted.toml` in the state
//! directory). Plain decisions on a given time and a given use; the handler
//! asks before every put and renewal.
//!
//! A stranger may name any owner id in a put, so the policy is per owner:
//! the owners it lists (or every owner a member stores for), each up to a
//! share, none longer than the longest lease. The box's owner is never
//! limited by it, and can evict an owner: its claims go, and its puts are
//! refused from then on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn_proto::ids::OwnerId;
use serde::{Deserialize, Serialize};

const FILE: &str = "evicted.toml";
/// Most owners the box keeps evicted: the file is read at start and lives
/// in `/var`, so it stays small.
pub const MAX_EVICTED: usize = 4096;

/// The box owner's rules for what others may store here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Only these owners may store; `None`: any owner a member stores for.
    pub owners: Option<BTreeSet<OwnerId>>,
    /// Most bytes of claims per owner; `None`: no share beyond the node's quota.
    pub per_owner_bytes: Option<u64>,
    /// Longest lease a put may ask for, seconds from now.
    pub longest_lease_s: u64,
}

/// Why a put is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The owner was evicted from this box by its owner.
    #[error("owner {0} was evicted from this box by the box's owner; store on another node")]
    Evicted(String),
    /// The policy names the owners it serves, and this is not one.
    #[error(
        "this box stores only for the owners its owner chose, and {0} is not one; store on another node"
    )]
    NotServed(String),
    /// The owner's claims would pass its share.
    #[error(
        "owner {owner} already uses {used} bytes here and this box gives each owner at most {share}; store on another node"
    )]
    ShareFull {
        /// The owner, hex.
        owner: String,
        /// Bytes its claims hold now.
        used: u64,
        /// The share.
        share: u64,
    },
    /// The lease asked for is longer than the box keeps shards.
    #[error(
        "a lease until {asked} is {} days past now; this box keeps shards at most {} days at a time (renewed by stewards); ask for a shorter lease",
        (asked.saturating_sub(*now)) / 86_400,
        longest_s / 86_400
    )]
    LeaseTooLong {
        /// The lease asked for, Unix seconds.
        asked: u64,
        /// Now, Unix seconds.
        now: u64,
        /// The longest lease, seconds.
        longest_s: u64,
    },
}

/// Errors keeping the evicted list.
#[derive(Debug, thiserror::Error)]
pub enum EvictedError {
    /// The file could not be read or parsed.
    #[error("cannot read {path}: {message}; move it aside to start with no owner evicted")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot save {path}: {source}; check the state directory's disk")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Too many owners evicted already.
    #[error("{MAX_EVICTED} owners are evicted already; lift some first")]
    Full,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvictedFile {
    owners: Vec<String>,
}

/// The owners this box's owner evicted, kept in the state directory.
#[derive(Debug)]
pub struct Evicted {
    path: PathBuf,
    owners: BTreeSet<OwnerId>,
}

impl Evicted {
    /// Loads the list from `state_dir` (none evicted if there is no file).
    pub fn load(state_dir: &Path) -> Result<Self, EvictedError> {
        let path = state_dir.join(FILE);
        let load_error = |message: String| EvictedError::Load {
            path: path.clone(),
            message,
        };
        let owners = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: EvictedFile =
                    toml::from_str(&text).map_err(|e| load_error(e.to_string()))?;
                file.owners
                    .iter()
                    .map(|hex| OwnerId::from_hex(hex).map_err(|e| load_error(e.to_string())))
                    .collect::<Result<_, _>>()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(load_error(e.to_string())),
        };
        Ok(Self { path, owners })
    }

    /// Whether `owner` is evicted.
    pub fn contains(&self, owner: &OwnerId) -> bool {
        self.owners.contains(owner)
    }

    /// Evicts `owner` (or lifts its eviction) durably.
    pub fn set(&mut self, owner: OwnerId, evicted: bool) -> Result<(), EvictedError> {
        let mut owners = self.owners.clone();
        if evicted {
            owners.insert(owner);
        } else {
            owners.remove(&owner);
        }
        if owners.len() > MAX_EVICTED {
            return Err(EvictedError::Full);
        }
        let file = EvictedFile {
            owners: owners.iter().map(|o| o.to_hex()).collect(),
        };
        let save_error = |source| EvictedError::Save {
            path: self.path.clone(),
            source,
        };
        let text = toml::to_string(&file).map_err(|e| save_error(std::io::Error::other(e)))?;
        cairn_host::durable::replace_file(&self.path, text.as_bytes(), 0o600)
            .map_err(save_error)?;
        self.owners = owners;
        Ok(())
    }
}

/// What a put asks of the box, with what its owner holds here already.
#[derive(Debug, Clone, Copy)]
pub struct PutAsk {
    /// The lease asked for, Unix seconds.
    pub lease_expires: u64,
    /// Bytes of the owner's claims here now.
    pub used: u64,
    /// Bytes the put adds.
    pub len: u64,
}

impl Policy {
    /// Whether a put for `owner` (see [`PutAsk`]) may be stored now.
    /// `box_owner` (the box's own owner) is never limited.
    pub fn check_put(
        &self,
        owner: &OwnerId,
        box_owner: Option<&OwnerId>,
        evicted: &Evicted,
        ask: PutAsk,
        now: u64,
    ) -> Result<(), Refused> {
        let PutAsk {
            lease_expires,
            used,
            len,
        } = ask;
        if box_owner == Some(owner) {
            return Ok(());
        }
        self.serves(owner, box_owner, evicted)?;
        if lease_expires > now.saturating_add(self.longest_lease_s) {
            return Err(Refused::LeaseTooLong {
                asked: lease_expires,
                now,
                longest_s: self.longest_lease_s,
            });
        }
        if let Some(share) = self.per_owner_bytes
            && used.saturating_add(len) > share
        {
            return Err(Refused::ShareFull {
                owner: owner.to_hex(),
                used,
                share,
            });
        }
        Ok(())
    }

    /// Whether the box keeps anything (shards, a root record) for `owner`:
    /// its own owner always; an evicted or unlisted owner never.
    pub fn serves(
        &self,
        owner: &OwnerId,
        box_owner: Option<&OwnerId>,
        evicted: &Evicted,
    ) -> Result<(), Refused> {
        if box_owner == Some(owner) {
            return Ok(());
        }
        if evicted.contains(owner) {
            return Err(Refused::Evicted(owner.to_hex()));
        }
        if let Some(owners) = &self.owners
            && !owners.contains(owner)
        {
            return Err(Refused::NotServed(owner.to_hex()));
        }
        Ok(())
    }

    /// The latest a renewal may move a lease to: renewals come from any
    /// member, so they are cut to the longest lease rather than refused.
    pub fn renewal_until(&self, asked: u64, now: u64) -> u64 {
        asked.min(now.saturating_add(self.longest_lease_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn ask(lease_expires: u64, used: u64, len: u64) -> PutAsk {
        PutAsk {
            lease_expires,
            used,
            len,
        }
    }

    fn policy() -> Policy {
        Policy {
            owners: None,
            per_owner_bytes: Some(1000),
            longest_lease_s: 100 * DAY,
        }
    }

    #[test]
    fn a_put_is_refused_past_the_share_the_lease_or_the_list_and_the_box_owner_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut evicted = Evicted::load(dir.path()).unwrap();
        let (alice, mallory, me) = (OwnerId([1; 32]), OwnerId([2; 32]), OwnerId([3; 32]));
        let p = policy();
        let ok = NOW + 90 * DAY;
        assert_eq!(
            p.check_put(&alice, None, &evicted, ask(ok, 0, 1000), NOW),
            Ok(())
        );
        assert!(matches!(
            p.check_put(&alice, None, &evicted, ask(ok, 1, 1000), NOW),
            Err(Refused::ShareFull { used: 1, .. })
        ));
        assert!(matches!(
            p.check_put(&alice, None, &evicted, ask(u64::MAX, 0, 10), NOW),
            Err(Refused::LeaseTooLong { .. })
        ));
        // The box's owner is not held to the policy it sets for others.
        assert_eq!(
            p.check_put(&me, Some(&me), &evicted, ask(u64::MAX, 5000, 10), NOW),
            Ok(())
        );
        let listed = Policy {
            owners: Some([alice].into()),
            ..policy()
        };
        assert!(matches!(
            listed.check_put(&mallory, Some(&me), &evicted, ask(ok, 0, 10), NOW),
            Err(Refused::NotServed(_))
        ));
        evicted.set(mallory, true).unwrap();
        assert!(matches!(
            p.check_put(&mallory, None, &evicted, ask(ok, 0, 10), NOW),
            Err(Refused::Evicted(_))
        ));
        // Kept across a restart, and lifted again.
        let mut again = Evicted::load(dir.path()).unwrap();
        assert!(again.contains(&mallory) && !again.contains(&alice));
        again.set(mallory, false).unwrap();
        assert!(!Evicted::load(dir.path()).unwrap().contains(&mallory));
        assert_eq!(p.renewal_until(u64::MAX, NOW), NOW + 100 * DAY);
        assert_eq!(p.renewal_until(NOW + DAY, NOW), NOW + DAY);
    }
}

/// The policy and the evicted owners, shared by the handler.
#[derive(Debug)]
pub struct Donation {
    /// The box owner's rules.
    pub policy: Policy,
    evicted: std::sync::Mutex<Evicted>,
}

impl Donation {
    /// `policy`, with the evicted owners kept in `state_dir`.
    pub fn open(policy: Policy, state_dir: &Path) -> Result<Self, EvictedError> {
        Ok(Self {
            policy,
            evicted: std::sync::Mutex::new(Evicted::load(state_dir)?),
        })
    }

    /// [`Policy::check_put`] against the evicted owners now.
    pub fn check_put(
        &self,
        owner: &OwnerId,
        box_owner: Option<&OwnerId>,
        ask: PutAsk,
        now: u64,
    ) -> Result<(), Refused> {
        let evicted = cairn_host::lock(&self.evicted);
        self.policy.check_put(owner, box_owner, &evicted, ask, now)
    }

    /// [`Policy::serves`] against the evicted owners now.
    pub fn serves(&self, owner: &OwnerId, box_owner: Option<&OwnerId>) -> Result<(), Refused> {
        let evicted = cairn_host::lock(&self.evicted);
        self.policy.serves(owner, box_owner, &evicted)
    }

    /// Whether the box's owner evicted `owner`.
    pub fn is_evicted(&self, owner: &OwnerId) -> bool {
        cairn_host::lock(&self.evicted).contains(owner)
    }

    /// Evicts `owner` (or lifts it) durably.
    pub fn set_evicted(&self, owner: OwnerId, evicted: bool) -> Result<(), EvictedError> {
        cairn_host::lock(&self.evicted).set(owner, evicted)
    }
}
