//! The box's owner and its live control state, shared by the daemon's board
//! loop and the network server: who owns the box (kept in the state
//! directory, replaced atomically), whether it drains, whether the pairing
//! window is open, and the health the board loop last decided.
//!
//! The decisions about claims, transfers and drains are plain functions of
//! the stored ownership, the request and the time ([`Ownership::claim`] and
//! friends); [`NodeControl`] adds the lock and the file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use cairn_host::lock;
use cairn_proto::OwnershipInfo;
use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::signed::{self, OwnerAuthError};

const FILE: &str = "ownership.toml";

/// Who owns the box, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The owner, or `None` for an unclaimed box.
    pub owner: Option<Owner>,
    /// The box takes no new shards.
    #[serde(default)]
    pub draining: bool,
}

/// An owner and the client key it acts through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owner's public key, hex.
    pub owner: String,
    /// The client key admitted for the owner, hex.
    pub client: String,
    /// Unix time of the claim or transfer.
    pub since: u64,
}

impl Owner {
    fn new(owner: &OwnerId, client: &NodeId, since: u64) -> Self {
        Self {
            owner: owner.to_hex(),
            client: client.to_hex(),
            since,
        }
    }

    /// The owner's key.
    pub fn owner_id(&self) -> Option<OwnerId> {
        OwnerId::from_hex(&self.owner).ok()
    }

    /// The owner's client key.
    pub fn client_id(&self) -> Option<NodeId> {
        NodeId::from_hex(&self.client).ok()
    }
}

/// Why an ownership request is refused.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// A claim came while the pairing window was closed.
    #[error(
        "the box's pairing window is closed; hold its button for about 5 seconds (until the LED blips once a second), then claim within 5 minutes"
    )]
    PairingClosed,
    /// The box already has another owner.
    #[error(
        "the box is already claimed by owner {0}; that owner can hand it over with `cairn transfer`, or whoever holds the box can reset it (hold the button 15 s, then press it once)"
    )]
    AlreadyClaimed(String),
    /// A transfer or drain on a box nobody owns.
    #[error("the box is not claimed yet; claim it first with `cairn claim`")]
    Unclaimed,
    /// The signature does not check out.
    #[error(transparent)]
    Auth(#[from] OwnerAuthError),
    /// The ownership file could not be written; nothing changed.
    #[error(
        "cannot record the new ownership in {path}: {source}; nothing changed; check the state directory's disk"
    )]
    Save {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The signed command was carried out before, or cannot be recorded.
    #[error(transparent)]
    Spent(#[from] crate::spent::SpentError),
    /// The ownership file could not be read or parsed.
    #[error(
        "cannot read the ownership file {path}: {reason}; fix or remove it (removing it leaves the box unclaimed)"
    )]
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Ownership {
    /// The owner's key and client key, if claimed and well-formed.
    pub fn owner_keys(&self) -> Option<(OwnerId, NodeId)> {
        let owner = self.owner.as_ref()?;
        Some((owner.owner_id()?, owner.client_id()?))
    }

    /// As peers see it.
    pub fn info(&self) -> OwnershipInfo {
        OwnershipInfo {
            owner: self.owner_keys().map(|(owner, _)| owner),
            draining: self.draining,
        }
    }

    /// The ownership after a claim by `owner` through `client`. Reclaiming by
    /// the same owner (say, from a recovered machine) moves its client key.
    pub fn claim(
        &self,
        node: &NodeId,
        client: &NodeId,
        owner: &OwnerId,
        signature: &[u8],
        pairing_open: bool,
        now: u64,
    ) -> Result<Self, OwnershipError> {
        if !pairing_open {
            return Err(OwnershipError::PairingClosed);
        }
        if let Some((current, _)) = self.owner_keys()
            && current != *owner
        {
            return Err(OwnershipError::AlreadyClaimed(current.to_hex()));
        }
        signed::verify(
            owner,
            &signed::claim_message(node, client, owner),
            signature,
        )?;
        Ok(Self {
            owner: Some(Owner::new(owner, client, now)),
            draining: self.draining,
        })
    }

    /// The ownership after the current owner hands the box over.
    pub fn transfer(
        &self,
        node: &NodeId,
        to_owner: &OwnerId,
        to_client: &NodeId,
        not_after: u64,
        signature: &[u8],
        now: u64,
    ) -> Result<Self, OwnershipError> {
        let (current, _) = self.owner_keys().ok_or(OwnershipError::Unclaimed)?;
        signed::verify_expiring(
            &current,
            &signed::transfer_message(node, to_owner, to_client, not_after),
            signature,
            not_after,
            now,
        )?;
        Ok(Self {
            owner: Some(Owner::new(to_owner, to_client, now)),
            draining: self.draining,
        })
    }

    /// The ownership after the owner starts or stops draining.
    pub fn drain(
        &self,
        node: &NodeId,
        draining: bool,
        not_after: u64,
        signature: &[u8],
        now: u64,
    ) -> Result<Self, OwnershipError> {
        let (current, _) = self.owner_keys().ok_or(OwnershipError::Unclaimed)?;
        signed::verify_expiring(
            &current,
            &signed::drain_message(node, draining, not_after),
            signature,
            not_after,
            now,
        )?;
        Ok(Self {
            owner: self.owner.clone(),
            draining,
        })
    }
}

/// What the board loop last decided about the node's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// `booting`, `healthy`, `degraded`, `repairing` or `error`.
    pub state: &'static str,
    /// Why it is not healthy.
    pub reasons: Vec<String>,
    /// The hottest temperature measured, millidegrees Celsius.
    pub temperature_mc: Option<i32>,
    /// The power supply's flags, where the board reports them.
    pub power: Option<cairn_board::sensors::PowerFlags>,
}

impl Default for HealthSnapshot {
    fn default() -> Self {
        Self {
            state: "booting",
            reasons: Vec::new(),
            temperature_mc: None,
            power: None,
        }
    }
}

/// The live control state, shared by the server and the board loop.
#[derive(Debug)]
pub struct NodeControl {
    path: PathBuf,
    ownership: Mutex<Ownership>,
    pairing_until: Mutex<Option<Instant>>,
    pending_claim: Mutex<Option<PendingClaim>>,
    health: Mutex<HealthSnapshot>,
}

/// The claim that arrived while the pairing window is open, waiting for a
/// press at the box. The box has no screen to say whose claim a press
/// confirms, so a press confirms a claim only if no other claim arrived in
/// the same window: a second, different claim contests the first, and
/// neither can be confirmed until someone holds the button to start over.
/// Polling for the window therefore wins an attacker nothing: its claim
/// either waits for a press the owner does not give, or spoils the owner's
/// claim, which the owner is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingClaim {
    owner: OwnerId,
    client: NodeId,
    confirmed: bool,
    contested: bool,
}

/// Where a claim stands after [`NodeControl::offer_claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOffer {
    /// It waits for the press at the box (it arrived first, or came again).
    Waiting,
    /// The press came: make the claim now.
    Confirmed,
    /// Two different claims arrived in this window: neither is made.
    Contested,
}

impl NodeControl {
    /// Loads the ownership from `state_dir` (an absent file is an unclaimed box).
    pub fn open(state_dir: &Path) -> Result<Self, OwnershipError> {
        let path = state_dir.join(FILE);
        let ownership = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| OwnershipError::Load {
                path: path.clone(),
                reason: e.to_string().trim_end().to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ownership::default(),
            Err(e) => {
                return Err(OwnershipError::Load {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self {
            path,
            ownership: Mutex::new(ownership),
            pairing_until: Mutex::new(None),
            pending_claim: Mutex::new(None),
            health: Mutex::new(HealthSnapshot::default()),
        })
    }

    /// The current ownership.
    pub fn ownership(&self) -> Ownership {
        lock(&self.ownership).clone()
    }

    /// Applies `change` to the ownership and stores the result durably
    /// before anyone sees it; on any error nothing changes.
    pub fn update(
        &self,
        change: impl FnOnce(&Ownership) -> Result<Ownership, OwnershipError>,
    ) -> Result<Ownership, OwnershipError> {
        let mut current = lock(&self.ownership);
        let next = change(&current)?;
        if next != *current {
            self.save(&next)?;
            *current = next.clone();
        }
        Ok(next)
    }

    /// Forgets the owner (factory reset).
    pub fn clear(&self) -> Result<(), OwnershipError> {
        self.update(|_| Ok(Ownership::default())).map(|_| ())
    }

    /// Whether `peer` is the owner's client.
    pub fn is_owner_client(&self, peer: &NodeId) -> bool {
        lock(&self.ownership)
            .owner_keys()
            .is_some_and(|(_, client)| client == *peer)
    }

    /// Opens the pairing window until `until`; a claim that was waiting is
    /// thrown away (the person at the box started over).
    pub fn open_pairing(&self, until: Instant) {
        *lock(&self.pairing_until) = Some(until);
        *lock(&self.pending_claim) = None;
    }

    /// Closes the pairing window, and with it any waiting claim.
    pub fn close_pairing(&self) {
        *lock(&self.pairing_until) = None;
        *lock(&self.pending_claim) = None;
    }

    /// A verified claim by `owner` through `client` arrived while the window
    /// is open: the first waits for the press, the same again learns
    /// whether it came, any other is refused.
    pub fn offer_claim(&self, owner: OwnerId, client: NodeId) -> ClaimOffer {
        let mut pending = lock(&self.pending_claim);
        match pending.as_mut() {
            None => {
                *pending = Some(PendingClaim {
                    owner,
                    client,
                    confirmed: false,
                    contested: false,
                });
                ClaimOffer::Waiting
            }
            Some(p) if p.contested => ClaimOffer::Contested,
            Some(p) if p.owner == owner && p.client == client => {
                if p.confirmed {
                    ClaimOffer::Confirmed
                } else {
                    ClaimOffer::Waiting
                }
            }
            Some(p) if p.confirmed => {
                // The press already went to the first claim; a later one
                // changes nothing.
                ClaimOffer::Contested
            }
            Some(p) => {
                p.contested = true;
                ClaimOffer::Contested
            }
        }
    }

    /// Whether a claim waits for the press at the box (and may be confirmed).
    pub fn claim_waiting(&self) -> bool {
        lock(&self.pending_claim).is_some_and(|p| !p.confirmed && !p.contested)
    }

    /// The press at the box came: the waiting claim may be made. Returns
    /// whether one was waiting (a contested claim is not).
    pub fn confirm_claim(&self) -> bool {
        match lock(&self.pending_claim).as_mut() {
            Some(p) if !p.confirmed && !p.contested => {
                p.confirmed = true;
                true
            }
            _ => false,
        }
    }

    /// Seconds left in the pairing window at `now`.
    pub fn pairing_left(&self, now: Instant) -> u64 {
        lock(&self.pairing_until).map_or(0, |until| until.saturating_duration_since(now).as_secs())
    }

    /// Whether a claim is allowed at `now`.
    pub fn pairing_open(&self, now: Instant) -> bool {
        lock(&self.pairing_until).is_some_and(|until| now < until)
    }

    /// Records the health the board loop decided.
    pub fn set_health(&self, health: HealthSnapshot) {
        *lock(&self.health) = health;
    }

    /// The health last decided.
    pub fn health(&self) -> HealthSnapshot {
        lock(&self.health).clone()
    }

    fn save(&self, ownership: &Ownership) -> Result<(), OwnershipError> {
        let save = |source| OwnershipError::Save {
            path: self.path.clone(),
            source,
        };
        let text = format!(
            "# Who owns this box. Written by cairnd on claim, transfer, drain and\n\
             # factory reset; do not edit.\n{}",
            toml::to_string(ownership).map_err(|e| save(std::io::Error::other(e)))?
        );
        cairn_host::durable::replace_file(&self.path, text.as_bytes(), 0o600).map_err(save)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::signed::owner_id;
    use ed25519_dalek::SigningKey;

    const NODE: NodeId = NodeId([4; 32]);
    const CLIENT: NodeId = NodeId([5; 32]);

    fn claim_by(key: &SigningKey, client: &NodeId) -> Vec<u8> {
        signed::sign(key, &signed::claim_message(&NODE, client, &owner_id(key)))
    }

    #[test]
    fn a_claim_needs_the_pairing_window_and_a_free_box() {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let unclaimed = Ownership::default();
        let signature = claim_by(&alice, &CLIENT);
        assert!(matches!(
            unclaimed.claim(&NODE, &CLIENT, &owner_id(&alice), &signature, false, 10),
            Err(OwnershipError::PairingClosed)
        ));
        let claimed = unclaimed
            .claim(&NODE, &CLIENT, &owner_id(&alice), &signature, true, 10)
            .unwrap();
        assert_eq!(claimed.owner_keys(), Some((owner_id(&alice), CLIENT)));
        // Another owner cannot take it, even with the window open.
        let bob_client = NodeId([6; 32]);
        assert!(matches!(
            claimed.claim(
                &NODE,
                &bob_client,
                &owner_id(&bob),
                &claim_by(&bob, &bob_client),
                true,
                11
            ),
            Err(OwnershipError::AlreadyClaimed(_))
        ));
        // The same owner from a new machine moves its client key.
        let moved = claimed
            .claim(
                &NODE,
                &bob_client,
                &owner_id(&alice),
                &claim_by(&alice, &bob_client),
                true,
                12,
            )
            .unwrap();
        assert_eq!(moved.owner_keys(), Some((owner_id(&alice), bob_client)));
        // A signature for another client key is refused.
        assert!(matches!(
            unclaimed.claim(&NODE, &bob_client, &owner_id(&alice), &signature, true, 10),
            Err(OwnershipError::Auth(_))
        ));
    }

    #[test]
    fn only_the_owner_transfers_or_drains() {
        let alice = SigningKey::from_bytes(&[1; 32]);
        let bob = SigningKey::from_bytes(&[2; 32]);
        let bob_client = NodeId([6; 32]);
        let owned = Ownership::default()
            .claim(
                &NODE,
                &CLIENT,
                &owner_id(&alice),
                &claim_by(&alice, &CLIENT),
                true,
                1,
            )
            .unwrap();
        let message = signed::transfer_message(&NODE, &owner_id(&bob), &bob_client, 100);
        let forged = signed::sign(&bob, &message);
        assert!(matches!(
            owned.transfer(&NODE, &owner_id(&bob), &bob_client, 100, &forged, 50),
            Err(OwnershipError::Auth(_))
        ));
        let signed = signed::sign(&alice, &message);
        let handed = owned
            .transfer(&NODE, &owner_id(&bob), &bob_client, 100, &signed, 50)
            .unwrap();
        assert_eq!(handed.owner_keys(), Some((owner_id(&bob), bob_client)));
        // Alice's signature no longer drains the box; Bob's does.
        let alice_drain = signed::sign(&alice, &signed::drain_message(&NODE, true, 100));
        assert!(handed.drain(&NODE, true, 100, &alice_drain, 50).is_err());
        let bob_drain = signed::sign(&bob, &signed::drain_message(&NODE, true, 100));
        assert!(
            handed
                .drain(&NODE, true, 100, &bob_drain, 50)
                .unwrap()
                .draining
        );
        assert!(matches!(
            Ownership::default().drain(&NODE, true, 100, &bob_drain, 50),
            Err(OwnershipError::Unclaimed)
        ));
    }

    #[test]
    fn ownership_survives_a_restart_and_a_failed_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let alice = SigningKey::from_bytes(&[1; 32]);
        let control = NodeControl::open(dir.path()).unwrap();
        assert_eq!(control.ownership(), Ownership::default());
        control
            .update(|o| {
                o.claim(
                    &NODE,
                    &CLIENT,
                    &owner_id(&alice),
                    &claim_by(&alice, &CLIENT),
                    true,
                    5,
                )
            })
            .unwrap();
        assert!(control.is_owner_client(&CLIENT));
        assert!(
            control
                .update(|o| o.claim(&NODE, &CLIENT, &owner_id(&alice), &[0; 64], true, 6))
                .is_err()
        );
        let reopened = NodeControl::open(dir.path()).unwrap();
        assert_eq!(reopened.ownership(), control.ownership());
        reopened.clear().unwrap();
        assert!(
            !NodeControl::open(dir.path())
                .unwrap()
                .is_owner_client(&CLIENT)
        );
        std::fs::write(dir.path().join(FILE), "owner = 5").unwrap();
        let err = NodeControl::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ownership.toml"), "{err}");
    }

    #[test]
    fn the_first_claim_waits_for_the_press_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let control = NodeControl::open(dir.path()).unwrap();
        let (alice, mallory) = (OwnerId([1; 32]), OwnerId([2; 32]));
        control.open_pairing(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(control.offer_claim(alice, CLIENT), ClaimOffer::Waiting);
        assert!(control.claim_waiting());
        assert_eq!(control.offer_claim(alice, CLIENT), ClaimOffer::Waiting);
        assert!(control.confirm_claim());
        assert!(!control.confirm_claim(), "one press confirms one claim");
        assert_eq!(control.offer_claim(alice, CLIENT), ClaimOffer::Confirmed);
        // A claim after the press changes nothing.
        assert_eq!(control.offer_claim(mallory, NODE), ClaimOffer::Contested);
        assert_eq!(control.offer_claim(alice, CLIENT), ClaimOffer::Confirmed);

        // A new hold starts over. Mallory, polling, is first; Alice's claim
        // contests hers: neither can be confirmed, whoever presses.
        control.open_pairing(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(control.offer_claim(mallory, NODE), ClaimOffer::Waiting);
        assert_eq!(control.offer_claim(alice, CLIENT), ClaimOffer::Contested);
        assert!(!control.claim_waiting());
        assert!(!control.confirm_claim());
        assert_eq!(control.offer_claim(mallory, NODE), ClaimOffer::Contested);
        assert_eq!(
            control.offer_claim(alice, NODE),
            ClaimOffer::Contested,
            "same owner, other key"
        );
        control.close_pairing();
        assert!(!control.claim_waiting());
    }

    #[test]
    fn the_pairing_window_closes_by_time_or_by_a_claim() {
        let dir = tempfile::tempdir().unwrap();
        let control = NodeControl::open(dir.path()).unwrap();
        let now = Instant::now();
        assert!(!control.pairing_open(now));
        control.open_pairing(now + std::time::Duration::from_secs(60));
        assert!(control.pairing_open(now));
        assert!(!control.pairing_open(now + std::time::Duration::from_secs(61)));
        control.close_pairing();
        assert!(!control.pairing_open(now));
    }
}
