//! What every Cairn program needs from the machine it runs on, in one
//! place so there is one of each: the wall clock as Unix seconds, small
//! state files replaced so that a crash leaves the old or the new contents,
//! and locks that stay usable after a thread panicked while holding them.
//!
//! Decisions elsewhere take the time as an argument; only the thin I/O
//! layers call [`unix_now`].

pub mod durable;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the wall clock (0 if the clock is set
/// before 1970, which only a broken clock is).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks `mutex`, taking it over from a thread that panicked while holding
/// it: the data behind Cairn's locks stays consistent across a panic (every
/// change is one assignment or is re-checked), and a daemon that stopped
/// serving because one request panicked would be worse.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks `lock`, as [`lock`] does for a mutex.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks `lock`, as [`lock`] does for a mutex.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
