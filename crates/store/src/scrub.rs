//! Scrub: re-hash stored shards in the background at a bounded I/O rate, and
//! quarantine any that no longer match their id.
//!
//! [`ShardStore::scrub_step`] checks shards in id order, disk after disk,
//! until a byte budget is spent, and remembers where it stopped.
//! [`ScrubPacer`] decides when the next step may run so that the average
//! rate stays under a limit; it is plain arithmetic on a given time.
//! [`ShardStore::spawn_scrubber`] runs both on a thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DiskSlot, ShardStore, StoreError, StoreEvent, disk::shard_path, lock, read};
use cairn_proto::ids::ShardId;

/// What one scrub step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    /// Shards re-hashed.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Shards found corrupt and quarantined.
    pub corrupt: Vec<ShardId>,
    /// Shards whose file was missing, quarantined.
    pub missing: Vec<ShardId>,
    /// Whether this step reached the end of the last disk (the next starts over).
    pub pass_complete: bool,
}

impl ShardStore {
    /// Re-hashes shards, continuing where the previous step stopped, until
    /// about `max_bytes` have been read. Corrupt or missing shards are
    /// quarantined and reported as events.
    pub fn scrub_step(&self, max_bytes: u64) -> ScrubReport {
        let mut report = ScrubReport::default();
        let mut cursor = lock(&self.scrub_cursor);
        while report.bytes < max_bytes.max(1) {
            let (slot_index, after) = *cursor;
            let disk = match read(&self.disks).get(slot_index) {
                None => {
                    *cursor = (0, None);
                    report.pass_complete = true;
                    break;
                }
                Some(DiskSlot::Open(disk)) if disk.failure().is_none() => Arc::clone(disk),
                Some(_) => {
                    *cursor = (slot_index + 1, None);
                    continue;
                }
            };
            let page = match disk.index().page(after, 64) {
                Ok(page) => page,
                Err(_) => {
                    *cursor = (slot_index + 1, None);
                    continue;
                }
            };
            if page.is_empty() {
                *cursor = (slot_index + 1, None);
                continue;
            }
            for (id, record) in page {
                if report.bytes >= max_bytes.max(1) {
                    break;
                }
                *cursor = (slot_index, Some(id));
                if record.state != super::ShardState::Stored {
                    continue;
                }
                let _guard = self.locks.lock(id);
                // Re-read under the lock: a delete or quarantine may have come first.
                if !matches!(disk.record(&id), Ok(Some(r)) if r.state == super::ShardState::Stored)
                {
                    continue;
                }
                report.checked += 1;
                match disk.fs().read(&shard_path(&id)) {
                    Ok(bytes) => {
                        report.bytes += bytes.len() as u64;
                        if bytes.len() as u64 != record.len || ShardId::of(&bytes) != id {
                            let event = StoreEvent::ShardCorrupt {
                                shard: id,
                                disk: disk.id,
                            };
                            if let StoreError::Corrupt { .. } =
                                self.quarantine_locked(&disk, id, event)
                            {
                                report.corrupt.push(id);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let event = StoreEvent::ShardMissing {
                            shard: id,
                            disk: disk.id,
                        };
                        if let StoreError::Corrupt { .. } = self.quarantine_locked(&disk, id, event)
                        {
                            report.missing.push(id);
                        }
                    }
                    Err(e) => {
                        self.disk_failed(
                            &disk,
                            super::DiskIoError {
                                doing: format!("scrubbing shard {id}"),
                                source: e,
                            },
                        );
                        break;
                    }
                }
            }
        }
        report
    }

    /// Runs scrub on a background thread at no more than `bytes_per_second`
    /// on average, in steps of about `step_bytes`. Stops when the handle is
    /// dropped or [`ScrubHandle::stop`] is called.
    pub fn spawn_scrubber(self: &Arc<Self>, bytes_per_second: u64, step_bytes: u64) -> ScrubHandle {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let share = Arc::new(AtomicU32::new(100));
        let store = Arc::clone(self);
        let thread_stop = Arc::clone(&stop);
        let thread_share = Arc::clone(&share);
        let thread = std::thread::Builder::new()
            .name("cairn-scrub".into())
            .spawn(move || {
                let start = Instant::now();
                let mut pacer = ScrubPacer::new(bytes_per_second);
                let (stopped, wake) = &*thread_stop;
                let mut stopped = lock(stopped);
                loop {
                    // A hot box pauses or slows scrub before anything else.
                    let percent = u64::from(thread_share.load(Ordering::Relaxed).min(100));
                    pacer.set_rate(bytes_per_second * percent / 100);
                    let wait = if percent == 0 {
                        PAUSED_RECHECK
                    } else {
                        pacer.wait(start.elapsed())
                    };
                    if !wait.is_zero() {
                        stopped = wake
                            .wait_timeout(stopped, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if *stopped {
                        return;
                    }
                    if percent == 0 || !pacer.wait(start.elapsed()).is_zero() {
                        continue;
                    }
                    drop(stopped);
                    let report = store.scrub_step(step_bytes);
                    pacer.spent(start.elapsed(), report.bytes.max(1));
                    stopped = lock(&thread_stop.0);
                }
            })
            .expect("spawning the scrub thread");
        ScrubHandle {
            stop,
            share,
            thread: Some(thread),
        }
    }
}

/// Keeps scrub under an average byte rate: after a step that read `n` bytes,
/// the next may start `n / rate` later.
#[derive(Debug, Clone)]
pub struct ScrubPacer {
    bytes_per_second: u64,
    next_start: Duration,
}

impl ScrubPacer {
    /// A pacer for `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            next_start: Duration::ZERO,
        }
    }

    /// How long to wait, at time `now`, before the next step.
    pub fn wait(&self, now: Duration) -> Duration {
        self.next_start.saturating_sub(now)
    }

    /// Changes the rate from the next step on (at least 1 byte per second).
    pub fn set_rate(&mut self, bytes_per_second: u64) {
        self.bytes_per_second = bytes_per_second.max(1);
    }

    /// Records that a step ending at `now` read `bytes`.
    pub fn spent(&mut self, now: Duration, bytes: u64) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        self.next_start = self.next_start.max(now) + cost;
    }
}

/// A running background scrub.
pub struct ScrubHandle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    share: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// How often a paused scrub looks whether it may run again.
const PAUSED_RECHECK: Duration = Duration::from_secs(1);

impl ScrubHandle {
    /// Runs at `percent` of the configured rate from now on (0 pauses it).
    pub fn set_share(&self, percent: u32) {
        self.share.store(percent.min(100), Ordering::Relaxed);
    }

    /// Stops the scrub and waits for the current step to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ScrubHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slowed_pacer_spaces_steps_further_apart() {
        let mut pacer = ScrubPacer::new(8 << 20);
        pacer.spent(Duration::ZERO, 4 << 20);
        assert_eq!(pacer.wait(Duration::ZERO), Duration::from_millis(500));
        pacer.set_rate(4 << 20);
        pacer.spent(Duration::from_millis(500), 4 << 20);
        assert_eq!(
            pacer.wait(Duration::from_millis(500)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn pacer_keeps_the_average_rate_under_the_limit() {
        // Steps of varying size, each started as soon as the pacer allows, over simulated time.
        let rate = 10 << 20;
        let mut pacer = ScrubPacer::new(rate);
        let mut now = Duration::ZERO;
        let mut total = 0u64;
        for step in 0..1000u64 {
            now += pacer.wait(now);
            let bytes = (step % 7 + 1) << 18;
            now += Duration::from_micros(200); // the step itself takes a little time
            pacer.spent(now, bytes);
            total += bytes;
        }
        now += pacer.wait(now);
        let achieved = total as f64 / now.as_secs_f64();
        assert!(
            achieved <= rate as f64 * 1.001,
            "achieved {achieved} > {rate}"
        );
        assert!(
            achieved >= rate as f64 * 0.95,
            "pacer is far slower than allowed: {achieved}"
        );
    }

    #[test]
    fn pacer_does_not_bank_idle_time_into_a_burst() {
        let mut pacer = ScrubPacer::new(1000);
        pacer.spent(Duration::from_secs(100), 1000);
        assert_eq!(pacer.wait(Duration::from_secs(100)), Duration::from_secs(1));
    }
}
