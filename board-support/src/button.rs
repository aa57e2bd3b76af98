//! The button: debouncing and gestures, as a state machine fed with the
//! pin's level and the time. It never sleeps and reads no clock, so every
//! gesture and every kind of contact bounce is tested with simulated time.
//!
//! Gestures (durations are [`ButtonTiming`]'s defaults):
//! - a short press (under 1.5 s): identify;
//! - a hold of 5 s (released before 15 s): open the pairing window;
//! - a hold of 15 s arms a factory reset, which a short press within 10 s
//!   confirms; anything else, or nothing, cancels it.
//!
//! While the button is held, the machine reports when a hold becomes long
//! enough for pairing and then for reset, so the LED can tell the person
//! when to let go.

use std::time::Duration;

use embedded_hal::digital::InputPin;

use crate::BoardError;

/// The durations that define the gestures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonTiming {
    /// A level must hold this long to count (contact bounce is shorter).
    pub debounce: Duration,
    /// A press shorter than this is a short press.
    pub short_max: Duration,
    /// A hold at least this long (and shorter than `reset_hold`) opens pairing.
    pub pairing_hold: Duration,
    /// A hold at least this long arms the factory reset.
    pub reset_hold: Duration,
    /// How long an armed reset waits for its confirming short press.
    pub confirm_window: Duration,
}

impl Default for ButtonTiming {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(30),
            short_max: Duration::from_millis(1500),
            pairing_hold: Duration::from_secs(5),
            reset_hold: Duration::from_secs(15),
            confirm_window: Duration::from_secs(10),
        }
    }
}

/// What the button means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// A short press: identify the box and show its state.
    Identify,
    /// Still held, and now long enough to open pairing if released.
    PairingHoldReached,
    /// Released after a pairing hold: open the pairing window.
    OpenPairing,
    /// Still held, and now long enough to arm the factory reset.
    ResetHoldReached,
    /// Released after a reset hold: waiting for the confirming short press.
    ResetArmed,
    /// The armed reset was confirmed: reset identity and ownership.
    FactoryReset,
    /// The armed reset was not confirmed in time, or another gesture came.
    ResetCancelled,
    /// A press too long for a short press and too short for a hold: ignored,
    /// but reported so the daemon can say so.
    Unrecognised,
}

/// The gesture recogniser.
#[derive(Debug, Clone)]
pub struct Button {
    timing: ButtonTiming,
    /// The raw level last seen and since when.
    raw: bool,
    raw_since: Duration,
    /// The debounced level.
    pressed: bool,
    /// When the current press began (its first raw edge).
    press_began: Duration,
    /// Hold thresholds already reported for the current press.
    reported: Reported,
    /// An armed reset expires at this time.
    armed_until: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reported {
    Nothing,
    PairingHold,
    ResetHold,
}

impl Button {
    /// A released button at `now`.
    pub fn new(timing: ButtonTiming, now: Duration) -> Self {
        Self {
            timing,
            raw: false,
            raw_since: now,
            pressed: false,
            press_began: now,
            reported: Reported::Nothing,
            armed_until: None,
        }
    }

    /// Whether the debounced button is down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// How long the button has been down (zero when it is up).
    pub fn held(&self, now: Duration) -> Duration {
        if self.pressed {
            now.saturating_sub(self.press_began)
        } else {
            Duration::ZERO
        }
    }

    /// Whether a factory reset is armed and waiting for confirmation.
    pub fn reset_armed(&self) -> bool {
        self.armed_until.is_some()
    }

    /// Feeds the pin's level (`true` = pressed) at `now`; `now` never goes
    /// back. Call it at least every few milliseconds while anything is
    /// pending ([`Button::next_deadline`]); at most one event comes out per call.
    pub fn sample(&mut self, now: Duration, pressed: bool) -> Option<ButtonEvent> {
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now;
        }
        let settled = now.saturating_sub(self.raw_since) >= self.timing.debounce;
        if settled && self.raw != self.pressed {
            self.pressed = self.raw;
            return if self.pressed {
                self.press_began = self.raw_since;
                self.reported = Reported::Nothing;
                None
            } else {
                self.released(self.raw_since - self.press_began, now)
            };
        }
        if self.pressed {
            let held = now.saturating_sub(self.press_began);
            if held >= self.timing.reset_hold && self.reported < Reported::ResetHold {
                self.reported = Reported::ResetHold;
                return Some(ButtonEvent::ResetHoldReached);
            }
            if held >= self.timing.pairing_hold && self.reported < Reported::PairingHold {
                self.reported = Reported::PairingHold;
                return Some(ButtonEvent::PairingHoldReached);
            }
        } else if let Some(until) = self.armed_until
            && now >= until
        {
            self.armed_until = None;
            return Some(ButtonEvent::ResetCancelled);
        }
        None
    }

    /// The next time something happens without a change of level (a hold
    /// threshold, the end of the confirm window, a debounce settling), so a
    /// caller may poll slowly while nothing is pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.raw != self.pressed {
            return Some(self.raw_since + self.timing.debounce);
        }
        if self.pressed {
            return match self.reported {
                Reported::Nothing => Some(self.press_began + self.timing.pairing_hold),
                Reported::PairingHold => Some(self.press_began + self.timing.reset_hold),
                Reported::ResetHold => None,
            };
        }
        self.armed_until
    }

    fn released(&mut self, held: Duration, now: Duration) -> Option<ButtonEvent> {
        let timing = self.timing;
        let armed = self.armed_until.take().is_some_and(|until| now < until);
        if held < timing.short_max {
            return Some(if armed {
                ButtonEvent::FactoryReset
            } else {
                ButtonEvent::Identify
            });
        }
        if armed {
            return Some(ButtonEvent::ResetCancelled);
        }
        if held >= timing.reset_hold {
            self.armed_until = Some(now + timing.confirm_window);
            Some(ButtonEvent::ResetArmed)
        } else if held >= timing.pairing_hold {
            Some(ButtonEvent::OpenPairing)
        } else {
            Some(ButtonEvent::Unrecognised)
        }
    }
}

/// Something that says whether the button is pressed.
pub trait ButtonInput: Send {
    /// The raw (not debounced) level: `true` while pressed.
    fn is_pressed(&mut self) -> Result<bool, BoardError>;
}

/// A button on an `embedded-hal` input pin. Most boards wire a button to
/// ground with a pull-up, so pressed reads low: say so with `active_low`.
#[derive(Debug)]
pub struct ButtonPin<P> {
    pin: P,
    active_low: bool,
}

impl<P: InputPin> ButtonPin<P> {
    /// Wraps a pin.
    pub fn new(pin: P, active_low: bool) -> Self {
        Self { pin, active_low }
    }

    /// The pin, back.
    pub fn release(self) -> P {
        self.pin
    }
}

impl<P: InputPin + Send> ButtonInput for ButtonPin<P> {
    fn is_pressed(&mut self) -> Result<bool, BoardError> {
        let high = self
            .pin
            .is_high()
            .map_err(|e| BoardError::pin("button", e))?;
        Ok(high != self.active_low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK: u64 = 5;

    /// Drives a button with a level per time span, sampling every 5 ms, and
    /// collects every event with its time.
    struct Rig {
        button: Button,
        now: u64,
        events: Vec<(u64, ButtonEvent)>,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                button: Button::new(ButtonTiming::default(), Duration::ZERO),
                now: 0,
                events: Vec::new(),
            }
        }

        fn hold(&mut self, pressed: bool, millis: u64) -> &mut Self {
            let end = self.now + millis;
            while self.now < end {
                if let Some(event) = self.button.sample(Duration::from_millis(self.now), pressed) {
                    self.events.push((self.now, event));
                }
                self.now += TICK;
            }
            self
        }

        fn press(&mut self, millis: u64) -> &mut Self {
            self.hold(true, millis).hold(false, 200)
        }

        /// Contact bounce: `n` flips of 1–2 ticks each.
        fn bounce(&mut self, n: usize) -> &mut Self {
            for i in 0..n {
                self.hold(i % 2 == 0, TICK * (1 + (i as u64 % 2)));
            }
            self
        }

        fn kinds(&self) -> Vec<ButtonEvent> {
            self.events.iter().map(|(_, e)| *e).collect()
        }
    }

    use ButtonEvent::*;

    #[test]
    fn a_short_press_identifies() {
        let mut rig = Rig::new();
        rig.press(200);
        assert_eq!(rig.kinds(), vec![Identify]);
        // Reported when the release has settled, not before.
        let (at, _) = rig.events[0];
        assert!((230..=240).contains(&at), "{at}");
    }

    #[test]
    fn a_five_second_hold_opens_pairing_and_says_when_to_let_go() {
        let mut rig = Rig::new();
        rig.press(7_000);
        assert_eq!(rig.kinds(), vec![PairingHoldReached, OpenPairing]);
        assert_eq!(rig.events[0].0, 5_000);
    }

    #[test]
    fn a_fifteen_second_hold_then_a_short_press_resets() {
        let mut rig = Rig::new();
        rig.press(16_000);
        assert_eq!(
            rig.kinds(),
            vec![PairingHoldReached, ResetHoldReached, ResetArmed]
        );
        assert!(rig.button.reset_armed());
        rig.hold(false, 2_000).press(300);
        assert_eq!(rig.kinds().last(), Some(&FactoryReset));
        assert!(!rig.button.reset_armed());
    }

    #[test]
    fn an_unconfirmed_reset_is_cancelled_after_the_window() {
        let mut rig = Rig::new();
        rig.press(15_500);
        let armed_at = rig.events.last().unwrap().0;
        rig.hold(false, 10_500);
        let (at, event) = *rig.events.last().unwrap();
        assert_eq!(event, ResetCancelled);
        assert_eq!(at - armed_at, 10_000);
        // A later short press is only an identify.
        rig.press(100);
        assert_eq!(rig.kinds().last(), Some(&Identify));
    }

    #[test]
    fn a_long_press_instead_of_the_confirmation_cancels() {
        let mut rig = Rig::new();
        rig.press(15_500).press(6_000);
        assert_eq!(rig.kinds().last(), Some(&ResetCancelled));
        assert!(!rig.button.reset_armed());
    }

    #[test]
    fn an_in_between_press_is_unrecognised() {
        let mut rig = Rig::new();
        rig.press(3_000);
        assert_eq!(rig.kinds(), vec![Unrecognised]);
    }

    #[test]
    fn bounce_on_press_and_release_makes_one_event() {
        let mut rig = Rig::new();
        rig.bounce(7).hold(true, 300).bounce(6).hold(false, 300);
        assert_eq!(rig.kinds(), vec![Identify]);
    }

    #[test]
    fn a_glitch_shorter_than_the_debounce_is_not_a_press() {
        let mut rig = Rig::new();
        rig.hold(false, 100).hold(true, 25).hold(false, 500);
        assert!(rig.kinds().is_empty());
    }

    #[test]
    fn deadlines_say_when_to_look_again() {
        let mut button = Button::new(ButtonTiming::default(), Duration::ZERO);
        assert_eq!(button.next_deadline(), None);
        button.sample(Duration::from_millis(100), true);
        assert_eq!(button.next_deadline(), Some(Duration::from_millis(130)));
        button.sample(Duration::from_millis(130), true);
        assert_eq!(button.next_deadline(), Some(Duration::from_millis(5_100)));
        // Sampling only at the deadlines is enough to see the hold.
        assert_eq!(
            button.sample(Duration::from_millis(5_100), true),
            Some(PairingHoldReached)
        );
        assert_eq!(button.next_deadline(), Some(Duration::from_millis(15_100)));
    }

    #[test]
    fn an_active_low_pin_reads_pressed_when_low() {
        use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};
        let pin = Mock::new(&[Transaction::get(State::Low), Transaction::get(State::High)]);
        let mut button = ButtonPin::new(pin, true);
        assert!(button.is_pressed().unwrap());
        assert!(!button.is_pressed().unwrap());
        button.release().done();
    }

    proptest! {
        /// Whatever the bounce (up to 20 flips of up to 20 ms around each
        /// edge), a clean press of a given length yields exactly its gesture.
        #[test]
        fn bounce_never_changes_the_gesture(
            flips_in in 0usize..20,
            flips_out in 0usize..20,
            held in prop::sample::select(vec![100u64, 800, 6_000, 9_000]),
        ) {
            let mut rig = Rig::new();
            rig.bounce(flips_in).hold(true, held).bounce(flips_out).hold(false, 500);
            let gestures: Vec<_> = rig
                .kinds()
                .into_iter()
                .filter(|e| !matches!(e, PairingHoldReached | ResetHoldReached))
                .collect();
            let expected = if held < 1_500 { Identify } else { OpenPairing };
            prop_assert_eq!(gestures, vec![expected]);
        }
    }
}
