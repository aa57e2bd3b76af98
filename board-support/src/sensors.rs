//! Temperature and power: an LM75/TMP102-class sensor on I2C, the SoC's
//! thermal zone, and the Raspberry Pi's undervoltage and throttling flags.
//! Parsing is plain code; reading a sysfs file is the only I/O here.

use std::path::Path;

use embedded_hal::i2c::I2c;

use crate::BoardError;

/// The LM75 family's temperature register, and the pointer byte that selects it.
const TEMPERATURE_REGISTER: u8 = 0x00;

/// Which chip, for its resolution. All keep the temperature left-justified
/// in a big-endian two's-complement word at register 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// The original LM75: 9 bits, 0.5 °C steps.
    Lm75,
    /// LM75A/LM75B and most clones: 11 bits, 0.125 °C steps.
    Lm75b,
    /// TI TMP102 (normal mode): 12 bits, 0.0625 °C steps.
    Tmp102,
}

impl SensorKind {
    fn bits(self) -> u32 {
        match self {
            Self::Lm75 => 9,
            Self::Lm75b => 11,
            Self::Tmp102 => 12,
        }
    }

    /// The name used in the configuration.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "lm75" => Some(Self::Lm75),
            "lm75b" | "lm75a" => Some(Self::Lm75b),
            "tmp102" => Some(Self::Tmp102),
            _ => None,
        }
    }

    /// Millidegrees Celsius from the register's two bytes.
    pub fn decode(self, register: [u8; 2]) -> i32 {
        let bits = self.bits();
        // An arithmetic shift keeps the sign; the low bits are undefined on
        // the coarser chips and must not leak into the value.
        let counts = i32::from(i16::from_be_bytes(register) >> (16 - bits));
        counts * 1000 / (1 << (bits - 8))
    }
}

/// A temperature sensor on an I2C bus.
#[derive(Debug)]
pub struct TemperatureSensor<I> {
    bus: I,
    address: u8,
    kind: SensorKind,
}

impl<I: I2c> TemperatureSensor<I> {
    /// A sensor at a 7-bit address (0x48–0x4f for this family).
    pub fn new(bus: I, address: u8, kind: SensorKind) -> Self {
        Self { bus, address, kind }
    }

    /// Reads the temperature in millidegrees Celsius.
    pub fn read_millicelsius(&mut self) -> Result<i32, BoardError> {
        let mut register = [0u8; 2];
        self.bus
            .write_read(self.address, &[TEMPERATURE_REGISTER], &mut register)
            .map_err(|e| BoardError::I2c {
                address: self.address,
                kind: format!("{:?}", embedded_hal::i2c::Error::kind(&e)),
            })?;
        Ok(self.kind.decode(register))
    }

    /// The bus, back.
    pub fn release(self) -> I {
        self.bus
    }
}

/// Parses a Linux thermal zone's `temp` file (millidegrees Celsius).
pub fn parse_thermal_zone(text: &str) -> Option<i32> {
    text.trim().parse().ok()
}

/// Reads a thermal zone's `temp` file, e.g. `/sys/class/thermal/thermal_zone0/temp`.
pub fn read_thermal_zone(path: &Path) -> Result<i32, BoardError> {
    let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_thermal_zone(&text).ok_or_else(|| BoardError::Unreadable {
        path: path.to_owned(),
        text: text.trim().to_owned(),
    })
}

/// The power and throttling flags a Raspberry Pi's firmware reports
/// (`get_throttled`: bits 0–3 now, bits 16–19 since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PowerFlags {
    /// The supply is below 4.63 V now.
    pub undervoltage: bool,
    /// The ARM clock is capped now.
    pub frequency_capped: bool,
    /// The SoC is throttled now.
    pub throttled: bool,
    /// The soft temperature limit is active now.
    pub soft_temperature_limit: bool,
    /// Undervoltage happened since boot.
    pub undervoltage_since_boot: bool,
}

impl PowerFlags {
    /// Parses `get_throttled` (hex, with or without `0x`, as the firmware
    /// sysfs file and `vcgencmd` print it).
    pub fn parse_throttled(text: &str) -> Option<Self> {
        let text = text.trim();
        let hex = text
            .strip_prefix("throttled=")
            .unwrap_or(text)
            .trim_start_matches("0x");
        let bits = u32::from_str_radix(hex, 16).ok()?;
        Some(Self {
            undervoltage: bits & 1 != 0,
            frequency_capped: bits & (1 << 1) != 0,
            throttled: bits & (1 << 2) != 0,
            soft_temperature_limit: bits & (1 << 3) != 0,
            undervoltage_since_boot: bits & (1 << 16) != 0,
        })
    }

    /// Parses a hwmon alarm file (`in0_lcrit_alarm` of the Pi's `rpi_volt`):
    /// "1" is undervoltage now.
    pub fn parse_voltage_alarm(text: &str) -> Option<Self> {
        match text.trim() {
            "0" => Some(Self::default()),
            "1" => Some(Self {
                undervoltage: true,
                undervoltage_since_boot: true,
                ..Self::default()
            }),
            _ => None,
        }
    }
}

/// Where a board reports its power flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerSource {
    /// The firmware's `get_throttled` file.
    Throttled(std::path::PathBuf),
    /// A hwmon undervoltage alarm file.
    VoltageAlarm(std::path::PathBuf),
}

impl PowerSource {
    /// Reads the flags.
    pub fn read(&self) -> Result<PowerFlags, BoardError> {
        let (path, parse): (&Path, fn(&str) -> Option<PowerFlags>) = match self {
            Self::Throttled(path) => (path, PowerFlags::parse_throttled),
            Self::VoltageAlarm(path) => (path, PowerFlags::parse_voltage_alarm),
        };
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse(&text).ok_or_else(|| BoardError::Unreadable {
            path: path.to_owned(),
            text: text.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    #[test]
    fn decodes_every_resolution_including_below_zero() {
        // Datasheet examples: +25 °C, +0.5 °C, -25 °C, -55 °C.
        assert_eq!(SensorKind::Lm75.decode([0x19, 0x00]), 25_000);
        assert_eq!(SensorKind::Lm75.decode([0x00, 0x80]), 500);
        assert_eq!(SensorKind::Lm75.decode([0xe7, 0x00]), -25_000);
        assert_eq!(SensorKind::Lm75b.decode([0x19, 0x20]), 25_125);
        assert_eq!(SensorKind::Lm75b.decode([0xc9, 0x00]), -55_000);
        assert_eq!(SensorKind::Tmp102.decode([0x19, 0x10]), 25_062);
        assert_eq!(SensorKind::Tmp102.decode([0x7f, 0xf0]), 127_937);
        assert_eq!(SensorKind::Tmp102.decode([0xff, 0xf0]), -62);
        // Undefined low bits of a 9-bit LM75 are ignored.
        assert_eq!(SensorKind::Lm75.decode([0x19, 0x7f]), 25_000);
    }

    #[test]
    fn reads_the_temperature_register_over_i2c() {
        let bus = Mock::new(&[
            Transaction::write_read(0x48, vec![0x00], vec![0x32, 0x80]),
            Transaction::write_read(0x48, vec![0x00], vec![0x19, 0x00])
                .with_error(embedded_hal::i2c::ErrorKind::Bus),
        ]);
        let mut sensor = TemperatureSensor::new(bus, 0x48, SensorKind::Tmp102);
        assert_eq!(sensor.read_millicelsius().unwrap(), 50_500);
        let err = sensor.read_millicelsius().unwrap_err().to_string();
        assert!(err.contains("0x48"), "{err}");
        sensor.release().done();
    }

    #[test]
    fn parses_thermal_zones_and_power_flags() {
        assert_eq!(parse_thermal_zone("48312\n"), Some(48_312));
        assert_eq!(parse_thermal_zone("hot"), None);
        let flags = PowerFlags::parse_throttled("0x50005\n").unwrap();
        assert!(flags.undervoltage && flags.throttled && flags.undervoltage_since_boot);
        assert!(!flags.frequency_capped && !flags.soft_temperature_limit);
        assert_eq!(
            PowerFlags::parse_throttled("throttled=0x0"),
            Some(PowerFlags::default())
        );
        assert_eq!(PowerFlags::parse_throttled("zz"), None);
        assert!(PowerFlags::parse_voltage_alarm("1\n").unwrap().undervoltage);
        assert_eq!(PowerFlags::parse_voltage_alarm("2"), None);
    }

    #[test]
    fn reads_files_and_says_which_one_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("temp");
        std::fs::write(&zone, "61000\n").unwrap();
        assert_eq!(read_thermal_zone(&zone).unwrap(), 61_000);
        std::fs::write(&zone, "garbage").unwrap();
        let err = read_thermal_zone(&zone).unwrap_err().to_string();
        assert!(err.contains("garbage") && err.contains("temp"), "{err}");
        let throttled = dir.path().join("get_throttled");
        std::fs::write(&throttled, "1\n").unwrap();
        assert!(
            PowerSource::Throttled(throttled)
                .read()
                .unwrap()
                .undervoltage
        );
    }
}
