//! Helpers shared by the tests that run real `cairnd` and `cairn` processes.
#![allow(dead_code)] // each test uses a different part

pub mod daemon;
pub mod owner;
