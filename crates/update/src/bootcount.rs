//! systemd-boot's boot counting, as Cairn uses it on amd64.
//!
//! Each slot has one Boot Loader Specification entry on the ESP, named
//! `cairn-<generation>-<slot>[+<left>[-<done>]].conf`. systemd-boot (252)
//! orders entries with no tries left last, then by id (the name without the
//! counter) newest version first, and boots the first: so the slot made
//! primary last (the highest generation) boots while it has tries left, and
//! once they are spent the other slot boots again by itself. At each boot
//! of a counting entry systemd-boot renames it (`+3` becomes `+2-1`);
//! `systemd-bless-boot` drops the counter once `boot-complete.target` is
//! reached, which Cairn's health gate guards.

use crate::{Slot, SlotState};

/// The prefix of every entry Cairn writes; other entries are left alone.
pub const PREFIX: &str = "cairn-";

/// How many times systemd-boot tries a newly written slot before it falls
/// back to the other one.
pub const TRIES: u32 = 3;

/// A boot-counting suffix: tries left and tries done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    /// Boots left before the entry is bad.
    pub left: u32,
    /// Boots already tried.
    pub done: u32,
}

/// One of Cairn's boot loader entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Grows by one each time a slot is made primary: the newest sorts first.
    pub generation: u64,
    /// The slot it boots.
    pub slot: Slot,
    /// The counter, while the slot is on trial (or failed it).
    pub tries: Option<Tries>,
}

impl Entry {
    /// The entry a file in `loader/entries` is, if it is one of Cairn's.
    pub fn parse(file_name: &str) -> Option<Entry> {
        let stem = file_name.strip_suffix(".conf")?.strip_prefix(PREFIX)?;
        let (id, counter) = match stem.split_once('+') {
            Some((id, counter)) => (id, Some(counter)),
            None => (stem, None),
        };
        let (generation, slot) = id.split_once('-')?;
        let generation = number(generation)?;
        let slot = Slot::from_bootname(slot)?;
        let tries = match counter {
            None => None,
            Some(counter) => {
                let (left, done) = match counter.split_once('-') {
                    Some((left, done)) => (left, Some(done)),
                    None => (counter, None),
                };
                Some(Tries {
                    left: u32::try_from(number(left)?).ok()?,
                    done: match done {
                        Some(done) => u32::try_from(number(done)?).ok()?,
                        None => 0,
                    },
                })
            }
        };
        Some(Entry {
            generation,
            slot,
            tries,
        })
    }

    /// The entry's id: its file name without the counter.
    pub fn id(&self) -> String {
        format!("{PREFIX}{}-{}", self.generation, self.slot.bootname())
    }

    /// The entry's file name, counter included.
    pub fn file_name(&self) -> String {
        match self.tries {
            None => format!("{}.conf", self.id()),
            Some(Tries { left, done: 0 }) => format!("{}+{left}.conf", self.id()),
            Some(Tries { left, done }) => format!("{}+{left}-{done}.conf", self.id()),
        }
    }

    /// No tries left: systemd-boot sorts it last and never picks it while
    /// another entry has tries.
    pub fn is_bad(&self) -> bool {
        self.tries.is_some_and(|t| t.left == 0)
    }

    fn state(&self) -> SlotState {
        match self.tries {
            None => SlotState::Good,
            Some(Tries { left: 0, .. }) => SlotState::Bad,
            Some(Tries { left, .. }) => SlotState::Trial { left },
        }
    }
}

/// A decimal number without sign or leading zeros (as written).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A change to the ESP's `loader/entries` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Remove the entry file.
    Remove(String),
    /// Rename an entry file (FAT renames within a directory in place).
    Rename {
        /// The current name.
        from: String,
        /// The new name.
        to: String,
    },
    /// Write a new entry file with this text.
    Write {
        /// Its name.
        name: String,
        /// Its contents.
        body: String,
    },
}

/// Cairn's entries on the ESP, in the order systemd-boot boots them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(Vec<Entry>);

impl Entries {
    /// The entries among these file names (others are ignored), sorted the
    /// way systemd-boot sorts them.
    pub fn from_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Entries {
        let mut entries: Vec<Entry> = names
            .into_iter()
            .filter_map(|name| Entry::parse(name.as_ref()))
            .collect();
        // Bad last; then newest generation first (the ids differ only in
        // generation and slot, and a version comparison of the ids orders
        // by generation); then more tries left first.
        entries.sort_by(|a, b| {
            a.is_bad()
                .cmp(&b.is_bad())
                .then(b.generation.cmp(&a.generation))
                .then(b.slot.cmp(&a.slot))
                .then(
                    b.tries
                        .map_or(u32::MAX, |t| t.left)
                        .cmp(&a.tries.map_or(u32::MAX, |t| t.left)),
                )
        });
        Entries(entries)
    }

    /// The entries, first to boot first.
    pub fn boot_order(&self) -> &[Entry] {
        &self.0
    }

    /// The slot systemd-boot boots next: the first entry that is not bad.
    pub fn primary(&self) -> Option<Slot> {
        self.0.iter().find(|e| !e.is_bad()).map(|e| e.slot)
    }

    /// The slot's newest entry.
    fn newest(&self, slot: Slot) -> Option<&Entry> {
        self.0
            .iter()
            .filter(|e| e.slot == slot)
            .max_by_key(|e| e.generation)
    }

    /// What the boot loader makes of `slot`.
    pub fn state(&self, slot: Slot) -> SlotState {
        self.newest(slot).map_or(SlotState::Absent, Entry::state)
    }

    /// Makes `slot` the one booted next, on trial for `tries` boots: its old
    /// entries go and a new one with the highest generation is written.
    /// `body` is the entry's text (see [`entry_body`]).
    pub fn set_primary(&self, slot: Slot, tries: u32, body: &str) -> Vec<Op> {
        let generation = self.0.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
        let mut ops: Vec<Op> = self
            .0
            .iter()
            .filter(|e| e.slot == slot)
            .map(|e| Op::Remove(e.file_name()))
            .collect();
        ops.push(Op::Write {
            name: Entry {
                generation,
                slot,
                tries: Some(Tries {
                    left: tries.max(1),
                    done: 0,
                }),
            }
            .file_name(),
            body: body.to_owned(),
        });
        ops
    }

    /// Keeps `slot`: its newest entry loses its counter (what
    /// `systemd-bless-boot good` does).
    pub fn set_good(&self, slot: Slot) -> Vec<Op> {
        match self.newest(slot) {
            Some(entry) if entry.tries.is_some() => vec![Op::Rename {
                from: entry.file_name(),
                to: Entry {
                    tries: None,
                    ..*entry
                }
                .file_name(),
            }],
            _ => Vec::new(),
        }
    }

    /// Gives up on `slot`: its entries keep their names but have no tries
    /// left, so systemd-boot never picks them (and what happened stays
    /// visible) until the slot is made primary again.
    pub fn set_bad(&self, slot: Slot) -> Vec<Op> {
        self.0
            .iter()
            .filter(|e| e.slot == slot && !e.is_bad())
            .map(|e| Op::Rename {
                from: e.file_name(),
                to: Entry {
                    tries: Some(Tries {
                        left: 0,
                        done: e.tries.map_or(0, |t| t.done),
                    }),
                    ..*e
                }
                .file_name(),
            })
            .collect()
    }
}

/// The text of a slot's entry: its kernel and initrd in its own directory
/// on the ESP, its root by partition label, and `rauc.slot=` so that RAUC
/// and the health gate know which slot runs.
pub fn entry_body(slot: Slot, version: &str, options: &str) -> String {
    let dir = kernel_dir(slot);
    format!(
        "title   Cairn {version} (slot {slot})\n\
         version {version}\n\
         linux   /{dir}/vmlinuz\n\
         initrd  /{dir}/initrd.img\n\
         options root=PARTLABEL={root} ro rootwait rauc.slot={name} {options}\n",
        root = slot.root_label(),
        name = slot.bootname(),
        options = options.trim(),
    )
}

/// The ESP directory that holds a slot's kernel and initrd.
pub fn kernel_dir(slot: Slot) -> String {
    format!("cairn-{}", slot.bootname())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(names: &mut Vec<String>, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Remove(name) => names.retain(|n| n != name),
                Op::Rename { from, to } => {
                    let at = names
                        .iter()
                        .position(|n| n == from)
                        .expect("renamed entry exists");
                    names[at] = to.clone();
                }
                Op::Write { name, .. } => names.push(name.clone()),
            }
        }
    }

    fn change(names: &mut Vec<String>, what: impl Fn(&Entries) -> Vec<Op>) {
        let ops = what(&Entries::from_names(names.iter()));
        apply(names, &ops);
    }

    /// What systemd-boot does to the entry it boots: one try spent.
    fn boot(names: &mut [String]) -> Option<Slot> {
        let entries = Entries::from_names(names.iter());
        let first = *entries.boot_order().first()?;
        if let Some(t) = first.tries
            && t.left > 0
        {
            let spent = Entry {
                tries: Some(Tries {
                    left: t.left - 1,
                    done: t.done + 1,
                }),
                ..first
            };
            let at = names.iter().position(|n| *n == first.file_name())?;
            names[at] = spent.file_name();
        }
        Some(first.slot)
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        for name in [
            "cairn-1-a.conf",
            "cairn-7-b+3.conf",
            "cairn-7-b+2-1.conf",
            "cairn-12-a+0-3.conf",
        ] {
            assert_eq!(Entry::parse(name).unwrap().file_name(), name);
        }
        for name in [
            "debian.conf",
            "cairn-1-c.conf",
            "cairn-x-a.conf",
            "cairn-1-a+.conf",
            "cairn-1-a+1-.conf",
            "cairn-1-a",
            "cairn--a.conf",
        ] {
            assert_eq!(Entry::parse(name), None, "{name}");
        }
        assert_eq!(Entry::parse("cairn-7-b+3.conf").unwrap().id(), "cairn-7-b");
    }

    #[test]
    fn an_update_is_tried_kept_once_blessed_and_a_failed_one_falls_back_by_itself() {
        let mut names = vec!["cairn-1-a.conf".to_string()];
        let entries = Entries::from_names(&names);
        assert_eq!(entries.primary(), Some(Slot::A));
        assert_eq!(entries.state(Slot::A), SlotState::Good);
        assert_eq!(entries.state(Slot::B), SlotState::Absent);

        // RAUC marks the target bad before writing it, then primary.
        change(&mut names, |e| e.set_bad(Slot::B));
        change(&mut names, |e| e.set_primary(Slot::B, TRIES, "body"));
        assert_eq!(names, ["cairn-1-a.conf", "cairn-2-b+3.conf"]);
        assert_eq!(boot(&mut names), Some(Slot::B));
        assert_eq!(
            Entries::from_names(&names).state(Slot::B),
            SlotState::Trial { left: 2 }
        );
        // Blessed: B boots from now on, without counting.
        change(&mut names, |e| e.set_good(Slot::B));
        assert_eq!(names, ["cairn-1-a.conf", "cairn-2-b.conf"]);
        for _ in 0..5 {
            assert_eq!(boot(&mut names), Some(Slot::B));
        }

        // The next update goes to A and never passes: three tries, then B.
        change(&mut names, |e| e.set_bad(Slot::A));
        assert_eq!(
            Entries::from_names(&names).primary(),
            Some(Slot::B),
            "marking the target bad leaves the running slot primary"
        );
        change(&mut names, |e| e.set_primary(Slot::A, TRIES, "body"));
        for _ in 0..TRIES {
            assert_eq!(boot(&mut names), Some(Slot::A));
        }
        assert_eq!(boot(&mut names), Some(Slot::B));
        assert_eq!(Entries::from_names(&names).state(Slot::A), SlotState::Bad);
        assert!(names.contains(&"cairn-3-a+0-3.conf".to_string()));

        // A health gate that gives up at once makes the fall-back immediate.
        change(&mut names, |e| e.set_primary(Slot::A, TRIES, "body"));
        assert_eq!(boot(&mut names), Some(Slot::A));
        change(&mut names, |e| e.set_bad(Slot::A));
        assert_eq!(boot(&mut names), Some(Slot::B));
    }

    #[test]
    fn the_entry_names_its_slot_kernel_root_and_bootname() {
        let body = entry_body(Slot::B, "2.0.0", " console=ttyS0,115200 quiet ");
        assert!(body.contains("linux   /cairn-b/vmlinuz\n"));
        assert!(body.contains("initrd  /cairn-b/initrd.img\n"));
        assert!(body.contains(
            "root=PARTLABEL=root-b ro rootwait rauc.slot=b console=ttyS0,115200 quiet\n"
        ));
        assert_eq!(Slot::booted(body.lines().last().unwrap()), Some(Slot::B));
    }

    proptest! {
        /// Whatever the history of updates, trials and failures, a slot
        /// that is good (kept) is never left behind a bad one, and the
        /// primary always has an entry that boots.
        #[test]
        fn a_good_slot_always_boots_when_the_other_has_failed(
            steps in proptest::collection::vec((any::<bool>(), 0u8..4), 1..40)
        ) {
            let mut names = vec!["cairn-1-a.conf".to_string()];
            for (to_b, action) in steps {
                let slot = if to_b { Slot::B } else { Slot::A };
                let entries = Entries::from_names(&names);
                let ops = match action {
                    0 => entries.set_primary(slot, TRIES, "body"),
                    1 => entries.set_good(slot),
                    2 => entries.set_bad(slot),
                    _ => { boot(&mut names); Vec::new() }
                };
                apply(&mut names, &ops);
                let entries = Entries::from_names(&names);
                let good: Vec<Slot> = Slot::ALL.into_iter()
                    .filter(|s| entries.state(*s) == SlotState::Good).collect();
                if let Some(primary) = entries.primary() {
                    prop_assert_ne!(entries.state(primary), SlotState::Bad);
                } else {
                    prop_assert!(good.is_empty());
                }
                if good.len() == 1 && Slot::ALL.iter().any(|s| entries.state(*s) == SlotState::Bad) {
                    prop_assert_eq!(entries.primary(), Some(good[0]));
                }
            }
        }
    }
}
