//! The two system slots.

use std::fmt;

/// One of the two system slots: a root file system with its kernel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// The slot the image is first written to.
    A,
    /// The other one.
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// RAUC's bootname for the slot, also used in file names: `a` or `b`.
    pub fn bootname(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot with that bootname.
    pub fn from_bootname(name: &str) -> Option<Slot> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot that is not this one.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The GPT partition label of the slot's root file system.
    pub fn root_label(self) -> &'static str {
        match self {
            Slot::A => "root-a",
            Slot::B => "root-b",
        }
    }

    /// The slot the running system booted from, by the `rauc.slot=` its boot
    /// loader entry put on the kernel command line.
    pub fn booted(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_ascii_whitespace()
            .find_map(|word| word.strip_prefix("rauc.slot="))
            .and_then(Slot::from_bootname)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_booted_slot_comes_from_the_kernel_command_line() {
        assert_eq!(
            Slot::booted("root=PARTLABEL=root-b ro rauc.slot=b quiet"),
            Some(Slot::B)
        );
        assert_eq!(Slot::booted("root=PARTLABEL=root ro quiet"), None);
        assert_eq!(Slot::booted("rauc.slot=c"), None);
        for slot in Slot::ALL {
            assert_eq!(Slot::from_bootname(slot.bootname()), Some(slot));
            assert_eq!(slot.other().other(), slot);
        }
    }
}
