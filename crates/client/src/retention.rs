//! Which snapshots a retention policy keeps, as restic's `forget` decides
//! it: the newest `last`, and the newest snapshot of each of the newest
//! `daily` days, `weekly` ISO weeks and `monthly` months that have one.
//! Plain code on given times (days are UTC); the newest snapshot is always
//! kept, so a forget never leaves the owner with nothing.

/// How many snapshots of each kind to keep. Zero keeps none of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// The newest N snapshots.
    pub last: usize,
    /// The newest snapshot of each of the newest N days.
    pub daily: usize,
    /// … of each of the newest N ISO weeks.
    pub weekly: usize,
    /// … of each of the newest N months.
    pub monthly: usize,
}

impl Policy {
    /// Whether it names nothing to keep (then only the newest is kept).
    pub fn is_empty(&self) -> bool {
        self.last + self.daily + self.weekly + self.monthly == 0
    }
}

/// The bucket (day, week, month) a time falls in.
type Bucket = fn(u64) -> i64;

/// For snapshots taken at `times` (oldest first), which to keep.
pub fn keep(times: &[u64], policy: Policy) -> Vec<bool> {
    let mut kept = vec![false; times.len()];
    if let Some(last) = kept.last_mut() {
        *last = true;
    }
    let newest_first: Vec<usize> = (0..times.len()).rev().collect();
    for &i in newest_first.iter().take(policy.last) {
        kept[i] = true;
    }
    let buckets: [(usize, Bucket); 3] = [
        (policy.daily, |t| (t / 86_400) as i64),
        (policy.weekly, iso_week),
        (policy.monthly, month),
    ];
    for (count, bucket_of) in buckets {
        let mut seen: Vec<i64> = Vec::new();
        for &i in &newest_first {
            if seen.len() == count {
                break;
            }
            let bucket = bucket_of(times[i]);
            if !seen.contains(&bucket) {
                // The newest snapshot of this bucket (we walk newest first).
                seen.push(bucket);
                kept[i] = true;
            }
        }
    }
    kept
}

/// A number per ISO week (Monday to Sunday): 1970-01-01 was a Thursday.
fn iso_week(t: u64) -> i64 {
    ((t / 86_400) as i64 + 3).div_euclid(7)
}

/// A number per calendar month (year × 12 + month), from the civil date.
fn month(t: u64) -> i64 {
    let (year, month, _) = civil_from_days((t / 86_400) as i64);
    year * 12 + i64::from(month)
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// as Howard Hinnant's `civil_from_days` computes it.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2024-02-29, a leap day.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        // 2026-12-02.
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
    }

    #[test]
    fn the_newest_is_always_kept() {
        assert_eq!(
            keep(&[1, 2, 3], Policy::default()),
            vec![false, false, true]
        );
        assert!(
            keep(
                &[],
                Policy {
                    last: 3,
                    ..Policy::default()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn last_keeps_the_newest_n() {
        let kept = keep(
            &[1, 2, 3, 4],
            Policy {
                last: 2,
                ..Policy::default()
            },
        );
        assert_eq!(kept, vec![false, false, true, true]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        // Two snapshots a day for five days.
        let times: Vec<u64> = (0..5)
            .flat_map(|d| [d * DAY + 100, d * DAY + 200])
            .collect();
        let kept = keep(
            &times,
            Policy {
                daily: 3,
                ..Policy::default()
            },
        );
        let expected: Vec<bool> = (0..10).map(|i| i >= 4 && i % 2 == 1).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn weekly_and_monthly_buckets() {
        // One snapshot a day for 70 days from 2026-01-01 (a Thursday).
        let start = 20_454 * DAY;
        let times: Vec<u64> = (0..70).map(|d| start + d * DAY).collect();
        let weekly = keep(
            &times,
            Policy {
                weekly: 2,
                ..Policy::default()
            },
        );
        // The newest day, and the Sunday that closed the week before it.
        let kept: Vec<usize> = (0..70).filter(|&i| weekly[i]).collect();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1], 69);
        assert_eq!(iso_week(times[kept[0]]) + 1, iso_week(times[69]));
        assert_eq!(iso_week(times[kept[0]] + DAY), iso_week(times[69]));
        let monthly = keep(
            &times,
            Policy {
                monthly: 12,
                ..Policy::default()
            },
        );
        // January's last day, February's last day, and March's newest.
        let kept: Vec<usize> = (0..70).filter(|&i| monthly[i]).collect();
        assert_eq!(kept, vec![30, 58, 69]);
    }
}
