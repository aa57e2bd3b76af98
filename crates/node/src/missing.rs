//! The node's report of shards it no longer has, for its stewards: when a
//! disk fails or goes offline, the shards it held are listed here (and
//! listed again as back when an offline disk returns), so a steward
//! rebuilds exactly those shards instead of finding them one failed audit
//! at a time — and does not take an honest loss for a lie.
//!
//! Plain code: numbered entries in order, the oldest dropped past a bound
//! (a steward that fell that far behind sees `first` move past what it
//! read and sweeps this node's shards by audit instead). Kept in memory:
//! after a restart a node has no report of disks it lost before.

use std::collections::VecDeque;
use std::sync::Mutex;

use cairn_host::lock;
use cairn_proto::{MissingShard, MissingState, ShardId};

/// Entries kept, at most (about 48 MiB).
pub const MAX_ENTRIES: usize = 1 << 20;

/// The report.
#[derive(Debug, Default)]
pub struct MissingLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<MissingShard>,
    next: u64,
}

impl MissingLog {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists `shards` with what became of them.
    pub fn record(&self, shards: &[ShardId], state: MissingState) {
        let mut inner = lock(&self.inner);
        for shard in shards {
            let seq = inner.next;
            inner.next += 1;
            inner.entries.push_back(MissingShard {
                seq,
                shard: *shard,
                state,
            });
            if inner.entries.len() > MAX_ENTRIES {
                inner.entries.pop_front();
            }
        }
    }

    /// Up to `max` entries numbered `after` or later, the first number
    /// still kept, and the number the next entry will get.
    pub fn page(&self, after: u64, max: usize) -> (Vec<MissingShard>, u64, u64) {
        let inner = lock(&self.inner);
        let first = inner.entries.front().map_or(inner.next, |e| e.seq);
        let skip = after.saturating_sub(first) as usize;
        let shards = inner.entries.iter().skip(skip).take(max).copied().collect();
        (shards, first, inner.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_entries_and_say_where_the_report_starts() {
        let log = MissingLog::new();
        assert_eq!(log.page(0, 10), (vec![], 0, 0));
        let shards: Vec<ShardId> = (0..5).map(|i| ShardId([i; 32])).collect();
        log.record(&shards, MissingState::Offline(7));
        log.record(&shards[..2], MissingState::Back);
        let (page, first, next) = log.page(0, 4);
        assert_eq!((page.len(), first, next), (4, 0, 7));
        assert_eq!(page[3].shard, ShardId([3; 32]));
        let (rest, _, _) = log.page(4, 10);
        assert_eq!(
            rest.iter().map(|e| (e.seq, e.state)).collect::<Vec<_>>(),
            vec![
                (4, MissingState::Offline(7)),
                (5, MissingState::Back),
                (6, MissingState::Back)
            ]
        );
        assert!(log.page(7, 10).0.is_empty(), "nothing new");
    }
}
