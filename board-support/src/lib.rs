//! Cairn's board support: the status LED, the button, temperature and power
//! health, written against `embedded-hal` 1.0 traits so the logic runs the
//! same on a Raspberry Pi, a mini-PC with a GPIO header, or in a test with
//! mock pins.
//!
//! The decisions ([`led::LedPlayer`], [`button::Button`], [`panel::FrontPanel`],
//! [`health::HealthMonitor`]) are state machines fed with levels and the time;
//! they never sleep and do no I/O. [`board::Board`] is the only code in Cairn
//! that touches GPIO lines, I2C buses, LED class or thermal sysfs files.

#[cfg(feature = "linux")]
pub mod board;
pub mod button;
pub mod health;
pub mod led;
pub mod panel;
pub mod sensors;

use std::path::PathBuf;

/// Why a part of the board cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// A pin operation failed.
    #[error("the {what} pin failed ({kind}); check the wiring and the board profile")]
    Pin {
        /// Which part.
        what: &'static str,
        /// The HAL's error.
        kind: String,
    },
    /// An I2C transfer failed.
    #[error(
        "no answer from the I2C device at {address:#04x} ({kind}); check its address and the bus"
    )]
    I2c {
        /// The 7-bit address.
        address: u8,
        /// The HAL's error kind.
        kind: String,
    },
    /// A GPIO line could not be requested.
    #[error("GPIO line {line} of {chip}: {message}")]
    Gpio {
        /// The chip as configured.
        chip: String,
        /// The line offset.
        line: u32,
        /// What went wrong.
        message: String,
    },
    /// A sysfs or value file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A sysfs or value file could not be written.
    #[error("cannot write {path}: {source}; does cairnd have permission?")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds something that is not a reading.
    #[error("{path} holds {text:?}, which is not a reading this board support understands")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// A part named by the profile is not on this machine.
    #[error("not found: {what}")]
    Missing {
        /// What was looked for.
        what: String,
    },
}

impl BoardError {
    /// A pin error from any HAL.
    pub fn pin(what: &'static str, error: impl std::fmt::Debug) -> Self {
        Self::Pin {
            what,
            kind: format!("{error:?}"),
        }
    }
}
