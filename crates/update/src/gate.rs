//! The health gate: a newly written slot is kept only if the box comes up
//! on it, and what a boot means after an update was installed.

use std::time::Duration;

use crate::Slot;
use crate::state::Pending;

/// How long a slot on trial has to become healthy, by default: a Pi's USB
/// disks can take a minute to spin up and be checked.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(180);

/// A cairnd that failed to start this many times will not start.
pub const RESTARTS_GIVEN_UP: u32 = 3;

/// What systemd says of `cairnd.service`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Daemon {
    /// `ActiveState`: `active` once cairnd reported ready.
    pub active_state: String,
    /// `NRestarts`: how often systemd restarted it after a failure.
    pub restarts: u32,
    /// Disks online and known, from cairnd's status line
    /// (`…, 2/2 disks online, …`).
    pub disks: Option<(usize, usize)>,
}

impl Daemon {
    /// Reads the disks from cairnd's status line.
    pub fn disks_from_status(status: &str) -> Option<(usize, usize)> {
        let words: Vec<&str> = status.split([',', ' ']).collect();
        words.windows(3).find_map(|w| {
            let (online, known) = w[0].split_once('/')?;
            (w[1] == "disks" && w[2] == "online").then_some(())?;
            Some((online.parse().ok()?, known.parse().ok()?))
        })
    }
}

/// The gate's verdict on the slot being tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not yet: look again soon.
    Wait,
    /// cairnd is ready and its disks are online: keep the slot.
    Pass,
    /// Give up on the slot, for this reason.
    Fail(String),
}

/// Judges a slot on trial `elapsed` after boot: it passes once cairnd is
/// ready with at least as many disks online as before the update; it fails
/// when cairnd gave up starting, or when `within` has passed.
pub fn judge(daemon: &Daemon, disks_before: usize, elapsed: Duration, within: Duration) -> Verdict {
    let online = daemon.disks.map_or(0, |(online, _)| online);
    if daemon.active_state == "active" && online >= disks_before {
        return Verdict::Pass;
    }
    if daemon.restarts >= RESTARTS_GIVEN_UP || daemon.active_state == "failed" {
        return Verdict::Fail(format!(
            "cairnd failed to start ({} restarts)",
            daemon.restarts
        ));
    }
    if elapsed >= within {
        return Verdict::Fail(if daemon.active_state == "active" {
            format!(
                "only {online} of the {disks_before} data disks online before the update came online within {} s",
                within.as_secs()
            )
        } else {
            format!("cairnd was not ready within {} s", within.as_secs())
        });
    }
    Verdict::Wait
}

/// What this boot is, for the update that was being installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// No update pending: an ordinary boot.
    Ordinary,
    /// The first boots of a newly installed slot: judge it.
    Trial,
    /// The update was installed, but the box is back on the slot it was
    /// updated from: the new slot failed (its gate, or the boot loader ran
    /// out of tries).
    RolledBack,
    /// Writing the update did not finish (power cut, crash): the slot was
    /// never made bootable and the box runs the old one.
    Interrupted,
}

/// Classifies the running boot from the pending update (if any) and the
/// slot that booted.
pub fn boot(pending: Option<&Pending>, booted: Slot) -> Boot {
    match pending {
        None => Boot::Ordinary,
        Some(p) if booted != p.from_slot => Boot::Trial,
        Some(p) if p.installed => Boot::RolledBack,
        Some(_) => Boot::Interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(state: &str, restarts: u32, disks: Option<(usize, usize)>) -> Daemon {
        Daemon {
            active_state: state.into(),
            restarts,
            disks,
        }
    }

    #[test]
    fn the_status_line_gives_the_disks() {
        assert_eq!(
            Daemon::disks_from_status("healthy, 7 shards, 1.2 GiB free, 2/3 disks online, 4 peers"),
            Some((2, 3))
        );
        assert_eq!(Daemon::disks_from_status("stopping"), None);
    }

    #[test]
    fn the_gate_passes_a_ready_box_with_its_disks_and_fails_a_dead_or_slow_one() {
        let within = DEFAULT_WITHIN;
        let early = Duration::from_secs(10);
        assert_eq!(
            judge(&daemon("active", 0, Some((1, 1))), 1, early, within),
            Verdict::Pass
        );
        assert_eq!(
            judge(&daemon("activating", 1, None), 1, early, within),
            Verdict::Wait
        );
        // Ready, but a disk not back yet: wait, then fail.
        let short = daemon("active", 0, Some((1, 2)));
        assert_eq!(judge(&short, 2, early, within), Verdict::Wait);
        let Verdict::Fail(why) = judge(&short, 2, within, within) else {
            panic!("a box without its disks passed");
        };
        assert!(why.contains("only 1 of the 2"), "{why}");
        // A cairnd that keeps crashing fails at once.
        assert!(matches!(
            judge(&daemon("activating", 3, None), 1, early, within),
            Verdict::Fail(why) if why.contains("failed to start")
        ));
        assert!(matches!(
            judge(&daemon("activating", 0, None), 0, within, within),
            Verdict::Fail(why) if why.contains("not ready within 180 s")
        ));
        // A box that had no data disk passes with none.
        assert_eq!(
            judge(&daemon("active", 0, Some((0, 0))), 0, early, within),
            Verdict::Pass
        );
    }

    #[test]
    fn a_boot_is_a_trial_a_rollback_or_an_interrupted_install() {
        let mut pending = Pending {
            format: 1,
            version: "2.0".into(),
            from_version: "1.0".into(),
            from_slot: Slot::A,
            disks_online: 1,
            installed: false,
            failure: None,
        };
        assert_eq!(boot(None, Slot::A), Boot::Ordinary);
        assert_eq!(boot(Some(&pending), Slot::A), Boot::Interrupted);
        pending.installed = true;
        assert_eq!(boot(Some(&pending), Slot::B), Boot::Trial);
        assert_eq!(boot(Some(&pending), Slot::A), Boot::RolledBack);
    }
}
