//! The front panel: the button's gestures turned into what the box does
//! (identify, pairing window, confirming a claim, factory reset) and the
//! one LED pattern to show for the node's state and those overlays. Plain
//! code fed with time.

use std::time::Duration;

use crate::button::{Button, ButtonEvent, ButtonTiming};
use crate::health::NodeState;
use crate::led::{LedPattern, LedPlayer};

/// How long the panel's overlays last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanelTiming {
    /// The button's gestures.
    pub button: ButtonTiming,
    /// How long identify flickers after a short press.
    pub identify: Duration,
    /// How long the pairing window stays open.
    pub pairing: Duration,
}

impl Default for PanelTiming {
    fn default() -> Self {
        Self {
            button: ButtonTiming::default(),
            identify: Duration::from_secs(10),
            pairing: Duration::from_secs(5 * 60),
        }
    }
}

/// What the daemon must do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelAction {
    /// A short press: log the node's state (the LED flickers meanwhile).
    Identify,
    /// A short press while a claim waits: the person at the box confirms it.
    ClaimConfirmed,
    /// The pairing window opened; it closes by itself after this long.
    PairingOpened(Duration),
    /// The pairing window closed without a claim.
    PairingExpired,
    /// A factory reset is armed; a short press confirms it.
    ResetArmed,
    /// The armed reset was not confirmed.
    ResetCancelled,
    /// Reset identity and ownership now.
    FactoryReset,
    /// A press that is no gesture (between a short press and a hold).
    Unrecognised,
}

/// The panel's state.
#[derive(Debug, Clone)]
pub struct FrontPanel {
    timing: PanelTiming,
    button: Button,
    led: LedPlayer,
    identify_until: Option<Duration>,
    pairing_until: Option<Duration>,
    claim_pending: bool,
}

impl FrontPanel {
    /// A panel at `now`, showing the booting pattern.
    pub fn new(timing: PanelTiming, now: Duration) -> Self {
        Self {
            timing,
            button: Button::new(timing.button, now),
            led: LedPlayer::new(LedPattern::Booting, now),
            identify_until: None,
            pairing_until: None,
            claim_pending: false,
        }
    }

    /// One step at `now`: the button's raw level if there is a button, and
    /// the node's state. Returns an action for the daemon, if any; the LED
    /// level to show is then [`FrontPanel::led_level`].
    pub fn step(
        &mut self,
        now: Duration,
        button_pressed: Option<bool>,
        state: NodeState,
    ) -> Option<PanelAction> {
        let action = button_pressed
            .and_then(|pressed| self.button.sample(now, pressed))
            .and_then(|event| self.on_button(event, now));
        let action = action.or_else(|| self.expire(now));
        let pattern = self.pattern(now, state);
        self.led.show(pattern, now);
        action
    }

    /// Brightness to show at `now` (percent).
    pub fn led_level(&self, now: Duration) -> u8 {
        self.led.level(now)
    }

    /// The pattern showing.
    pub fn led_pattern(&self) -> LedPattern {
        self.led.pattern()
    }

    /// Whether a new owner may claim the box at `now`.
    pub fn pairing_open(&self, now: Duration) -> bool {
        self.pairing_until.is_some_and(|until| now < until)
    }

    /// Opens the pairing window as the hold gesture does (for a test rig or
    /// a board without a button, where the owner has other proof of presence).
    pub fn open_pairing(&mut self, now: Duration) -> Duration {
        let until = now + self.timing.pairing;
        self.pairing_until = Some(until);
        until
    }

    /// Closes the pairing window (after a successful claim).
    pub fn close_pairing(&mut self) {
        self.pairing_until = None;
        self.claim_pending = false;
    }

    /// Whether a claim arrived and waits for a press to confirm it (the
    /// daemon says so; the next short press confirms instead of identifying).
    pub fn set_claim_pending(&mut self, pending: bool) {
        self.claim_pending = pending;
    }

    /// The next time the panel needs a step without a change of input: a
    /// pattern edge, a button deadline or an overlay ending.
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        [
            self.led.next_change(now),
            self.button.next_deadline(),
            self.identify_until,
            self.pairing_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_button(&mut self, event: ButtonEvent, now: Duration) -> Option<PanelAction> {
        match event {
            ButtonEvent::Identify if self.claim_pending => {
                self.claim_pending = false;
                Some(PanelAction::ClaimConfirmed)
            }
            ButtonEvent::Identify => {
                self.identify_until = Some(now + self.timing.identify);
                Some(PanelAction::Identify)
            }
            ButtonEvent::OpenPairing => {
                self.claim_pending = false;
                self.open_pairing(now);
                Some(PanelAction::PairingOpened(self.timing.pairing))
            }
            ButtonEvent::ResetArmed => Some(PanelAction::ResetArmed),
            ButtonEvent::ResetCancelled => Some(PanelAction::ResetCancelled),
            ButtonEvent::FactoryReset => {
                self.pairing_until = None;
                self.identify_until = None;
                Some(PanelAction::FactoryReset)
            }
            ButtonEvent::Unrecognised => Some(PanelAction::Unrecognised),
            ButtonEvent::PairingHoldReached | ButtonEvent::ResetHoldReached => None,
        }
    }

    fn expire(&mut self, now: Duration) -> Option<PanelAction> {
        if self.identify_until.is_some_and(|until| now >= until) {
            self.identify_until = None;
        }
        if self.pairing_until.is_some_and(|until| now >= until) {
            self.pairing_until = None;
            self.claim_pending = false;
            return Some(PanelAction::PairingExpired);
        }
        None
    }

    /// Overlays first: what the person is doing with the button matters
    /// more, for these seconds, than the state they can see any time.
    fn pattern(&self, now: Duration, state: NodeState) -> LedPattern {
        if self.button.reset_armed() {
            return LedPattern::ResetArmed;
        }
        if self.button.is_pressed() {
            let held = self.button.held(now);
            if held >= self.timing.button.reset_hold {
                return LedPattern::ResetArmed;
            }
            if held >= self.timing.button.pairing_hold {
                return LedPattern::Pairing;
            }
        }
        if self.claim_pending && self.pairing_open(now) {
            return LedPattern::ClaimPending;
        }
        if self.identify_until.is_some() {
            return LedPattern::Identify;
        }
        if self.pairing_open(now) {
            return LedPattern::Pairing;
        }
        match state {
            NodeState::Booting => LedPattern::Booting,
            NodeState::Healthy => LedPattern::Healthy,
            NodeState::Degraded => LedPattern::Degraded,
            NodeState::Repairing => LedPattern::Repairing,
            NodeState::Error => LedPattern::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rig {
        panel: FrontPanel,
        now: Duration,
        actions: Vec<PanelAction>,
        patterns: Vec<LedPattern>,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                panel: FrontPanel::new(PanelTiming::default(), Duration::ZERO),
                now: Duration::ZERO,
                actions: Vec::new(),
                patterns: Vec::new(),
            }
        }

        fn run(&mut self, pressed: bool, millis: u64, state: NodeState) -> &mut Self {
            let end = self.now + Duration::from_millis(millis);
            while self.now < end {
                if let Some(action) = self.panel.step(self.now, Some(pressed), state) {
                    self.actions.push(action);
                }
                let pattern = self.panel.led_pattern();
                if self.patterns.last() != Some(&pattern) {
                    self.patterns.push(pattern);
                }
                self.now += Duration::from_millis(10);
            }
            self
        }
    }

    use LedPattern as L;
    use NodeState::*;

    #[test]
    fn the_led_follows_the_node_state() {
        let mut rig = Rig::new();
        rig.run(false, 100, Booting)
            .run(false, 100, Healthy)
            .run(false, 100, Degraded)
            .run(false, 100, Repairing)
            .run(false, 100, Error);
        assert_eq!(
            rig.patterns,
            vec![L::Booting, L::Healthy, L::Degraded, L::Repairing, L::Error]
        );
        assert!(rig.actions.is_empty());
    }

    #[test]
    fn a_short_press_identifies_for_ten_seconds() {
        let mut rig = Rig::new();
        rig.run(false, 100, Healthy).run(true, 200, Healthy);
        rig.run(false, 9_000, Healthy);
        assert_eq!(rig.actions, vec![PanelAction::Identify]);
        assert_eq!(rig.panel.led_pattern(), L::Identify);
        rig.run(false, 2_000, Healthy);
        assert_eq!(rig.patterns, vec![L::Healthy, L::Identify, L::Healthy]);
    }

    /// A claim arrives while the window is open: the LED says so, and the
    /// next short press confirms it instead of identifying; a new hold
    /// throws the waiting claim away.
    #[test]
    fn a_waiting_claim_shows_and_a_short_press_confirms_it() {
        let mut rig = Rig::new();
        rig.run(false, 100, Healthy).run(true, 6_000, Healthy);
        rig.run(false, 100, Healthy);
        rig.panel.set_claim_pending(true);
        rig.run(false, 1_000, Healthy);
        assert_eq!(rig.panel.led_pattern(), L::ClaimPending);
        rig.run(true, 200, Healthy).run(false, 100, Healthy);
        assert_eq!(rig.actions.last(), Some(&PanelAction::ClaimConfirmed));
        assert_ne!(rig.panel.led_pattern(), L::Identify);
        // Pending again; a 5 s hold starts over: no confirmation comes of it.
        rig.panel.set_claim_pending(true);
        rig.run(true, 6_000, Healthy).run(false, 100, Healthy);
        assert!(matches!(
            rig.actions.last(),
            Some(PanelAction::PairingOpened(_))
        ));
        rig.run(true, 200, Healthy).run(false, 100, Healthy);
        assert_eq!(rig.actions.last(), Some(&PanelAction::Identify));
        assert_eq!(
            rig.actions
                .iter()
                .filter(|a| **a == PanelAction::ClaimConfirmed)
                .count(),
            1
        );
    }

    #[test]
    fn holding_shows_when_to_let_go_and_pairing_closes_by_itself() {
        let mut rig = Rig::new();
        rig.run(false, 100, Healthy).run(true, 6_000, Healthy);
        assert_eq!(rig.panel.led_pattern(), L::Pairing, "held past 5 s");
        rig.run(false, 100, Healthy);
        assert_eq!(
            rig.actions,
            vec![PanelAction::PairingOpened(Duration::from_secs(300))]
        );
        assert!(rig.panel.pairing_open(rig.now));
        rig.run(false, 299_000, Healthy);
        assert!(rig.panel.pairing_open(rig.now));
        rig.run(false, 1_000, Healthy);
        assert!(!rig.panel.pairing_open(rig.now));
        assert_eq!(rig.actions.last(), Some(&PanelAction::PairingExpired));
        assert_eq!(rig.panel.led_pattern(), L::Healthy);
    }

    #[test]
    fn a_claim_closes_the_window() {
        let mut rig = Rig::new();
        rig.run(true, 5_500, Healthy).run(false, 100, Healthy);
        assert!(rig.panel.pairing_open(rig.now));
        rig.panel.close_pairing();
        rig.run(false, 100, Healthy);
        assert!(!rig.panel.pairing_open(rig.now));
        assert_eq!(rig.panel.led_pattern(), L::Healthy);
    }

    #[test]
    fn factory_reset_needs_the_long_hold_and_a_confirming_press() {
        let mut rig = Rig::new();
        rig.run(true, 16_000, Healthy);
        assert_eq!(rig.panel.led_pattern(), L::ResetArmed, "held past 15 s");
        rig.run(false, 1_000, Healthy);
        assert_eq!(rig.actions, vec![PanelAction::ResetArmed]);
        assert_eq!(rig.panel.led_pattern(), L::ResetArmed);
        rig.run(true, 200, Healthy).run(false, 100, Healthy);
        assert_eq!(
            rig.actions,
            vec![PanelAction::ResetArmed, PanelAction::FactoryReset]
        );
    }

    #[test]
    fn without_a_button_the_panel_still_shows_the_state() {
        let mut panel = FrontPanel::new(PanelTiming::default(), Duration::ZERO);
        assert_eq!(panel.step(Duration::from_secs(1), None, Degraded), None);
        assert_eq!(panel.led_pattern(), L::Degraded);
        assert_eq!(
            panel.next_deadline(Duration::from_secs(1)),
            Some(Duration::from_millis(1_200))
        );
    }
}
