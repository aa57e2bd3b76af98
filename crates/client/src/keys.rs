//! The owner's secret and everything derived from it. The secret is 32
//! random bytes shown to the owner once as a 24-word recovery phrase
//! (BIP-39 English words, checksummed); every other key is derived from it
//! with BLAKE3's key derivation under a fixed context string, so the phrase
//! alone brings every key back on any machine.

use ed25519_dalek::SigningKey;

use cairn_proto::ids::OwnerId;

/// Why a secret or phrase cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("cannot get random bytes for a new owner secret: {0}")]
    Random(String),
    /// The phrase has a wrong word, a wrong number of words or a bad checksum.
    #[error("the recovery phrase is not valid ({0}); check every word and that there are 24")]
    Phrase(String),
}

/// The owner's root secret. Never leaves the owner's machines.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnerSecret([u8; 32]);

impl std::fmt::Debug for OwnerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerSecret(..)")
    }
}

impl OwnerSecret {
    /// A fresh secret from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// The secret from its raw bytes (as stored in the owner's key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for the owner's key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The 24-word recovery phrase.
    pub fn phrase(&self) -> String {
        bip39::Mnemonic::from_entropy(&self.0)
            .map(|m| m.to_string())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid BIP-39 entropy length"))
    }

    /// The secret back from its phrase (spacing and case do not matter).
    pub fn from_phrase(phrase: &str) -> Result<Self, KeyError> {
        let normalised = phrase
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ");
        let mnemonic =
            bip39::Mnemonic::parse(normalised).map_err(|e| KeyError::Phrase(e.to_string()))?;
        let entropy = mnemonic.to_entropy();
        let bytes: [u8; 32] = entropy.try_into().map_err(|e: Vec<u8>| {
            KeyError::Phrase(format!("{} words, expected 24", e.len() * 3 / 4))
        })?;
        Ok(Self(bytes))
    }

    /// The X25519 key the owner's client authenticates with to nodes (its
    /// public half is what nodes put on their allow lists). Derived, so a
    /// recovered client is the same client.
    pub fn client_key(&self) -> [u8; 32] {
        blake3::derive_key("cairn/1 2026-11 client transport key", &self.0)
    }

    /// The client's node-style id: what nodes put on their allow lists.
    pub fn client_id(&self) -> cairn_proto::ids::NodeId {
        cairn_net::identity::Identity::from_private(self.client_key()).id
    }

    /// Every key the owner's client uses.
    pub fn keys(&self) -> OwnerKeys {
        let derive = |context: &str| blake3::derive_key(context, &self.0);
        let seed = derive("cairn/1 2026-11 chunk boundary seed");
        OwnerKeys {
            chunk_seed: u64::from_le_bytes(seed[..8].try_into().unwrap_or_default()),
            convergence: derive("cairn/1 2026-11 chunk convergence key"),
            manifest: derive("cairn/1 2026-11 manifest key"),
            signing: SigningKey::from_bytes(&derive("cairn/1 2026-11 owner signing key")),
        }
    }
}

/// Keys derived from an [`OwnerSecret`].
#[derive(Clone)]
pub struct OwnerKeys {
    /// Keys the chunk boundaries, so two owners' equal files are cut differently.
    pub chunk_seed: u64,
    /// Keys the per-chunk encryption keys: equal chunks of this owner get the
    /// same key (dedup), nobody without it can test for a known chunk.
    pub convergence: [u8; 32],
    /// Encrypts the owner's manifests.
    pub manifest: [u8; 32],
    /// Signs the owner's root record and deletes; its public half is the owner id.
    pub signing: SigningKey,
}

impl OwnerKeys {
    /// The owner's public identity.
    pub fn owner_id(&self) -> OwnerId {
        OwnerId(self.signing.verifying_key().to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phrase_brings_back_the_same_keys() {
        let secret = OwnerSecret::generate().unwrap();
        let phrase = secret.phrase();
        assert_eq!(phrase.split(' ').count(), 24);
        let shouted = phrase.to_uppercase().replace(' ', "  \n ");
        let back = OwnerSecret::from_phrase(&shouted).unwrap();
        assert_eq!(back, secret);
        assert_eq!(back.keys().owner_id(), secret.keys().owner_id());
        assert_eq!(back.keys().convergence, secret.keys().convergence);
    }

    #[test]
    fn a_mistyped_phrase_is_refused() {
        let phrase = OwnerSecret::from_bytes(*blake3::hash(b"owner").as_bytes()).phrase();
        let mut words: Vec<&str> = phrase.split(' ').collect();
        words[3] = if words[3] == "zoo" { "abandon" } else { "zoo" };
        assert!(OwnerSecret::from_phrase(&words.join(" ")).is_err());
        assert!(OwnerSecret::from_phrase(&words[..23].join(" ")).is_err());
        assert!(OwnerSecret::from_phrase("not a phrase").is_err());
    }

    #[test]
    fn keys_differ_from_each_other_and_between_owners() {
        let a = OwnerSecret::from_bytes([1; 32]).keys();
        let b = OwnerSecret::from_bytes([2; 32]).keys();
        assert_ne!(a.convergence, a.manifest);
        assert_ne!(a.convergence, b.convergence);
        assert_ne!(a.chunk_seed, b.chunk_seed);
        assert_ne!(a.owner_id(), b.owner_id());
    }
}
