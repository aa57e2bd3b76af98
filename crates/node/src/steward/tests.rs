use super::*;

const K4M2: Coding = Coding { k: 4, m: 2 };
const OWNER: OwnerId = OwnerId([9; 32]);

fn node(i: u8) -> NodeId {
    NodeId([i; 32])
}

/// Segment `seed`: shards on nodes 1..=6 (or `holders`).
fn segment_on(seed: u8, holders: [u8; 6]) -> TrackedSegment {
    TrackedSegment {
        coding: K4M2,
        shard_len: 1024,
        shards: (0..6)
            .map(|i| {
                (
                    ShardId([seed.wrapping_mul(16) + i; 32]),
                    node(holders[usize::from(i)]),
                )
            })
            .collect(),
        lease_until: 5_000_000,
    }
}

fn segment(seed: u8) -> TrackedSegment {
    segment_on(seed, [1, 2, 3, 4, 5, 6])
}

fn policy() -> StewardPolicy {
    StewardPolicy {
        grace_s: 600,
        ..StewardPolicy::default()
    }
}

fn steward_with(segments: &[TrackedSegment]) -> Steward {
    let mut steward = Steward::in_memory(policy());
    steward.track(&OWNER, segments, 0).unwrap();
    steward
}

#[test]
fn a_reboot_within_the_grace_repairs_nothing_a_loss_after_it_does() {
    let mut steward = steward_with(&[segment(1)]);
    let id = segment(1).id();
    steward.node_down(node(3), 100);
    assert!(
        steward.round(699).unwrap().repairs.is_empty(),
        "within the grace"
    );
    steward.node_up(node(3));
    assert!(
        steward.round(5_000).unwrap().repairs.is_empty(),
        "back in time"
    );
    steward.node_down(node(3), 6_000);
    let round = steward.round(6_600).unwrap();
    assert_eq!(round.repairs.len(), 1);
    let task = &round.repairs[0];
    assert_eq!(task.lost, vec![(2, ShardId([18; 32]))]);
    assert_eq!(
        task.sources.len(),
        5,
        "every healthy shard, the first k read"
    );
    assert!(task.sources[..4].iter().all(|(i, _, _)| *i != 2));
    assert!(task.sources.iter().all(|(_, _, holder)| *holder != node(3)));
    assert!(task.avoid.contains(&node(3)));
    assert!(
        steward.round(6_601).unwrap().repairs.is_empty(),
        "handed out once"
    );
    steward.repaired(id, &[(2, node(9))], 6_700).unwrap();
    assert_eq!(
        steward.locate(&OWNER, &[id]).unwrap()[0].as_ref().unwrap()[2],
        node(9)
    );
    assert_eq!(
        steward.redundancy(id, 6_700).unwrap().unwrap().healthy,
        6,
        "full again"
    );
    assert!(steward.round(6_701).unwrap().repairs.is_empty());
}

#[test]
fn at_the_edge_a_down_holder_is_rebuilt_along_with_a_lost_one() {
    let mut steward = steward_with(&[segment(1)]);
    steward.node_down(node(1), 100);
    steward.node_down(node(2), 100);
    assert!(
        steward.round(101).unwrap().repairs.is_empty(),
        "two reboots: wait"
    );
    steward.node_up(node(2));
    steward.node_down(node(2), 750);
    // Node 1 is past the grace, node 2 only rebooting; k healthy remain.
    let round = steward.round(800).unwrap();
    assert_eq!(round.repairs.len(), 1);
    assert_eq!(
        round.repairs[0]
            .lost
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        vec![0, 1],
        "both, for the same k reads"
    );
}

/// Audit tasks handed out until `holder` has been asked `count` times.
fn audits_of(
    steward: &mut Steward,
    holder: NodeId,
    count: usize,
    mut now: u64,
) -> (Vec<AuditTask>, u64) {
    let mut found = Vec::new();
    for _ in 0..10_000 {
        now += 3600;
        let round = steward.round(now).unwrap();
        found.extend(round.audits.into_iter().filter(|t| t.holder == holder));
        if found.len() >= count {
            break;
        }
    }
    (found, now)
}

#[test]
fn a_lying_holder_loses_its_shard_at_once_and_is_marked_bad() {
    let segments: Vec<_> = (1..=4).map(segment).collect();
    let mut steward = steward_with(&segments);
    let (lies, now) = audits_of(&mut steward, node(5), 3, 0);
    // It proved its shards once: from then on a failure is its own.
    let proofs: Vec<_> = lies.iter().map(|t| (*t, AuditOutcome::Passed)).collect();
    steward.audited(&proofs, now).unwrap();
    let results: Vec<_> = lies[..2]
        .iter()
        .map(|t| (*t, AuditOutcome::Failed))
        .collect();
    steward.audited(&results, now).unwrap();
    assert!(!steward.is_bad(&node(5), now));
    assert_eq!(
        steward.round(now).unwrap().repairs.len(),
        2,
        "no grace for a failed audit"
    );
    steward
        .audited(&[(lies[2], AuditOutcome::Failed)], now)
        .unwrap();
    assert!(steward.is_bad(&node(5), now));
    // Its other shards are found by a sweep of its part of the index.
    let round = steward.round(now + 1).unwrap();
    assert_eq!(
        round.repairs.len(),
        2,
        "the bad holder's other shards are lost too"
    );
    assert!(round.repairs.iter().all(|r| r.avoid.contains(&node(5))));
}

#[test]
fn a_client_naming_a_holder_that_never_had_the_shard_harms_no_holder() {
    // An owner (any member may be one) tracks segments whose shards its
    // named holders never received.
    let mut steward = steward_with(&[segment(1), segment(2), segment(3)]);
    let mut now = 0;
    for _ in 0..2000 {
        now += 3600;
        let round = steward.round(now).unwrap();
        let results: Vec<_> = round
            .audits
            .iter()
            .map(|t| (*t, AuditOutcome::NotFound))
            .collect();
        steward.audited(&results, now).unwrap();
    }
    for i in 1..=6 {
        assert!(
            !steward.is_bad(&node(i), now),
            "node {i} was blamed for the client's word"
        );
    }
    assert_eq!(
        steward
            .redundancy(segment(1).id(), now)
            .unwrap()
            .unwrap()
            .healthy,
        0
    );
}

#[test]
fn a_holder_that_proves_but_will_not_serve_is_found() {
    let mut steward = steward_with(&(1..=4).map(segment).collect::<Vec<_>>());
    let mut now = 0;
    let mut refusals = 0;
    let mut rebuilt = HashSet::new();
    for _ in 0..20_000 {
        now += 3600;
        let round = steward.round(now).unwrap();
        rebuilt.extend(round.repairs.iter().map(|r| r.segment));
        let results: Vec<_> = round
            .audits
            .iter()
            .map(|t| {
                let refuses = t.holder == node(3) && t.read;
                refusals += usize::from(refuses);
                let outcome = if refuses {
                    AuditOutcome::Failed
                } else {
                    AuditOutcome::Passed
                };
                (*t, outcome)
            })
            .collect();
        steward.audited(&results, now).unwrap();
        if steward.is_bad(&node(3), now) {
            break;
        }
    }
    assert!(
        steward.is_bad(&node(3), now),
        "passing proofs did not hide refused reads"
    );
    assert_eq!(refusals, 3, "three refused reads in a row");
    rebuilt.extend(
        steward
            .round(now)
            .unwrap()
            .repairs
            .iter()
            .map(|r| r.segment),
    );
    assert_eq!(rebuilt.len(), 4, "its shards are rebuilt elsewhere");
}

#[test]
fn refusing_to_answer_while_up_counts_and_an_error_is_no_way_out() {
    let mut steward = steward_with(&[segment(1), segment(2)]);
    let (asked, now) = audits_of(&mut steward, node(4), 1, 0);
    // Down by gossip: silence is no accusation.
    steward.node_down(node(4), now);
    steward
        .audited(&[(asked[0], AuditOutcome::Unanswered)], now)
        .unwrap();
    steward.node_up(node(4));
    steward.round(now + 10_000).unwrap();
    assert!(!steward.is_bad(&node(4), now + 10_000));
    // Up by gossip, but the steward's own requests go unanswered, again
    // and again, for the whole grace: it counts.
    for ask in 0..6 {
        steward
            .audited(
                &[(asked[0], AuditOutcome::Unanswered)],
                now + 10_000 + ask * 100,
            )
            .unwrap();
    }
    steward.round(now + 10_000 + 599).unwrap();
    assert!(!steward.is_bad(&node(4), now + 10_599), "within the grace");
    // Once it answers, its silence is forgiven.
    let mut forgiven = steward_with(&[segment(1)]);
    for ask in 0..6 {
        forgiven
            .audited(&[(asked[0], AuditOutcome::Unanswered)], now + ask * 100)
            .unwrap();
    }
    forgiven
        .audited(&[(asked[0], AuditOutcome::Passed)], now + 700)
        .unwrap();
    forgiven.round(now + 10_000).unwrap();
    assert!(!forgiven.is_bad(&node(4), now + 10_000));
    let round = steward.round(now + 10_600).unwrap();
    assert!(steward.is_bad(&node(4), now + 10_600));
    assert_eq!(round.repairs.len(), 2, "its shards are rebuilt elsewhere");
}

#[test]
fn a_bad_holder_earns_its_way_back_on_probation() {
    let mut steward = Steward::in_memory(StewardPolicy {
        bad_for_s: 1000,
        probation_passes: 2,
        ..policy()
    });
    steward.track(&OWNER, &[segment(1)], 0).unwrap();
    let (asked, now) = audits_of(&mut steward, node(2), 1, 0);
    steward
        .audited(&[(asked[0], AuditOutcome::Passed)], now)
        .unwrap();
    // One failure makes the slot lost; a repair puts the shard back on
    // node 2 (proven: the steward stored it), and it fails twice more.
    steward
        .audited(&[(asked[0], AuditOutcome::Failed)], now)
        .unwrap();
    for _ in 0..2 {
        steward
            .repaired(
                asked[0].segment,
                &[(usize::from(asked[0].index), node(2))],
                now,
            )
            .unwrap();
        steward
            .audited(&[(asked[0], AuditOutcome::Failed)], now)
            .unwrap();
    }
    assert!(steward.is_bad(&node(2), now));
    steward.round(now + 999).unwrap();
    assert!(steward.is_bad(&node(2), now + 999));
    steward.round(now + 1000).unwrap();
    assert!(!steward.is_bad(&node(2), now + 1000));
    assert!(steward.on_probation(&node(2)));
    // New shards on it are audited first, and passing earns trust back.
    steward
        .track(&OWNER, &[segment_on(2, [2, 7, 8, 9, 10, 11])], now + 1000)
        .unwrap();
    let first = steward.round(now + 1001 + 3600).unwrap();
    let on_probation: Vec<_> = first
        .audits
        .iter()
        .filter(|t| t.holder == node(2))
        .collect();
    assert!(
        !on_probation.is_empty(),
        "audited first: {:?}",
        first.audits
    );
    let passes: Vec<_> = on_probation
        .iter()
        .map(|t| (**t, AuditOutcome::Passed))
        .collect();
    steward.audited(&passes, now + 5000).unwrap();
    steward.audited(&passes, now + 5000).unwrap();
    assert!(!steward.on_probation(&node(2)), "trusted again");
    // A failure on probation would have ended it at once, with a longer spell.
    let mut again = Steward::in_memory(StewardPolicy {
        bad_for_s: 1000,
        probation_passes: 2,
        ..policy()
    });
    again.track(&OWNER, &[segment(1)], 0).unwrap();
    let (asked, now) = audits_of(&mut again, node(2), 1, 0);
    let slot = (usize::from(asked[0].index), node(2));
    for _ in 0..3 {
        again.repaired(asked[0].segment, &[slot], now).unwrap();
        again
            .audited(&[(asked[0], AuditOutcome::Failed)], now)
            .unwrap();
    }
    assert!(again.is_bad(&node(2), now));
    again.round(now + 1000).unwrap();
    again
        .repaired(asked[0].segment, &[slot], now + 1000)
        .unwrap();
    again
        .audited(&[(asked[0], AuditOutcome::Failed)], now + 1000)
        .unwrap();
    assert!(
        again.is_bad(&node(2), now + 2999),
        "the second spell is twice as long"
    );
    assert!(!again.is_bad(&node(2), now + 3000));
}

#[test]
fn a_draining_holder_is_emptied_one_shard_per_segment_at_a_time() {
    let segments: Vec<_> = (1..=3).map(segment).collect();
    let mut steward = steward_with(&segments);
    assert!(steward.round(10).unwrap().moves.is_empty());
    steward.node_draining(node(2), true);
    assert_eq!(steward.held_by(&node(2)).unwrap(), 3);
    let moves = steward.round(10).unwrap().moves;
    assert_eq!(moves.len(), 3, "one per segment");
    for task in &moves {
        assert_eq!(task.from, node(2));
        assert!(task.avoid.contains(&node(2)), "never back onto it");
        assert_eq!(task.keep.len(), 5);
    }
    let round = steward.round(11).unwrap();
    assert!(round.moves.is_empty(), "handed out once");
    assert!(round.repairs.is_empty(), "draining is not a loss");
    for task in &moves {
        steward
            .repaired(task.segment, &[(task.shard.0, node(9))], 12)
            .unwrap();
    }
    assert_eq!(steward.held_by(&node(2)).unwrap(), 0);
    assert!(!steward.holds_any(&node(2)).unwrap());
    assert!(steward.round(13).unwrap().moves.is_empty());
    for segment in &segments {
        assert_eq!(
            steward
                .redundancy(segment.id(), 13)
                .unwrap()
                .unwrap()
                .healthy,
            6
        );
    }
}

#[test]
fn every_shard_is_audited_within_the_period_and_some_audits_read_whole_shards() {
    let period = 8 * 24 * 3600;
    let mut steward = Steward::in_memory(StewardPolicy {
        audit_period_s: period,
        audits_per_holder: 2,
        ..policy()
    });
    let segments: Vec<_> = (0..200u64)
        .map(|s| TrackedSegment {
            shards: (0..6u64)
                .map(|i| {
                    let id = *blake3::hash(&(s * 16 + i).to_le_bytes()).as_bytes();
                    (ShardId(id), node(i as u8 + 1))
                })
                .collect(),
            ..segment(0)
        })
        .collect();
    for batch in segments.chunks(64) {
        steward.track(&OWNER, batch, 0).unwrap();
    }
    let mut last: HashMap<ShardId, u64> = HashMap::new();
    let mut worst_gap = 0;
    let (mut total, mut reads) = (0, 0);
    let tick = 600;
    let mut now = 0;
    while now < 3 * period {
        now += tick;
        let round = steward.round(now).unwrap();
        for task in &round.audits {
            total += 1;
            reads += usize::from(task.read);
            let before = last.insert(task.shard, now).unwrap_or(0);
            worst_gap = worst_gap.max(now - before);
        }
        let results: Vec<_> = round
            .audits
            .iter()
            .map(|t| (*t, AuditOutcome::Passed))
            .collect();
        steward.audited(&results, now).unwrap();
    }
    assert_eq!(last.len(), 200 * 6, "every shard was audited");
    assert!(
        worst_gap <= period,
        "a shard waited {worst_gap} s for its audit (period {period} s)"
    );
    // One audit in 16 of each holder reads the whole shard.
    assert_eq!(reads, total / 16, "{reads} whole reads in {total} audits");
}

#[test]
fn renewals_come_in_batches_per_holder_and_a_missing_shard_is_lost_there() {
    let mut steward = Steward::in_memory(StewardPolicy {
        lease_s: 1000,
        renew_before_s: 300,
        ..policy()
    });
    let mut segments: Vec<_> = (1..=3).map(segment).collect();
    for s in &mut segments {
        s.lease_until = 1000;
    }
    steward.track(&OWNER, &segments, 0).unwrap();
    assert!(
        steward.round(600).unwrap().renewals.is_empty(),
        "not due yet"
    );
    let batch = steward.round(701).unwrap().renewals;
    assert_eq!(batch.holders.len(), 6, "one batch per holder");
    assert!(batch.holders.iter().all(|(_, shards)| shards.len() == 3));
    assert!(
        steward.round(702).unwrap().renewals.is_empty(),
        "handed out once"
    );
    let mut outcomes = HashMap::new();
    for (holder, shards) in &batch.holders {
        for shard in shards {
            let outcome = if *holder == node(6) && *shard == ShardId([21; 32]) {
                RenewOutcome::NotFound
            } else {
                RenewOutcome::Renewed
            };
            outcomes.insert((*holder, *shard), outcome);
        }
    }
    steward.renewed(&batch, &outcomes, 703).unwrap();
    let round = steward.round(704).unwrap();
    assert!(round.renewals.is_empty(), "two segments took the new lease");
    assert_eq!(
        round.repairs.len(),
        1,
        "the shard its holder lost is rebuilt"
    );
    assert_eq!(round.repairs[0].lost, vec![(5, ShardId([21; 32]))]);
}

#[test]
fn a_reported_disk_loss_rebuilds_only_its_shards_and_is_no_accusation() {
    // Node 3 holds a shard of each of 40 segments; 10 were on its lost disk.
    let segments: Vec<_> = (0..40).map(segment).collect();
    let mut steward = steward_with(&segments);
    let lost: Vec<(ShardId, Missing)> = segments[..10]
        .iter()
        .map(|s| (s.shards[2].0, Missing::Gone))
        .collect();
    steward.missing(node(3), lost, 77);
    assert!(steward.missing_pending(&node(3)));
    let round = steward.round(100).unwrap();
    let mut rebuilt: Vec<SegmentId> = round.repairs.iter().map(|r| r.segment).collect();
    rebuilt.sort();
    let mut expected: Vec<SegmentId> = segments[..10].iter().map(TrackedSegment::id).collect();
    expected.sort();
    assert_eq!(rebuilt, expected, "exactly the lost disk's shards");
    assert!(
        round
            .repairs
            .iter()
            .all(|r| r.lost.len() == 1 && r.lost[0].0 == 2)
    );
    assert!(!steward.is_bad(&node(3), 100));
    assert!(!steward.missing_pending(&node(3)), "the sweep is done");
    assert_eq!(steward.missing_read(&node(3)), 77);
    // An offline disk counts after the grace, and not if it comes back.
    let offline: Vec<(ShardId, Missing)> = segments[10..15]
        .iter()
        .map(|s| (s.shards[2].0, Missing::Offline(200)))
        .collect();
    steward.missing(node(3), offline.clone(), 90);
    assert!(
        steward.round(300).unwrap().repairs.is_empty(),
        "within the grace"
    );
    let back: Vec<(ShardId, Missing)> = offline.iter().map(|(s, _)| (*s, Missing::Back)).collect();
    steward.missing(node(3), back, 95);
    steward.round(301).unwrap();
    assert!(
        steward.round(900).unwrap().repairs.is_empty(),
        "back within the grace"
    );
    for segment in &segments[10..15] {
        assert_eq!(
            steward
                .redundancy(segment.id(), 900)
                .unwrap()
                .unwrap()
                .healthy,
            6
        );
    }
}

#[test]
fn only_the_owner_s_own_segments_are_touched_and_caps_hold() {
    let mut steward = Steward::in_memory(StewardPolicy {
        max_segments_per_owner: 3,
        max_owners: 2,
        ..policy()
    });
    let other = OwnerId([8; 32]);
    assert_eq!(
        steward.track(&OWNER, &[segment(1), segment(2)], 0).unwrap(),
        2
    );
    // The same segment under another owner: its row stays the first owner's.
    assert_eq!(steward.track(&other, &[segment(1)], 0).unwrap(), 0);
    assert_eq!(
        steward.locate(&other, &[segment(1).id()]).unwrap(),
        vec![None]
    );
    assert_eq!(steward.untrack(&other, &[segment(1).id()]).unwrap(), 0);
    assert!(steward.locate(&OWNER, &[segment(1).id()]).unwrap()[0].is_some());
    let full = steward
        .track(&OWNER, &[segment(3), segment(4)], 0)
        .unwrap_err();
    assert!(
        matches!(
            full,
            StewardError::OwnerFull {
                limit: 3,
                would: 4,
                ..
            }
        ),
        "{full}"
    );
    assert_eq!(steward.count(&OWNER).unwrap(), 2, "all or nothing");
    steward.track(&other, &[segment(5)], 0).unwrap();
    let third = steward
        .track(&OwnerId([7; 32]), &[segment(6)], 0)
        .unwrap_err();
    assert!(
        matches!(third, StewardError::TooManyOwners { limit: 2 }),
        "{third}"
    );
    let mut bad = segment(7);
    bad.shards.pop();
    assert!(matches!(
        steward.track(&OWNER, &[bad], 0),
        Err(StewardError::BadSegment { index: 0, .. })
    ));
    assert_eq!(steward.untrack(&OWNER, &[segment(1).id()]).unwrap(), 1);
    assert_eq!(steward.len(), 2);
}

#[test]
fn the_table_survives_a_restart_and_refuses_a_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.redb");
    {
        let mut steward = Steward::open(&path, policy()).unwrap();
        steward.track(&OWNER, &[segment(1), segment(2)], 0).unwrap();
        steward.node_draining(node(4), true);
        steward.round(1).unwrap();
    }
    let mut steward = Steward::open(&path, policy()).unwrap();
    assert_eq!(steward.len(), 2);
    assert_eq!(steward.count(&OWNER).unwrap(), 2);
    // The id index is rebuilt from the table.
    assert_eq!(
        steward.locate(&OWNER, &[segment(2).id()]).unwrap()[0]
            .as_ref()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(steward.holders().len(), 6);
    // The moves handed out before the restart come up again once their
    // hour is up (nobody reported back).
    assert!(steward.round(2).unwrap().moves.is_empty());
    assert_eq!(steward.round(3601).unwrap().moves.len(), 2);
    drop(steward);
    // A count that drifted from the rows is put right, not fatal.
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("segments", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(Steward::open(&path, policy()).unwrap().len(), 2);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", FORMAT + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let refused = Steward::open(&path, policy()).err().unwrap();
    assert!(matches!(refused, StewardError::Format { .. }), "{refused}");
}

#[test]
fn requests_committed_together_are_each_taken_or_refused_alone() {
    let mut steward = Steward::in_memory(StewardPolicy {
        max_segments_per_owner: 3,
        max_owners: 2,
        ..policy()
    });
    let other = OwnerId([8; 32]);
    let mut bad = segment(9);
    bad.shards.pop();
    let commits = steward.commits();
    let answers = steward
        .track_many(
            &[
                (OWNER, vec![segment(1), segment(2), segment(1)]),
                // Over the cap with what the first request added: refused whole.
                (OWNER, vec![segment(3), segment(4)]),
                (other, vec![bad]),
                // The first owner's segment: not the other owner's to track.
                (other, vec![segment(1), segment(5)]),
                (OwnerId([7; 32]), vec![segment(6)]),
                (OWNER, vec![segment(2), segment(3)]),
            ],
            0,
        )
        .unwrap();
    assert_eq!(steward.commits(), commits + 1, "one durable commit");
    let shown: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Ok(count) => count.to_string(),
            Err(StewardError::OwnerFull { would, .. }) => format!("full {would}"),
            Err(StewardError::BadSegment { index, .. }) => format!("bad {index}"),
            Err(StewardError::TooManyOwners { .. }) => "owners".into(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(shown, ["2", "full 4", "bad 0", "1", "owners", "3"]);
    assert_eq!(steward.len(), 4);
    assert_eq!(steward.count(&OWNER).unwrap(), 3);
    assert_eq!(steward.count(&other).unwrap(), 1);
    assert_eq!(
        steward
            .locate(&other, &[segment(1).id(), segment(5).id()])
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        [false, true]
    );
    assert!(steward.locate(&OWNER, &[segment(4).id()]).unwrap()[0].is_none());
}

#[test]
fn requests_from_many_threads_share_commits_and_each_gets_its_answer() {
    let table = std::sync::Mutex::new(Steward::in_memory(policy()));
    // Opening the table commits too; only the requests' commits count here.
    let opened = table.lock().unwrap().commits();
    let group = TrackGroup::new();
    std::thread::scope(|scope| {
        for thread in 0..8u8 {
            let (table, group) = (&table, &group);
            scope.spawn(move || {
                let owner = OwnerId([100 + thread; 32]);
                for r in 0..6u8 {
                    let mut mine = segment(1);
                    for (i, (shard, _)) in mine.shards.iter_mut().enumerate() {
                        *shard = ShardId([thread, r, i as u8, 0].repeat(8).try_into().unwrap());
                    }
                    let count = group.track(table, owner, vec![mine], || 0).unwrap();
                    assert_eq!(count, u64::from(r) + 1, "its owner's own count");
                }
            });
        }
    });
    let steward = table.into_inner().unwrap();
    assert_eq!(steward.len(), 48);
    let commits = steward.commits() - opened;
    assert!(
        commits <= 48,
        "{commits} commits for 48 requests: a request committed twice"
    );
}

#[test]
fn a_format_1_table_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.redb");
    {
        let mut steward = Steward::open(&path, policy()).unwrap();
        steward.track(&OWNER, &[segment(1), segment(2)], 0).unwrap();
    }
    // Turn it into what format 1 kept: a durable id → seq index.
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let rows = txn.open_table(SEGMENTS).unwrap();
            let mut ids = txn.open_table(SEGMENT_IDS_V1).unwrap();
            for entry in rows.iter().unwrap() {
                let (seq, row) = entry.unwrap();
                let row = SegmentRow::decode(row.value()).unwrap();
                ids.insert(row.id, seq.value()).unwrap();
            }
            txn.open_table(META).unwrap().insert("format", 1).unwrap();
        }
        txn.delete_table(ID_PREFIXES).unwrap();
        txn.commit().unwrap();
    }
    let mut steward = Steward::open(&path, policy()).unwrap();
    assert_eq!(steward.len(), 2);
    assert!(steward.locate(&OWNER, &[segment(2).id()]).unwrap()[0].is_some());
    assert_eq!(
        steward.track(&OWNER, &[segment(1), segment(3)], 0).unwrap(),
        3
    );
    drop(steward);
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
    assert!(
        txn.open_table(SEGMENT_IDS_V1).is_err(),
        "the old index is gone"
    );
}

#[test]
fn repairs_that_end_together_are_recorded_in_one_commit() {
    let mut steward = steward_with(&[segment(1), segment(2)]);
    steward.node_down(node(3), 100);
    let round = steward.round(800).unwrap();
    assert_eq!(round.repairs.len(), 2);
    let commits = steward.commits();
    steward
        .repairs_ended(
            &[
                RepairEnd::Done {
                    segment: segment(1).id(),
                    moved: vec![(2, node(9))],
                },
                RepairEnd::Failed {
                    segment: segment(2).id(),
                    refused: vec![],
                    unreachable: vec![node(4)],
                },
            ],
            801,
        )
        .unwrap();
    assert_eq!(steward.commits(), commits + 1);
    assert_eq!(
        steward.locate(&OWNER, &[segment(1).id()]).unwrap()[0]
            .as_ref()
            .unwrap()[2],
        node(9)
    );
    // The failed one is handed out again after its backoff, the done one not.
    let again = steward.round(801 + 3600).unwrap();
    assert_eq!(
        again.repairs.iter().map(|t| t.segment).collect::<Vec<_>>(),
        [segment(2).id()]
    );
}

#[test]
fn the_end_of_a_down_holder_s_grace_is_known_until_its_round() {
    let mut steward = steward_with(&[segment(1)]);
    assert_eq!(steward.next_grace_end(), None);
    steward.node_down(node(3), 100);
    steward.node_down(node(5), 50);
    assert_eq!(steward.next_grace_end(), Some(650));
    steward.round(650).unwrap();
    assert_eq!(steward.next_grace_end(), Some(700), "node 5's is done");
    steward.round(700).unwrap();
    assert_eq!(steward.next_grace_end(), None);
}

#[test]
fn a_moved_record_re_points_only_the_signers_shards_and_nothing_is_rebuilt() {
    let other = OwnerId([5; 32]);
    let mut steward = steward_with(&[segment(1), segment(2)]);
    steward.track(&other, &[segment(3)], 0).unwrap();
    // Node 3 was re-imaged: it is down, and its disks now answer as node 9.
    steward.node_down(node(3), 100);
    // In batches of one entry: the cursor carries on where the last stopped.
    let (mut total, mut cursor) = (0, None);
    loop {
        let (count, next) = steward.moved(&OWNER, node(3), node(9), cursor, 1).unwrap();
        total += count;
        match next {
            Some(at) => cursor = Some(at),
            None => break,
        }
    }
    assert_eq!(total, 2, "one shard of each of the owner's two segments");
    for seed in [1, 2] {
        let holders = steward.locate(&OWNER, &[segment(seed).id()]).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(holders[2], node(9));
    }
    let others = steward.locate(&other, &[segment(3).id()]).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(
        others[2],
        node(3),
        "another owner's shard is not this owner's to move"
    );
    assert_eq!(steward.held_by(&node(9)).unwrap(), 2);
    assert_eq!(steward.held_by(&node(3)).unwrap(), 1);
    // Past the grace, only the other owner's shard at node 3 is rebuilt.
    let round = steward.round(5_000).unwrap();
    assert_eq!(round.repairs.len(), 1, "{:?}", round.repairs);
    assert_eq!(round.repairs[0].segment, segment(3).id());
    // The re-pointed segments are audited first, at their new holder.
    assert!(
        round
            .audits
            .iter()
            .any(|a| a.holder == node(9) && a.segment == segment(1).id()),
        "{:?}",
        round.audits
    );
    // A second time changes nothing.
    assert_eq!(
        steward.moved(&OWNER, node(3), node(9), None, 100).unwrap(),
        (0, None)
    );
}
