//! Identifiers: content ids for shards, key-derived ids for nodes and owners,
//! random ids for disks. All print as lowercase hex.

use std::fmt;

/// Why a string could not be read as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a {kind}: expected {expected_len} characters (hex, or `cn` and base32 for a node)"
)]
pub struct ParseIdError {
    /// What was being parsed.
    kind: &'static str,
    /// The offending text (shortened if long).
    text: String,
    /// How many hex characters such an id has.
    expected_len: usize,
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The id as lowercase hex.
            pub fn to_hex(&self) -> String {
                let mut out = String::with_capacity($len * 2);
                for byte in self.0 {
                    out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
                    out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
                }
                out
            }

            /// Parses the hex form written by [`Self::to_hex`].
            pub fn from_hex(text: &str) -> Result<Self, ParseIdError> {
                let error = || ParseIdError {
                    kind: $kind,
                    text: text.chars().take(80).collect(),
                    expected_len: $len * 2,
                };
                let text_bytes = text.as_bytes();
                if text_bytes.len() != $len * 2 {
                    return Err(error());
                }
                let mut out = [0u8; $len];
                for (i, pair) in text_bytes.chunks_exact(2).enumerate() {
                    let hi = (pair[0] as char).to_digit(16).ok_or_else(error)?;
                    let lo = (pair[1] as char).to_digit(16).ok_or_else(error)?;
                    out[i] = (hi * 16 + lo) as u8;
                }
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Twelve hex digits identify a shard or node in logs without drowning them.
                write!(f, "{}({}…)", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseIdError;
            fn from_str(text: &str) -> Result<Self, ParseIdError> {
                Self::from_hex(text)
            }
        }
    };
}

/// Ids are bytes on the wire and in binary files (postcard: the same
/// encoding as a bare byte array), and text in files people read (TOML,
/// JSON): a node id in its `cn…` form, every other id in hex. Reading
/// text accepts what [`NodeId::from_human`] or `from_hex` accepts.
macro_rules! id_serde {
    ($name:ident, $len:expr, $to_text:ident, $from_text:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.$to_text())
                } else {
                    serializer.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    Self::$from_text(&text).map_err(serde::de::Error::custom)
                } else {
                    #[derive(serde::Deserialize)]
                    struct Bytes([u8; $len]);
                    Bytes::deserialize(deserializer).map(|bytes| Self(bytes.0))
                }
            }
        }
    };
}

hex_id!(
    /// A shard's id: the BLAKE3 hash of its bytes, so anyone can check a shard
    /// against its id and nothing else.
    ShardId,
    32,
    "shard id"
);
hex_id!(
    /// A node's id: its long-term public key.
    NodeId,
    32,
    "node id"
);
hex_id!(
    /// An owner's id: the owner's public key; shards record who they belong to.
    OwnerId,
    32,
    "owner id"
);
hex_id!(
    /// A data disk's id, chosen at random when the disk is first initialised
    /// and kept when the disk moves to another box.
    DiskId,
    16,
    "disk id"
);

id_serde!(ShardId, 32, to_hex, from_hex);
id_serde!(NodeId, 32, to_human, from_human);
id_serde!(OwnerId, 32, to_hex, from_hex);
id_serde!(DiskId, 16, to_hex, from_hex);

impl ShardId {
    /// The id of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl DiskId {
    /// A fresh random disk id.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        // The OS RNG failing means the machine cannot do anything safely; there is no fallback.
        getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
        Self(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_text() {
        let id = ShardId::of(b"hello");
        assert_eq!(ShardId::from_hex(&id.to_hex()), Ok(id));
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert!(ShardId::from_hex("abc").is_err());
        assert!(ShardId::from_hex(&"zz".repeat(32)).is_err());
        let disk = DiskId::random();
        assert_eq!(disk.to_hex().parse::<DiskId>(), Ok(disk));
        assert_ne!(DiskId::random(), disk);
    }
}

impl NodeId {
    /// The form people see and type: `cn` and 52 lowercase base32 letters.
    pub fn to_human(&self) -> String {
        format!(
            "cn{}",
            data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase()
        )
    }

    /// Reads the form of [`Self::to_human`], or 64 hex characters.
    pub fn from_human(text: &str) -> Result<Self, ParseIdError> {
        let text = text.trim();
        if let Some(base32) = text.strip_prefix("cn") {
            let decoded = data_encoding::BASE32_NOPAD
                .decode(base32.to_ascii_uppercase().as_bytes())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
            return decoded.map(Self).ok_or_else(|| ParseIdError {
                kind: "node id",
                text: text.chars().take(80).collect(),
                expected_len: 54,
            });
        }
        Self::from_hex(text)
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn ids_are_bytes_on_the_wire_and_text_for_people() {
        let node = NodeId([0x5a; 32]);
        let shard = ShardId([7; 32]);
        // postcard: exactly the bare arrays, as before ids were typed.
        assert_eq!(
            postcard::to_stdvec(&node).unwrap(),
            postcard::to_stdvec(&node.0).unwrap()
        );
        assert_eq!(postcard::from_bytes::<ShardId>(&[7; 32]).unwrap(), shard);
        // JSON (and TOML): the forms people read and type.
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            format!("\"{}\"", node.to_human())
        );
        assert_eq!(
            serde_json::to_string(&shard).unwrap(),
            format!("\"{}\"", shard.to_hex())
        );
        let read: NodeId = serde_json::from_str(&format!("\"{}\"", node.to_hex())).unwrap();
        assert_eq!(read, node);
        assert!(serde_json::from_str::<OwnerId>("\"not hex\"").is_err());
    }
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn node_ids_read_back_in_both_forms() {
        let id = NodeId([0x5a; 32]);
        let human = id.to_human();
        assert_eq!(human.len(), 54);
        assert_eq!(NodeId::from_human(&human), Ok(id));
        assert_eq!(
            NodeId::from_human(&human.to_uppercase().replacen("CN", "cn", 1)),
            Ok(id)
        );
        assert_eq!(NodeId::from_human(&id.to_hex()), Ok(id));
        assert!(NodeId::from_human("cnabc").is_err());
        assert!(NodeId::from_human(&human[..50]).is_err());
    }
}
