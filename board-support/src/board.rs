//! The board as the daemon uses it: profiles that say where the LED, the
//! button and the sensors are, and the Linux backends that open them (GPIO
//! character device, `/dev/i2c-*`, LED class and thermal sysfs files).
//!
//! A part that is missing or fails is reported once and then left out; the
//! node runs without it. Resolving a profile is plain code; opening is I/O.

use std::path::{Path, PathBuf};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use linux_embedded_hal::gpio_cdev::{self, LineRequestFlags};
use linux_embedded_hal::{CdevPin, I2cdev};
use tracing::{info, warn};

use crate::BoardError;
use crate::button::{ButtonInput, ButtonPin};
use crate::led::{LedOutput, StatusLed};
use crate::sensors::{PowerFlags, PowerSource, SensorKind, TemperatureSensor, read_thermal_zone};

/// Which board this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// Decide from the device tree's model string; no known board is `None`.
    Auto,
    /// Raspberry Pi 4: the green ACT LED, a button on GPIO 27.
    RaspberryPi4,
    /// Raspberry Pi 5: the green ACT LED, a button on GPIO 27 (RP1).
    RaspberryPi5,
    /// Only what the configuration names.
    Generic,
    /// Value files in a directory stand in for the pins (`led` is written
    /// with the level, `button` is read: `1` pressed), for tests and demos.
    Simulated(PathBuf),
    /// No hardware.
    None,
}

/// Where a GPIO chip is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chip {
    /// A character device, e.g. `/dev/gpiochip0`.
    Path(PathBuf),
    /// The chip whose label is this, wherever it is numbered
    /// (`pinctrl-bcm2711` on a Pi 4, `pinctrl-rp1` on a Pi 5).
    Label(String),
}

/// How the LED is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedWiring {
    /// A GPIO line.
    Gpio {
        /// The chip.
        chip: Chip,
        /// The line's offset on the chip.
        line: u32,
        /// Lit when the line is low.
        active_low: bool,
    },
    /// A Linux LED class device (`/sys/class/leds/NAME`); the first that
    /// exists of these is used, taken over from its kernel trigger.
    Class(Vec<PathBuf>),
    /// A value file written with `0`–`100`.
    File(PathBuf),
}

/// How the button is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonWiring {
    /// A GPIO line (the board or a resistor pulls it to its released level).
    Gpio {
        /// The chip.
        chip: Chip,
        /// The line's offset on the chip.
        line: u32,
        /// Pressed reads low (a button to ground with a pull-up).
        active_low: bool,
    },
    /// A value file read as `1` (pressed) or `0`.
    File(PathBuf),
}

/// An I2C temperature sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorWiring {
    /// The bus device, e.g. `/dev/i2c-1`.
    pub bus: PathBuf,
    /// 7-bit address.
    pub address: u8,
    /// The chip.
    pub kind: SensorKind,
}

/// What the configuration says about the board; anything given overrides
/// the profile's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardConfig {
    /// The profile.
    pub profile: Profile,
    /// The LED, if not the profile's.
    pub led: Option<LedWiring>,
    /// The button, if not the profile's.
    pub button: Option<ButtonWiring>,
    /// An I2C sensor (no profile has one by default).
    pub sensor: Option<SensorWiring>,
    /// The SoC's thermal zone `temp` file, if not the profile's.
    pub thermal_zone: Option<PathBuf>,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Auto,
            led: None,
            button: None,
            sensor: None,
            thermal_zone: None,
        }
    }
}

/// Where every part is, once the profile is decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wiring {
    /// The board's name, for the log.
    pub board: String,
    /// The LED.
    pub led: Option<LedWiring>,
    /// The button.
    pub button: Option<ButtonWiring>,
    /// An I2C sensor.
    pub sensor: Option<SensorWiring>,
    /// The SoC's thermal zone.
    pub thermal_zone: Option<PathBuf>,
    /// Power flags, first that exists.
    pub power: Vec<PowerSource>,
}

/// The GPIO line for the button on the Pi profiles: header pin 13, next to a
/// ground on pin 14, so a button needs no wiring beyond two adjacent pins.
pub const PI_BUTTON_LINE: u32 = 27;
const THERMAL_ZONE0: &str = "/sys/class/thermal/thermal_zone0/temp";
const PI_THROTTLED: &str = "/sys/devices/platform/soc/soc:firmware/get_throttled";

impl BoardConfig {
    /// Decides where every part is. `model` is the device tree's model string
    /// (`/proc/device-tree/model`), used by [`Profile::Auto`].
    pub fn resolve(&self, model: Option<&str>) -> Wiring {
        let profile = match &self.profile {
            Profile::Auto => match model {
                Some(m) if m.starts_with("Raspberry Pi 4") => Profile::RaspberryPi4,
                Some(m) if m.starts_with("Raspberry Pi 5") => Profile::RaspberryPi5,
                _ => Profile::None,
            },
            other => other.clone(),
        };
        let pi = |board: &str, chip: &str| Wiring {
            board: board.into(),
            led: Some(LedWiring::Class(vec![
                "/sys/class/leds/ACT".into(),
                "/sys/class/leds/led0".into(),
            ])),
            button: Some(ButtonWiring::Gpio {
                chip: Chip::Label(chip.into()),
                line: PI_BUTTON_LINE,
                active_low: true,
            }),
            sensor: None,
            thermal_zone: Some(THERMAL_ZONE0.into()),
            power: vec![PowerSource::Throttled(PI_THROTTLED.into())],
        };
        let mut wiring = match profile {
            Profile::RaspberryPi4 => pi("Raspberry Pi 4", "pinctrl-bcm2711"),
            Profile::RaspberryPi5 => pi("Raspberry Pi 5", "pinctrl-rp1"),
            Profile::Generic => Wiring {
                board: "generic board".into(),
                thermal_zone: Some(THERMAL_ZONE0.into()),
                ..Wiring::default()
            },
            Profile::Simulated(dir) => Wiring {
                board: format!("simulated board in {}", dir.display()),
                led: Some(LedWiring::File(dir.join("led"))),
                button: Some(ButtonWiring::File(dir.join("button"))),
                sensor: None,
                thermal_zone: Some(dir.join("temp")),
                power: vec![PowerSource::Throttled(dir.join("throttled"))],
            },
            Profile::None | Profile::Auto => Wiring {
                board: "no board hardware".into(),
                ..Wiring::default()
            },
        };
        if let Some(led) = &self.led {
            wiring.led = Some(led.clone());
        }
        if let Some(button) = &self.button {
            wiring.button = Some(button.clone());
        }
        if let Some(sensor) = &self.sensor {
            wiring.sensor = Some(sensor.clone());
        }
        if let Some(zone) = &self.thermal_zone {
            wiring.thermal_zone = Some(zone.clone());
        }
        wiring
    }
}

/// What the sensors say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readings {
    /// The hottest of the sensors, millidegrees Celsius.
    pub temperature_mc: Option<i32>,
    /// Power flags, where the board reports them.
    pub power: Option<PowerFlags>,
}

/// The opened board. Parts that could not be opened are absent.
pub struct Board {
    led: Option<Box<dyn LedOutput>>,
    button: Option<Box<dyn ButtonInput>>,
    sensor: Option<TemperatureSensor<I2cdev>>,
    thermal_zone: Option<PathBuf>,
    power: Option<PowerSource>,
}

impl Board {
    /// A board with nothing on it.
    pub fn none() -> Self {
        Self {
            led: None,
            button: None,
            sensor: None,
            thermal_zone: None,
            power: None,
        }
    }

    /// Opens what `config` names on this machine and logs, once, what was
    /// found and what was not. Never fails: a node runs without a board.
    pub fn open(config: &BoardConfig) -> Self {
        let model = std::fs::read_to_string("/proc/device-tree/model")
            .ok()
            .map(|m| m.trim_end_matches('\0').trim().to_owned());
        Self::open_wiring(&config.resolve(model.as_deref()))
    }

    /// Opens resolved wiring (see [`Board::open`]).
    pub fn open_wiring(wiring: &Wiring) -> Self {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let mut board = Self::none();
        if let Some(led) = &wiring.led {
            match open_led(led) {
                Ok((output, what)) => {
                    board.led = Some(output);
                    found.push(format!("LED {what}"));
                }
                Err(e) => missing.push(format!("LED: {e}")),
            }
        }
        if let Some(button) = &wiring.button {
            match open_button(button) {
                Ok((input, what)) => {
                    board.button = Some(input);
                    found.push(format!("button {what}"));
                }
                Err(e) => missing.push(format!("button: {e}")),
            }
        }
        if let Some(sensor) = &wiring.sensor {
            match I2cdev::new(&sensor.bus) {
                Ok(bus) => {
                    let mut opened = TemperatureSensor::new(bus, sensor.address, sensor.kind);
                    match opened.read_millicelsius() {
                        Ok(_) => {
                            board.sensor = Some(opened);
                            found.push(format!(
                                "{:?} sensor at {:#04x} on {}",
                                sensor.kind,
                                sensor.address,
                                sensor.bus.display()
                            ));
                        }
                        Err(e) => missing.push(format!("temperature sensor: {e}")),
                    }
                }
                Err(e) => missing.push(format!(
                    "temperature sensor: cannot open {}: {e}",
                    sensor.bus.display()
                )),
            }
        }
        if let Some(zone) = &wiring.thermal_zone {
            match read_thermal_zone(zone) {
                Ok(_) => {
                    board.thermal_zone = Some(zone.clone());
                    found.push(format!("thermal zone {}", zone.display()));
                }
                Err(e) => missing.push(format!("thermal zone: {e}")),
            }
        }
        board.power = wiring
            .power
            .iter()
            .find(|source| source.read().is_ok())
            .cloned();
        if let Some(source) = &board.power {
            found.push(format!("power flags {source:?}"));
        }
        if found.is_empty() && missing.is_empty() {
            info!(
                "{}: no LED, no button, no sensors; the node runs fine without them",
                wiring.board
            );
        } else {
            info!(
                "{}: {}",
                wiring.board,
                if found.is_empty() {
                    "nothing usable found".to_owned()
                } else {
                    found.join(", ")
                }
            );
            for problem in missing {
                warn!("{}: left out: {problem}", wiring.board);
            }
        }
        board
    }

    /// Whether there is a button.
    pub fn has_button(&self) -> bool {
        self.button.is_some()
    }

    /// Shows an LED level; a failing LED is reported once and left out.
    pub fn set_led(&mut self, level: u8) {
        if let Some(led) = &mut self.led
            && let Err(e) = led.set_level(level)
        {
            warn!("the status LED failed and is left out until restart: {e}");
            self.led = None;
        }
    }

    /// The button's raw level, or `None` without a (working) button.
    pub fn button_pressed(&mut self) -> Option<bool> {
        let button = self.button.as_mut()?;
        match button.is_pressed() {
            Ok(pressed) => Some(pressed),
            Err(e) => {
                warn!("the button failed and is left out until restart: {e}");
                self.button = None;
                None
            }
        }
    }

    /// Reads the sensors; one that fails is reported once and left out.
    pub fn read(&mut self) -> Readings {
        let mut temperatures = Vec::new();
        if let Some(sensor) = &mut self.sensor {
            match sensor.read_millicelsius() {
                Ok(t) => temperatures.push(t),
                Err(e) => {
                    warn!("the temperature sensor failed and is left out until restart: {e}");
                    self.sensor = None;
                }
            }
        }
        if let Some(zone) = &self.thermal_zone {
            match read_thermal_zone(zone) {
                Ok(t) => temperatures.push(t),
                Err(e) => {
                    warn!("the thermal zone is left out until restart: {e}");
                    self.thermal_zone = None;
                }
            }
        }
        let power = match &self.power {
            Some(source) => match source.read() {
                Ok(flags) => Some(flags),
                Err(e) => {
                    warn!("the power flags are left out until restart: {e}");
                    self.power = None;
                    None
                }
            },
            None => None,
        };
        Readings {
            temperature_mc: temperatures.into_iter().max(),
            power,
        }
    }
}

fn open_led(wiring: &LedWiring) -> Result<(Box<dyn LedOutput>, String), BoardError> {
    match wiring {
        LedWiring::Gpio {
            chip,
            line,
            active_low,
        } => {
            let (pin, name) = request_line(chip, *line, LineRequestFlags::OUTPUT)?;
            Ok((
                Box::new(StatusLed::new(pin, *active_low)),
                format!("on line {line} of {name}"),
            ))
        }
        LedWiring::Class(candidates) => {
            let dir = candidates
                .iter()
                .find(|dir| dir.join("brightness").exists())
                .ok_or_else(|| BoardError::Missing {
                    what: format!(
                        "none of {}",
                        candidates
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            // The kernel's trigger (mmc activity, heartbeat) would fight us.
            let trigger = dir.join("trigger");
            std::fs::write(&trigger, "none").map_err(|source| BoardError::Write {
                path: trigger,
                source,
            })?;
            let max = std::fs::read_to_string(dir.join("max_brightness"))
                .ok()
                .and_then(|m| m.trim().parse::<u32>().ok())
                .unwrap_or(1);
            let pin = ValueFilePin::new(dir.join("brightness"), max.to_string());
            Ok((
                Box::new(StatusLed::new(pin, false)),
                format!("{}", dir.display()),
            ))
        }
        LedWiring::File(path) => Ok((
            Box::new(LevelFile { path: path.clone() }),
            format!("file {}", path.display()),
        )),
    }
}

fn open_button(wiring: &ButtonWiring) -> Result<(Box<dyn ButtonInput>, String), BoardError> {
    match wiring {
        ButtonWiring::Gpio {
            chip,
            line,
            active_low,
        } => {
            let (pin, name) = request_line(chip, *line, LineRequestFlags::INPUT)?;
            let mut button = ButtonPin::new(pin, *active_low);
            button.is_pressed()?;
            Ok((Box::new(button), format!("on line {line} of {name}")))
        }
        ButtonWiring::File(path) => {
            let mut button = ButtonPin::new(ValueFilePin::new(path.clone(), "1".into()), false);
            button.is_pressed()?;
            Ok((Box::new(button), format!("file {}", path.display())))
        }
    }
}

/// Requests one line of a chip for cairnd; levels are physical (no kernel
/// active-low flag), the drivers invert where the wiring says so.
fn request_line(
    chip: &Chip,
    line: u32,
    flags: LineRequestFlags,
) -> Result<(CdevPin, String), BoardError> {
    let gpio = |message: String| BoardError::Gpio {
        chip: format!("{chip:?}"),
        line,
        message,
    };
    let mut opened = match chip {
        Chip::Path(path) => gpio_cdev::Chip::new(path).map_err(|e| gpio(e.to_string()))?,
        Chip::Label(label) => gpio_cdev::chips()
            .map_err(|e| gpio(e.to_string()))?
            .filter_map(Result::ok)
            .find(|c| c.label() == label)
            .ok_or_else(|| gpio(format!("no GPIO chip is labelled {label}")))?,
    };
    let name = format!("{} ({})", opened.path().display(), opened.label());
    let handle = opened
        .get_line(line)
        .and_then(|l| l.request(flags, 0, "cairnd"))
        .map_err(|e| gpio(format!("{e}; is another program using it?")))?;
    let pin = CdevPin::new(handle).map_err(|e| gpio(e.to_string()))?;
    Ok((pin, name))
}

/// A pin backed by a value file: sysfs LED `brightness`, or a simulated line.
/// High writes `on_value`, low writes `0`; reading treats anything but `0`
/// as high.
#[derive(Debug)]
pub struct ValueFilePin {
    path: PathBuf,
    on_value: String,
}

impl ValueFilePin {
    /// A pin on `path`.
    pub fn new(path: PathBuf, on_value: String) -> Self {
        Self { path, on_value }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A value file's I/O error, as an `embedded-hal` pin error.
#[derive(Debug)]
pub struct ValueFileError(pub std::io::Error);

impl embedded_hal::digital::Error for ValueFileError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl ErrorType for ValueFilePin {
    type Error = ValueFileError;
}

impl OutputPin for ValueFilePin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        std::fs::write(&self.path, "0").map_err(ValueFileError)
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        std::fs::write(&self.path, &self.on_value).map_err(ValueFileError)
    }
}

impl InputPin for ValueFilePin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        let text = std::fs::read_to_string(&self.path).map_err(ValueFileError)?;
        Ok(!matches!(text.trim(), "0" | ""))
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|high| !high)
    }
}

/// A simulated LED: the level (0–100) is written to a file when it changes,
/// atomically, so a reader never sees a half-written value.
struct LevelFile {
    path: PathBuf,
}

impl LedOutput for LevelFile {
    fn set_level(&mut self, level: u8) -> Result<(), BoardError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, level.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|source| BoardError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_pi_from_the_model_and_nothing_elsewhere() {
        let config = BoardConfig::default();
        let pi4 = config.resolve(Some("Raspberry Pi 4 Model B Rev 1.5"));
        assert_eq!(pi4.board, "Raspberry Pi 4");
        assert!(matches!(
            pi4.button,
            Some(ButtonWiring::Gpio { chip: Chip::Label(ref l), line: 27, active_low: true }) if l == "pinctrl-bcm2711"
        ));
        let pi5 = config.resolve(Some("Raspberry Pi 5 Model B Rev 1.0"));
        assert!(matches!(
            pi5.button,
            Some(ButtonWiring::Gpio { chip: Chip::Label(ref l), .. }) if l == "pinctrl-rp1"
        ));
        assert!(matches!(pi5.led, Some(LedWiring::Class(_))));
        let pc = config.resolve(None);
        assert_eq!(pc.led, None);
        assert_eq!(pc.button, None);
    }

    #[test]
    fn the_configuration_overrides_the_profile() {
        let config = BoardConfig {
            profile: Profile::RaspberryPi4,
            led: Some(LedWiring::Gpio {
                chip: Chip::Path("/dev/gpiochip0".into()),
                line: 17,
                active_low: false,
            }),
            sensor: Some(SensorWiring {
                bus: "/dev/i2c-1".into(),
                address: 0x48,
                kind: SensorKind::Tmp102,
            }),
            ..BoardConfig::default()
        };
        let wiring = config.resolve(None);
        assert!(matches!(wiring.led, Some(LedWiring::Gpio { line: 17, .. })));
        assert!(wiring.sensor.is_some());
        assert!(matches!(
            wiring.button,
            Some(ButtonWiring::Gpio { line: 27, .. })
        ));
    }

    #[test]
    fn a_simulated_board_works_through_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("button"), "0").unwrap();
        std::fs::write(dir.path().join("temp"), "42000").unwrap();
        std::fs::write(dir.path().join("throttled"), "0x1").unwrap();
        let config = BoardConfig {
            profile: Profile::Simulated(dir.path().to_owned()),
            ..BoardConfig::default()
        };
        let mut board = Board::open(&config);
        assert!(board.has_button());
        assert_eq!(board.button_pressed(), Some(false));
        std::fs::write(dir.path().join("button"), "1\n").unwrap();
        assert_eq!(board.button_pressed(), Some(true));
        board.set_led(100);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("led")).unwrap(),
            "100"
        );
        let readings = board.read();
        assert_eq!(readings.temperature_mc, Some(42_000));
        assert!(readings.power.unwrap().undervoltage);
        // A part that disappears is left out, the rest goes on.
        std::fs::remove_file(dir.path().join("button")).unwrap();
        assert_eq!(board.button_pressed(), None);
        assert_eq!(board.button_pressed(), None);
        assert_eq!(board.read().temperature_mc, Some(42_000));
    }

    #[test]
    fn a_board_without_parts_runs() {
        let wiring = BoardConfig {
            profile: Profile::None,
            ..BoardConfig::default()
        }
        .resolve(None);
        let mut board = Board::open_wiring(&wiring);
        board.set_led(100);
        assert_eq!(board.button_pressed(), None);
        assert_eq!(board.read(), Readings::default());
        // A named part that does not exist is left out, not fatal.
        let mut board = Board::open_wiring(&Wiring {
            board: "test".into(),
            button: Some(ButtonWiring::Gpio {
                chip: Chip::Label("no-such-chip".into()),
                line: 3,
                active_low: true,
            }),
            led: Some(LedWiring::Class(vec!["/nonexistent/leds/x".into()])),
            ..Wiring::default()
        });
        assert!(!board.has_button());
        board.set_led(0);
    }
}
