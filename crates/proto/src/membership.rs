//! Swarm membership as signed records. A swarm is founded by an owner: the
//! founder's owner key is the swarm's authority and its public key the
//! swarm id. The founder invites a member (a node, or another owner's
//! client key) with a signed, expiring certificate, handed over as a
//! ticket string; a member shows its certificate in every handshake, and a
//! node of the same swarm admits it if the signature holds, it has not
//! expired and the member has not been removed. A removal is a record
//! signed by the authority, which every node keeps once it has seen it.

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, OwnerId};
use crate::signed::{self, member_message, removal_message};

pub use crate::signed::Role;

/// A membership certificate: `member` belongs to `swarm` until `not_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCert {
    /// The swarm id: the founder's owner key.
    pub swarm: OwnerId,
    /// The member's key (node id or client key).
    pub member: NodeId,
    /// Node or client.
    pub role: Role,
    /// Unix time after which the certificate is void (renew before).
    pub not_after: u64,
    /// The founder's Ed25519 signature over [`signed::member_message`].
    pub signature: Vec<u8>,
}

/// A removal: `member` is no longer in `swarm`, signed by its founder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The swarm id.
    pub swarm: OwnerId,
    /// The removed member's key.
    pub member: NodeId,
    /// The founder's signature over [`signed::removal_message`].
    pub signature: Vec<u8>,
}

/// Why a membership record is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    /// The record is for another swarm.
    #[error("it is for swarm {0}, not this one")]
    OtherSwarm(String),
    /// The record names another key.
    #[error("it was issued to another key")]
    OtherMember,
    /// The certificate has expired.
    #[error("it expired at {not_after} (now {now}); ask the swarm's founder for a new one")]
    Expired {
        /// When it ended.
        not_after: u64,
        /// Now.
        now: u64,
    },
    /// The signature is not the founder's.
    #[error("it is not signed by the swarm's founder")]
    BadSignature,
    /// The member was removed from the swarm.
    #[error("the member was removed from the swarm")]
    Removed,
    /// A ticket string does not decode.
    #[error("not a Cairn invite ticket ({0}); copy the whole string, it starts with cairn-invite:")]
    BadTicket(String),
}

const TICKET_PREFIX: &str = "cairn-invite:";

impl MemberCert {
    /// The founder (`authority`) admits `member` until `not_after`.
    pub fn issue(authority: &SigningKey, member: &NodeId, role: Role, not_after: u64) -> Self {
        let swarm = signed::owner_id(authority);
        let signature = signed::sign(authority, &member_message(&swarm, member, role, not_after));
        Self {
            swarm,
            member: *member,
            role,
            not_after,
            signature,
        }
    }

    /// Checks that this certificate admits `member` to `swarm` at `now`.
    pub fn verify(
        &self,
        swarm: &OwnerId,
        member: &NodeId,
        now: u64,
    ) -> Result<(), MembershipError> {
        if self.swarm != *swarm {
            return Err(MembershipError::OtherSwarm(self.swarm.to_hex()));
        }
        if self.member != *member {
            return Err(MembershipError::OtherMember);
        }
        if self.not_after < now {
            return Err(MembershipError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        verify_signature(
            &self.swarm,
            &member_message(&self.swarm, &self.member, self.role, self.not_after),
            &self.signature,
        )
    }

    /// The ticket string a person hands over (base32, no padding).
    pub fn to_ticket(&self) -> String {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        format!(
            "{TICKET_PREFIX}{}",
            BASE32_NOPAD.encode(&bytes).to_lowercase()
        )
    }

    /// Reads a ticket string.
    pub fn from_ticket(ticket: &str) -> Result<Self, MembershipError> {
        let body = ticket
            .trim()
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| MembershipError::BadTicket("no cairn-invite: prefix".into()))?;
        let bytes = BASE32_NOPAD
            .decode(body.to_uppercase().as_bytes())
            .map_err(|e| MembershipError::BadTicket(e.to_string()))?;
        postcard::from_bytes(&bytes).map_err(|e| MembershipError::BadTicket(e.to_string()))
    }
}

impl Removal {
    /// The founder removes `member`.
    pub fn issue(authority: &SigningKey, member: &NodeId) -> Self {
        let swarm = signed::owner_id(authority);
        let signature = signed::sign(authority, &removal_message(&swarm, member));
        Self {
            swarm,
            member: *member,
            signature,
        }
    }

    /// Checks that the founder of `swarm` signed it.
    pub fn verify(&self, swarm: &OwnerId) -> Result<(), MembershipError> {
        if self.swarm != *swarm {
            return Err(MembershipError::OtherSwarm(self.swarm.to_hex()));
        }
        verify_signature(
            &self.swarm,
            &removal_message(&self.swarm, &self.member),
            &self.signature,
        )
    }
}

fn verify_signature(
    swarm: &OwnerId,
    message: &[u8],
    signature: &[u8],
) -> Result<(), MembershipError> {
    signed::verify(swarm, message, signature).map_err(|_| MembershipError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_admits_its_member_to_its_swarm_until_it_expires() {
        let founder = SigningKey::from_bytes(&[1; 32]);
        let swarm = OwnerId(founder.verifying_key().to_bytes());
        let node = NodeId([5; 32]);
        let cert = MemberCert::issue(&founder, &node, Role::Node, 1_000);
        assert_eq!(cert.verify(&swarm, &node, 999), Ok(()));
        assert!(matches!(
            cert.verify(&swarm, &node, 1_001),
            Err(MembershipError::Expired { .. })
        ));
        assert_eq!(
            cert.verify(&swarm, &NodeId([6; 32]), 999),
            Err(MembershipError::OtherMember)
        );
        let other = OwnerId(SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes());
        assert!(matches!(
            cert.verify(&other, &node, 999),
            Err(MembershipError::OtherSwarm(_))
        ));
        // Bent: a longer validity, or another role, breaks the signature.
        let longer = MemberCert {
            not_after: 9_999,
            ..cert.clone()
        };
        assert_eq!(
            longer.verify(&swarm, &node, 999),
            Err(MembershipError::BadSignature)
        );
        let as_client = MemberCert {
            role: Role::Client,
            ..cert.clone()
        };
        assert_eq!(
            as_client.verify(&swarm, &node, 999),
            Err(MembershipError::BadSignature)
        );
        // Someone else's "founder" key cannot issue for this swarm.
        let forged = MemberCert {
            swarm,
            ..MemberCert::issue(&SigningKey::from_bytes(&[3; 32]), &node, Role::Node, 1_000)
        };
        assert_eq!(
            forged.verify(&swarm, &node, 999),
            Err(MembershipError::BadSignature)
        );
    }

    #[test]
    fn tickets_round_trip_and_garbage_is_refused() {
        let founder = SigningKey::from_bytes(&[1; 32]);
        let cert = MemberCert::issue(&founder, &NodeId([5; 32]), Role::Client, 77);
        let ticket = cert.to_ticket();
        assert!(ticket.starts_with("cairn-invite:"));
        assert_eq!(MemberCert::from_ticket(&format!(" {ticket}\n")), Ok(cert));
        assert!(MemberCert::from_ticket("cairn-invite:zzzz1").is_err());
        assert!(MemberCert::from_ticket("hello").is_err());
    }

    #[test]
    fn only_the_founder_removes() {
        let founder = SigningKey::from_bytes(&[1; 32]);
        let swarm = OwnerId(founder.verifying_key().to_bytes());
        let removal = Removal::issue(&founder, &NodeId([5; 32]));
        assert_eq!(removal.verify(&swarm), Ok(()));
        let forged = Removal {
            swarm,
            ..Removal::issue(&SigningKey::from_bytes(&[2; 32]), &NodeId([5; 32]))
        };
        assert_eq!(forged.verify(&swarm), Err(MembershipError::BadSignature));
    }
}
