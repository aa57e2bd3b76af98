//! Updates that cannot brick a box. A Cairn box has two system slots (A and
//! B, each a root file system with its kernel); an update is written into
//! the slot that is not running, tried once, and kept only if the box comes
//! up healthy on it. This crate holds the decisions, as plain code over
//! values:
//!
//! - [`bootcount`]: which slot systemd-boot boots, from the names of its
//!   boot-counting entries (amd64), and how to make a slot primary, good or
//!   bad;
//! - [`tryboot`]: the same for the Raspberry Pi firmware's `tryboot` and
//!   `autoboot.txt` (arm64);
//! - [`gate`]: whether a newly booted slot is healthy, still starting, or
//!   failed, and what a boot means after an update was installed;
//! - [`version`]: which bundles a box takes (no downgrade unless its owner
//!   allowed that version);
//! - [`state`]: the small files the update keeps on the writable partition.
//!
//! [`esp`] and [`pi`] read and write the boot loaders' files; the
//! `cairn-slot` binary runs systemd, `mount` and RAUC, which writes the
//! slots and checks the bundles' signatures.

pub mod bootcount;
pub mod esp;
pub mod gate;
pub mod pi;
pub mod slot;
pub mod state;
pub mod tryboot;
pub mod version;

pub use slot::Slot;
pub use version::Version;

/// What a boot loader says of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Booted and kept: the boot loader boots it without counting.
    Good,
    /// Written and made primary, not yet proven: the boot loader tries it
    /// this many more times.
    Trial {
        /// Boots left before the boot loader gives up on it.
        left: u32,
    },
    /// Tried and failed, or being written: the boot loader never picks it.
    Bad,
    /// The boot loader has no entry for it at all.
    Absent,
}

impl SlotState {
    /// The word RAUC's custom boot loader backend prints for `get-state`:
    /// only a kept slot is good.
    pub fn rauc_word(self) -> &'static str {
        match self {
            SlotState::Good => "good",
            _ => "bad",
        }
    }
}
