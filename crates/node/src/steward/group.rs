//! Group commit for Track: requests that arrive while a commit is being
//! made wait and then share the next one.
//!
//! A durable commit costs a fixed few milliseconds (pages written, the
//! file synced) on top of its rows, so one request per commit caps Track
//! far below what the table can take. The owner's client keeps several
//! requests in flight; the first waiting request's thread commits them all
//! and hands each its own answer. Plain threads and a condition variable:
//! callers are blocking tasks already.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};

use cairn_proto::ids::OwnerId;

use super::{Steward, StewardError, TrackedSegment};

/// Requests one commit takes at most (a request is at most `MAX_TRACK`
/// segments), so one commit stays a bounded amount of work.
const MAX_GROUP: usize = 16;

type Answer = Result<u64, StewardError>;

#[derive(Default)]
struct State {
    waiting: Vec<(u64, OwnerId, Vec<TrackedSegment>)>,
    answers: HashMap<u64, Answer>,
    committing: bool,
    next_ticket: u64,
}

/// Shares Track commits between requests in flight at once.
#[derive(Default)]
pub struct TrackGroup {
    state: Mutex<State>,
    changed: Condvar,
}

impl TrackGroup {
    /// A group with nothing waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks `segments` for `owner` in `table`, in a commit shared with
    /// whatever else is waiting; returns this request's own answer.
    pub fn track(
        &self,
        table: &Mutex<Steward>,
        owner: OwnerId,
        segments: Vec<TrackedSegment>,
        now: impl Fn() -> u64,
    ) -> Answer {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, owner, segments));
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.committing {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Commit for everyone waiting (this request among them: its
            // answer is not in yet, so it still waits).
            state.committing = true;
            let take = state.waiting.len().min(MAX_GROUP);
            let batch: Vec<_> = state.waiting.drain(..take).collect();
            drop(state);
            let requests: Vec<(OwnerId, &[TrackedSegment])> = batch
                .iter()
                .map(|(_, owner, segments)| (*owner, segments.as_slice()))
                .collect();
            let answers = table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .track_many(&requests, now());
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match answers {
                Ok(answers) => {
                    for ((ticket, _, _), answer) in batch.iter().zip(answers) {
                        state.answers.insert(*ticket, answer);
                    }
                }
                Err(failed) => {
                    for (ticket, _, _) in &batch {
                        state.answers.insert(*ticket, Err(failed.clone()));
                    }
                }
            }
            state.committing = false;
            self.changed.notify_all();
        }
    }
}
