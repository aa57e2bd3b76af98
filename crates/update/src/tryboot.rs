//! The Raspberry Pi firmware's A/B boot (Pi 4 and 5), as Cairn uses it on
//! arm64.
//!
//! The first FAT partition holds only `autoboot.txt`:
//!
//! ```text
//! [all]
//! tryboot_a_b=1
//! boot_partition=2
//! [tryboot]
//! boot_partition=3
//! ```
//!
//! With `tryboot_a_b=1` the firmware reads `config.txt`, the kernel and
//! `cmdline.txt` from `boot_partition`: partition 2 is slot A's boot files,
//! 3 is slot B's, and each `cmdline.txt` names its own root and
//! `rauc.slot=`. A normal boot uses `[all]`; a reboot with the `tryboot`
//! flag (`reboot "0 tryboot"`) uses `[tryboot]` once. So an update is
//! tried by pointing `[tryboot]` at the new slot and rebooting with the
//! flag; the health gate keeps it by pointing `[all]` at it; if the new
//! slot never gets that far, the next boot (any reset) is the old slot.
//! The firmware tells the running system what it did in
//! `/proc/device-tree/chosen/bootloader/`: `tryboot` (1 in a tryboot boot)
//! and `partition` (the boot partition), each a big-endian 32-bit number.

use crate::{Slot, SlotState};

/// The boot partition (MBR/GPT number) of a slot's boot files.
pub fn boot_partition(slot: Slot) -> u32 {
    match slot {
        Slot::A => 2,
        Slot::B => 3,
    }
}

/// The slot whose boot files are on that partition.
pub fn slot_of(partition: u32) -> Option<Slot> {
    Slot::ALL
        .into_iter()
        .find(|s| boot_partition(*s) == partition)
}

/// Why `autoboot.txt` or the firmware's report could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrybootError {
    /// `autoboot.txt` lacks `tryboot_a_b=1` or a `boot_partition` of a slot.
    #[error(
        "autoboot.txt is not Cairn's A/B layout ({0}); re-image the card, or write the [all] and [tryboot] sections README describes"
    )]
    NotAb(String),
    /// A value in `/proc/device-tree/chosen/bootloader` is not a 32-bit number.
    #[error(
        "the firmware's {0} in /proc/device-tree/chosen/bootloader is not a 32-bit number; the Pi's boot firmware is too old for tryboot: update its EEPROM"
    )]
    Firmware(&'static str),
}

/// What `autoboot.txt` says: the slot booted normally and the slot a
/// tryboot boot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoboot {
    /// `[all] boot_partition`: the slot every normal boot uses.
    pub primary: Slot,
    /// `[tryboot] boot_partition`: the slot the next tryboot boot uses.
    pub tryboot: Slot,
}

impl Autoboot {
    /// Reads `autoboot.txt`.
    pub fn parse(text: &str) -> Result<Autoboot, TrybootError> {
        let mut section = String::from("all");
        let (mut ab, mut primary, mut tryboot) = (false, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match (section.as_str(), key.trim()) {
                ("all", "tryboot_a_b") => ab = value.trim() == "1",
                ("all", "boot_partition") => primary = value.trim().parse::<u32>().ok(),
                ("tryboot", "boot_partition") => tryboot = value.trim().parse::<u32>().ok(),
                _ => {}
            }
        }
        if !ab {
            return Err(TrybootError::NotAb("no tryboot_a_b=1 in [all]".into()));
        }
        let slot = |number: Option<u32>, section: &str| {
            number.and_then(slot_of).ok_or_else(|| {
                TrybootError::NotAb(format!("[{section}] boot_partition is not 2 or 3"))
            })
        };
        Ok(Autoboot {
            primary: slot(primary, "all")?,
            tryboot: slot(tryboot, "tryboot")?,
        })
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "# Cairn's A/B system slots (written by cairn-slot; see README).\n\
             [all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
            boot_partition(self.primary),
            boot_partition(self.tryboot)
        )
    }

    /// After `slot` was written: the next tryboot boot tries it; normal
    /// boots stay on the primary.
    pub fn try_slot(self, slot: Slot) -> Autoboot {
        Autoboot {
            tryboot: slot,
            ..self
        }
    }

    /// `slot` passed its trial: every boot uses it from now on.
    pub fn keep(self, slot: Slot) -> Autoboot {
        Autoboot {
            primary: slot,
            tryboot: slot,
        }
    }

    /// Gives up on `slot`: a tryboot boot no longer reaches it.
    pub fn drop_trial(self, slot: Slot) -> Autoboot {
        if self.tryboot == slot && self.primary != slot {
            Autoboot {
                tryboot: self.primary,
                ..self
            }
        } else {
            self
        }
    }
}

/// What the firmware reports about the running boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    /// This boot used `[tryboot]`.
    pub tryboot: bool,
    /// The partition the boot files came from.
    pub partition: u32,
}

impl Firmware {
    /// From the raw contents of `chosen/bootloader/tryboot` and
    /// `chosen/bootloader/partition`.
    pub fn from_device_tree(tryboot: &[u8], partition: &[u8]) -> Result<Firmware, TrybootError> {
        let number = |bytes: &[u8], what| {
            <[u8; 4]>::try_from(bytes)
                .map(u32::from_be_bytes)
                .map_err(|_| TrybootError::Firmware(what))
        };
        Ok(Firmware {
            tryboot: number(tryboot, "tryboot")? != 0,
            partition: number(partition, "partition")?,
        })
    }

    /// The slot running now.
    pub fn booted(&self) -> Option<Slot> {
        slot_of(self.partition)
    }
}

/// What the firmware makes of `slot`, as RAUC's `get-state` asks: the
/// primary is good; the slot a running tryboot boot came from is on trial;
/// the other is bad (never booted without a tryboot reboot).
pub fn state(autoboot: Autoboot, firmware: Firmware, slot: Slot) -> SlotState {
    if autoboot.primary == slot {
        SlotState::Good
    } else if firmware.tryboot && firmware.booted() == Some(slot) {
        SlotState::Trial { left: 0 }
    } else if autoboot.tryboot == slot {
        SlotState::Trial { left: 1 }
    } else {
        SlotState::Bad
    }
}

/// Which slot the firmware boots after a reboot with or without the
/// tryboot flag: what the tests' fake firmware does.
pub fn next_boot(autoboot: Autoboot, tryboot_flag: bool) -> Firmware {
    let slot = if tryboot_flag {
        autoboot.tryboot
    } else {
        autoboot.primary
    };
    Firmware {
        tryboot: tryboot_flag,
        partition: boot_partition(slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoboot_round_trips_and_a_foreign_one_is_refused() {
        let ab = Autoboot {
            primary: Slot::A,
            tryboot: Slot::B,
        };
        assert_eq!(Autoboot::parse(&ab.render()), Ok(ab));
        assert!(matches!(
            Autoboot::parse("[all]\nboot_partition=2\n"),
            Err(TrybootError::NotAb(_))
        ));
        assert!(matches!(
            Autoboot::parse(
                "[all]\ntryboot_a_b=1\nboot_partition=5\n[tryboot]\nboot_partition=3\n"
            ),
            Err(TrybootError::NotAb(_))
        ));
        assert!(matches!(
            Firmware::from_device_tree(&[0, 0, 1], &[0, 0, 0, 2]),
            Err(TrybootError::Firmware("tryboot"))
        ));
    }

    #[test]
    fn a_tried_slot_is_kept_only_by_the_gate_and_any_other_reboot_returns() {
        let mut ab = Autoboot {
            primary: Slot::A,
            tryboot: Slot::A,
        };
        ab = ab.try_slot(Slot::B);
        let fw = next_boot(ab, true);
        assert_eq!(fw.booted(), Some(Slot::B));
        assert_eq!(state(ab, fw, Slot::B), SlotState::Trial { left: 0 });
        assert_eq!(state(ab, fw, Slot::A), SlotState::Good);
        // The gate never passes: a watchdog reset or a plain reboot is A.
        assert_eq!(next_boot(ab, false).booted(), Some(Slot::A));
        ab = ab.drop_trial(Slot::B);
        assert_eq!(next_boot(ab, true).booted(), Some(Slot::A));
        // Tried again and kept: every boot is B.
        ab = ab.try_slot(Slot::B);
        let fw = next_boot(ab, true);
        ab = ab.keep(fw.booted().unwrap());
        assert_eq!(next_boot(ab, false).booted(), Some(Slot::B));
        assert_eq!(state(ab, next_boot(ab, false), Slot::A), SlotState::Bad);
        assert_eq!(state(ab, next_boot(ab, false), Slot::B), SlotState::Good);
    }
}
