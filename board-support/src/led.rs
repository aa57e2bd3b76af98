//! The status LED: one blink pattern per node state, chosen so that a person
//! across a room can tell them apart by rhythm alone (steady, even blink,
//! counted flashes, fast flicker), without needing colour or brightness.
//!
//! [`LedPlayer`] is plain code: given a pattern and the time, it says how
//! bright the LED should be and when that changes next. [`StatusLed`] and
//! [`PwmLed`] put that level on an `embedded-hal` pin.

use std::time::Duration;

use embedded_hal::digital::OutputPin;
use embedded_hal::pwm::SetDutyCycle;

use crate::BoardError;

/// What the LED shows. The node's state picks one; the button's overlays
/// (identify, pairing, reset) take precedence while they last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Starting up: even blink, once a second.
    Booting,
    /// Serving, nothing wrong: steady on.
    Healthy,
    /// Serving with a problem (a disk failed, too hot, low space, weak power):
    /// two flashes, then a pause.
    Degraded,
    /// Rebuilding or moving data: long on, short off.
    Repairing,
    /// Not serving (no disk usable, or a fatal error): three flashes, then a pause.
    Error,
    /// "This box": fast flicker for a few seconds after a short press.
    Identify,
    /// The pairing window is open: one short blip a second.
    Pairing,
    /// Factory reset armed, waiting for the confirming press: fast even blink.
    ResetArmed,
    /// A claim arrived and waits for a press at the box to confirm it:
    /// two short blips a second.
    ClaimPending,
}

/// One step of a pattern: a brightness (percent) held for a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 0 (dark) to 100 (full).
    pub level: u8,
    /// How long.
    pub millis: u32,
}

const fn on(millis: u32) -> Step {
    Step { level: 100, millis }
}

const fn off(millis: u32) -> Step {
    Step { level: 0, millis }
}

impl LedPattern {
    /// Every pattern, for documentation and tests.
    pub const ALL: [LedPattern; 10] = [
        LedPattern::Off,
        LedPattern::Booting,
        LedPattern::Healthy,
        LedPattern::Degraded,
        LedPattern::Repairing,
        LedPattern::Error,
        LedPattern::Identify,
        LedPattern::Pairing,
        LedPattern::ResetArmed,
        LedPattern::ClaimPending,
    ];

    /// The repeating cycle of steps; a single step is a steady level.
    pub fn steps(self) -> &'static [Step] {
        const OFF: &[Step] = &[off(1000)];
        const BOOTING: &[Step] = &[on(500), off(500)];
        const HEALTHY: &[Step] = &[on(1000)];
        const DEGRADED: &[Step] = &[on(200), off(200), on(200), off(1400)];
        const REPAIRING: &[Step] = &[on(1600), off(400)];
        const ERROR: &[Step] = &[on(200), off(200), on(200), off(200), on(200), off(1000)];
        const IDENTIFY: &[Step] = &[on(50), off(50)];
        const PAIRING: &[Step] = &[on(100), off(900)];
        const RESET_ARMED: &[Step] = &[on(125), off(125)];
        const CLAIM_PENDING: &[Step] = &[on(100), off(150), on(100), off(650)];
        match self {
            Self::Off => OFF,
            Self::Booting => BOOTING,
            Self::Healthy => HEALTHY,
            Self::Degraded => DEGRADED,
            Self::Repairing => REPAIRING,
            Self::Error => ERROR,
            Self::Identify => IDENTIFY,
            Self::Pairing => PAIRING,
            Self::ResetArmed => RESET_ARMED,
            Self::ClaimPending => CLAIM_PENDING,
        }
    }

    /// How long one cycle lasts.
    pub fn period(self) -> Duration {
        Duration::from_millis(self.steps().iter().map(|s| u64::from(s.millis)).sum())
    }

    /// In words, for the README and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Off => "dark",
            Self::Booting => "even blink, once a second",
            Self::Healthy => "steady on",
            Self::Degraded => "two flashes, then a pause (every 2 s)",
            Self::Repairing => "long on, short off (every 2 s)",
            Self::Error => "three flashes, then a pause (every 2 s)",
            Self::Identify => "fast flicker (10 times a second)",
            Self::Pairing => "one short blip a second",
            Self::ResetArmed => "fast even blink (4 times a second)",
            Self::ClaimPending => "two short blips a second",
        }
    }
}

/// Plays a pattern against a clock it is given. A pattern starts from its
/// first step when it is shown, so a new state is visible at once.
#[derive(Debug, Clone)]
pub struct LedPlayer {
    pattern: LedPattern,
    since: Duration,
}

impl LedPlayer {
    /// Starts showing `pattern` at `now`.
    pub fn new(pattern: LedPattern, now: Duration) -> Self {
        Self {
            pattern,
            since: now,
        }
    }

    /// Shows `pattern` from `now`; showing the pattern already playing keeps
    /// its rhythm (no restart, no visible glitch).
    pub fn show(&mut self, pattern: LedPattern, now: Duration) {
        if pattern != self.pattern {
            self.pattern = pattern;
            self.since = now;
        }
    }

    /// The pattern playing.
    pub fn pattern(&self) -> LedPattern {
        self.pattern
    }

    /// Brightness at `now` (percent).
    pub fn level(&self, now: Duration) -> u8 {
        self.locate(now).0.level
    }

    /// When the level may change next, or `None` for a steady pattern.
    pub fn next_change(&self, now: Duration) -> Option<Duration> {
        if self.pattern.steps().len() < 2 {
            return None;
        }
        Some(now + self.locate(now).1)
    }

    /// The step playing at `now` and the time left in it.
    fn locate(&self, now: Duration) -> (Step, Duration) {
        let steps = self.pattern.steps();
        let period = self.pattern.period().as_millis();
        let mut phase = now.saturating_sub(self.since).as_millis() % period.max(1);
        for step in steps {
            let length = u128::from(step.millis);
            if phase < length {
                let left = u64::try_from(length - phase).unwrap_or(u64::MAX);
                return (*step, Duration::from_millis(left));
            }
            phase -= length;
        }
        (steps[0], Duration::from_millis(u64::from(steps[0].millis)))
    }
}

/// Something that shows an LED level.
pub trait LedOutput: Send {
    /// Shows `level` (percent). Writes only when the visible state changes.
    fn set_level(&mut self, level: u8) -> Result<(), BoardError>;
}

/// An LED on a plain on/off pin: any level above zero is on. An LED wired
/// from the supply to the pin lights when the pin is low: `active_low`.
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    active_low: bool,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// Wraps a pin; the first level set is always written.
    pub fn new(pin: P, active_low: bool) -> Self {
        Self {
            pin,
            active_low,
            lit: None,
        }
    }

    /// The pin, back.
    pub fn release(self) -> P {
        self.pin
    }
}

impl<P: OutputPin + Send> LedOutput for StatusLed<P> {
    fn set_level(&mut self, level: u8) -> Result<(), BoardError> {
        let lit = level > 0;
        if self.lit == Some(lit) {
            return Ok(());
        }
        let result = if lit != self.active_low {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        };
        result.map_err(|e| BoardError::pin("LED", e))?;
        self.lit = Some(lit);
        Ok(())
    }
}

/// An LED on a PWM channel: levels are duty cycles, so "steady on" can be
/// gentle at night-light brightness while flashes stay full.
#[derive(Debug)]
pub struct PwmLed<P> {
    channel: P,
    level: Option<u8>,
    /// Brightness used for steady-on (percent), so a healthy box is not glaring.
    steady_level: u8,
}

impl<P: SetDutyCycle> PwmLed<P> {
    /// Wraps a PWM channel; `steady_level` caps a steady pattern's brightness.
    pub fn new(channel: P, steady_level: u8) -> Self {
        Self {
            channel,
            level: None,
            steady_level: steady_level.min(100),
        }
    }

    /// Shows a pattern's level at `now`, dimming steady patterns.
    pub fn show(&mut self, player: &LedPlayer, now: Duration) -> Result<(), BoardError> {
        let level = player.level(now);
        let level = if player.next_change(now).is_none() {
            level.min(self.steady_level)
        } else {
            level
        };
        self.write(level)
    }

    fn write(&mut self, level: u8) -> Result<(), BoardError> {
        let level = level.min(100);
        if self.level == Some(level) {
            return Ok(());
        }
        self.channel
            .set_duty_cycle_percent(level)
            .map_err(|e| BoardError::pin("LED PWM", e))?;
        self.level = Some(level);
        Ok(())
    }

    /// The channel, back.
    pub fn release(self) -> P {
        self.channel
    }
}

impl<P: SetDutyCycle + Send> LedOutput for PwmLed<P> {
    fn set_level(&mut self, level: u8) -> Result<(), BoardError> {
        self.write(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The level at every millisecond of one cycle, as (level, run length) pairs.
    fn runs(pattern: LedPattern) -> Vec<(u8, u64)> {
        let player = LedPlayer::new(pattern, ms(1234));
        let mut runs: Vec<(u8, u64)> = Vec::new();
        for t in 0..pattern.period().as_millis() as u64 {
            let level = player.level(ms(1234 + t));
            match runs.last_mut() {
                Some((last, n)) if *last == level => *n += 1,
                _ => runs.push((level, 1)),
            }
        }
        runs
    }

    #[test]
    fn every_pattern_plays_its_documented_timing() {
        assert_eq!(runs(LedPattern::Healthy), vec![(100, 1000)]);
        assert_eq!(runs(LedPattern::Off), vec![(0, 1000)]);
        assert_eq!(runs(LedPattern::Booting), vec![(100, 500), (0, 500)]);
        assert_eq!(
            runs(LedPattern::Degraded),
            vec![(100, 200), (0, 200), (100, 200), (0, 1400)]
        );
        assert_eq!(runs(LedPattern::Repairing), vec![(100, 1600), (0, 400)]);
        assert_eq!(
            runs(LedPattern::Error),
            vec![
                (100, 200),
                (0, 200),
                (100, 200),
                (0, 200),
                (100, 200),
                (0, 1000)
            ]
        );
        assert_eq!(runs(LedPattern::Identify), vec![(100, 50), (0, 50)]);
        assert_eq!(runs(LedPattern::Pairing), vec![(100, 100), (0, 900)]);
        assert_eq!(runs(LedPattern::ResetArmed), vec![(100, 125), (0, 125)]);
    }

    /// What a person sees: the on-time fraction, the number of flashes per
    /// cycle and the cycle length. No two patterns may look the same.
    #[test]
    fn no_two_patterns_look_alike() {
        let look = |p: LedPattern| {
            let runs = runs(p);
            let flashes = runs.iter().filter(|(l, _)| *l > 0).count();
            let lit: u64 = runs.iter().filter(|(l, _)| *l > 0).map(|(_, n)| n).sum();
            (
                flashes,
                lit * 100 / p.period().as_millis() as u64,
                p.period(),
            )
        };
        for (i, a) in LedPattern::ALL.iter().enumerate() {
            for b in &LedPattern::ALL[i + 1..] {
                assert_ne!(look(*a), look(*b), "{a:?} and {b:?} look alike");
            }
        }
    }

    /// The README's LED table is what people read: it must say what plays.
    #[test]
    fn the_readme_describes_every_pattern_as_it_plays() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for pattern in LedPattern::ALL {
            if pattern == LedPattern::Off {
                continue;
            }
            assert!(
                readme.contains(&format!("| {} |", pattern.describe())),
                "README's LED table lacks {pattern:?}: {}",
                pattern.describe()
            );
        }
    }

    #[test]
    fn cycles_repeat_and_next_change_is_the_step_edge() {
        let player = LedPlayer::new(LedPattern::Degraded, ms(0));
        assert_eq!(player.next_change(ms(0)), Some(ms(200)));
        assert_eq!(player.next_change(ms(150)), Some(ms(200)));
        assert_eq!(player.next_change(ms(650)), Some(ms(2000)));
        assert_eq!(player.level(ms(2000 * 7 + 250)), 0);
        assert_eq!(player.level(ms(2000 * 7 + 450)), 100);
        let steady = LedPlayer::new(LedPattern::Healthy, ms(0));
        assert_eq!(steady.next_change(ms(5)), None);
    }

    #[test]
    fn showing_the_same_pattern_keeps_its_phase_and_a_new_one_starts_lit() {
        let mut player = LedPlayer::new(LedPattern::Booting, ms(0));
        player.show(LedPattern::Booting, ms(700));
        assert_eq!(
            player.level(ms(700)),
            0,
            "phase kept: 700 ms is in the off half"
        );
        player.show(LedPattern::Pairing, ms(700));
        assert_eq!(player.level(ms(700)), 100);
        assert_eq!(player.level(ms(801)), 0);
    }

    #[test]
    fn the_pin_is_written_only_when_the_led_changes() {
        let pin = PinMock::new(&[
            PinTx::set(State::High),
            PinTx::set(State::Low),
            PinTx::set(State::High),
        ]);
        let mut led = StatusLed::new(pin, false);
        led.set_level(100).unwrap();
        led.set_level(40).unwrap();
        led.set_level(0).unwrap();
        led.set_level(0).unwrap();
        led.set_level(100).unwrap();
        led.release().done();
        let pin = PinMock::new(&[PinTx::set(State::Low), PinTx::set(State::High)]);
        let mut led = StatusLed::new(pin, true);
        led.set_level(100).unwrap();
        led.set_level(0).unwrap();
        led.release().done();
    }

    #[test]
    fn a_pwm_led_dims_steady_patterns_only() {
        use embedded_hal_mock::eh1::pwm::{Mock as PwmMock, Transaction as PwmTx};
        let channel = PwmMock::new(&[
            PwmTx::max_duty_cycle(100),
            PwmTx::set_duty_cycle(30),
            PwmTx::max_duty_cycle(100),
            PwmTx::set_duty_cycle(100),
            PwmTx::max_duty_cycle(100),
            PwmTx::set_duty_cycle(0),
        ]);
        let mut led = PwmLed::new(channel, 30);
        let healthy = LedPlayer::new(LedPattern::Healthy, ms(0));
        led.show(&healthy, ms(10)).unwrap();
        led.show(&healthy, ms(20)).unwrap();
        let booting = LedPlayer::new(LedPattern::Booting, ms(0));
        led.show(&booting, ms(10)).unwrap();
        led.show(&booting, ms(600)).unwrap();
        led.release().done();
    }
}
