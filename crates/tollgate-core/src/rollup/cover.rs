//! Which rollup rows answer a bucketed query, and how they fold into the buckets.
//!
//! Every UTC day inside the range is read from the day rollup. A day that no bucket boundary
//! cuts belongs to its bucket. A day cut by one boundary (a local midnight in a zone off UTC) is
//! counted whole on one side and the smaller side of the cut is *transferred*: its hour rows (and
//! minute rows, for 30/45-minute offsets) are added to one bucket and subtracted from the other.
//! The rest of the range (its ragged ends, and days cut more than once) is read as hours with
//! minutes at the edges. So a UTC day/week/month query reads only day rows, and a 30-day query in
//! New York reads 30 days plus 5 hours per midnight instead of 720 hours.

use std::collections::BTreeMap;

use super::{Grain, GroupKey, RollupRow, Segment, Sums};
use crate::calendar::{DAY_MS, HOUR_MS, MINUTE_MS};

fn floor(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w
}

fn ceil(t: i64, w: i64) -> i64 {
    -(-t).div_euclid(w) * w
}

/// Where a segment's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To the bucket holding the row's `bucket_ms`, plus `shift`.
    Split { shift: usize },
    /// Added to bucket `to`, subtracted from bucket `from`.
    Transfer { to: usize, from: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub segments: Vec<Segment>,
    pub targets: Vec<Target>,
}

impl Plan {
    fn push(&mut self, bounds: &[i64], grain: Grain, start: i64, end: i64, target: Target) {
        if start >= end {
            return;
        }
        if let (Some(last), Some(&last_target)) = (self.segments.last_mut(), self.targets.last()) {
            if last.grain == grain && last.end_ms == start && last_target == target {
                if let Target::Split { .. } = target {
                    if bucket_of(bounds, start) != bucket_of(bounds, last.start_ms) {
                        last.split = true;
                    }
                    last.end_ms = end;
                    return;
                }
            }
        }
        let split = matches!(target, Target::Split { .. })
            && bucket_of(bounds, start) != bucket_of(bounds, end - 1);
        self.segments.push(Segment {
            grain,
            start_ms: start,
            end_ms: end,
            split,
        });
        self.targets.push(target);
    }

    /// `[x, y)` as hours inside, minutes at its edges.
    fn hours_and_minutes(&mut self, bounds: &[i64], x: i64, y: i64, target: Target) {
        let (h0, h1) = (ceil(x, HOUR_MS), floor(y, HOUR_MS));
        if h0 < h1 {
            self.push(bounds, Grain::Minute, x, h0, target);
            self.push(bounds, Grain::Hour, h0, h1, target);
            self.push(bounds, Grain::Minute, h1, y, target);
        } else {
            self.push(bounds, Grain::Minute, x, y, target);
        }
    }

    /// `[x, y)` cut at the bucket boundaries, each piece into its bucket.
    fn pieces(&mut self, bounds: &[i64], x: i64, y: i64) {
        let mut a = x;
        while a < y {
            let next = bounds.partition_point(|&b| b <= a);
            let b = bounds.get(next).copied().unwrap_or(y).min(y);
            self.hours_and_minutes(bounds, a, b, Target::Split { shift: 0 });
            a = b;
        }
    }
}

/// Boundaries floored to the minute (the finest rollup) and made strictly ascending.
pub fn align(bounds: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = bounds.iter().map(|&b| floor(b, MINUTE_MS)).collect();
    out.dedup();
    out
}

/// The plan for the buckets `bounds[i]..bounds[i+1]` (strictly ascending, minute-aligned).
pub fn plan(bounds: &[i64]) -> Plan {
    let mut p = Plan::default();
    let n = bounds.len();
    if n < 2 {
        return p;
    }
    let (lo, hi) = (bounds[0], bounds[n - 1]);
    let (d0, d1) = (ceil(lo, DAY_MS), floor(hi, DAY_MS));
    if d0 >= d1 {
        p.pieces(bounds, lo, hi);
        return p;
    }
    p.pieces(bounds, lo, d0);
    // Whole days: runs that no boundary cuts are one segment; only cut days need care, so the
    // work is proportional to the buckets, not to the days (all time is 3 million days).
    let mut d = d0;
    while d < d1 {
        let first = bounds.partition_point(|&b| b <= d);
        // The first day from `d` that a boundary cuts (boundaries at midnight UTC cut nothing).
        let cut_day = bounds[first..]
            .iter()
            .copied()
            .find(|&b| b % DAY_MS != 0)
            .map(|b| floor(b, DAY_MS))
            .filter(|&c| c < d1)
            .unwrap_or(d1);
        if d < cut_day {
            p.push(bounds, Grain::Day, d, cut_day, Target::Split { shift: 0 });
            d = cut_day;
            continue;
        }
        let e = d + DAY_MS;
        // Boundaries strictly inside this day (ascending bounds: a binary search each side).
        let last = bounds.partition_point(|&b| b < e);
        match last - first {
            0 => p.push(bounds, Grain::Day, d, e, Target::Split { shift: 0 }),
            1 => {
                // Cut once at `t`, between bucket k - 1 (before) and k (after).
                let (k, t) = (first, bounds[first]);
                if t - d <= e - t {
                    // Count the day in k; move [d, t) back to k - 1.
                    p.push(bounds, Grain::Day, d, e, Target::Split { shift: 1 });
                    p.hours_and_minutes(bounds, d, t, Target::Transfer { to: k - 1, from: k });
                } else {
                    // Count the day in k - 1; move [t, e) on to k.
                    p.push(bounds, Grain::Day, d, e, Target::Split { shift: 0 });
                    p.hours_and_minutes(bounds, t, e, Target::Transfer { to: k, from: k - 1 });
                }
            }
            _ => p.pieces(bounds, d, e),
        }
        d = e;
    }
    p.pieces(bounds, d1, hi);
    p
}

/// The bucket holding `t`, given ascending bounds.
pub fn bucket_of(bounds: &[i64], t: i64) -> Option<usize> {
    let i = bounds.partition_point(|&b| b <= t);
    (i > 0 && i < bounds.len()).then(|| i - 1)
}

/// Sums per (bucket, group) from the rows a plan read. A (bucket, group) with no requests left
/// after transfers had no records (every record adds one request) and is dropped.
pub fn fold(
    plan: &Plan,
    bounds: &[i64],
    rows: Vec<RollupRow>,
) -> BTreeMap<(usize, GroupKey), Sums> {
    let mut out: BTreeMap<(usize, GroupKey), Sums> = BTreeMap::new();
    for r in rows {
        match plan.targets.get(r.segment) {
            Some(Target::Split { shift }) => {
                if let Some(i) = bucket_of(bounds, r.bucket_ms) {
                    out.entry((i + shift, r.group)).or_default().add(&r.sums);
                }
            }
            Some(Target::Transfer { to, from }) => {
                out.entry((*from, r.group.clone()))
                    .or_default()
                    .sub(&r.sums);
                out.entry((*to, r.group)).or_default().add(&r.sums);
            }
            None => {}
        }
    }
    out.retain(|_, v| v.requests != 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every minute of the range, as the plan counts it, lands in exactly its own bucket once.
    fn check_exact(bounds: &[i64]) -> Plan {
        let p = plan(bounds);
        assert_eq!(p.segments.len(), p.targets.len());
        let mut weight: BTreeMap<(i64, usize), i64> = BTreeMap::new();
        for (s, t) in p.segments.iter().zip(&p.targets) {
            assert_eq!(s.start_ms % s.grain.width_ms(), 0, "{s:?}");
            assert_eq!(s.end_ms % s.grain.width_ms(), 0, "{s:?}");
            let mut r = s.start_ms;
            while r < s.end_ms {
                let row_bucket = if s.split { r } else { s.start_ms };
                let mut m = r;
                while m < r + s.grain.width_ms() {
                    match *t {
                        Target::Split { shift } => {
                            *weight
                                .entry((m, bucket_of(bounds, row_bucket).unwrap() + shift))
                                .or_default() += 1
                        }
                        Target::Transfer { to, from } => {
                            *weight.entry((m, to)).or_default() += 1;
                            *weight.entry((m, from)).or_default() -= 1;
                        }
                    }
                    m += MINUTE_MS;
                }
                r += s.grain.width_ms();
            }
        }
        weight.retain(|_, w| *w != 0);
        let mut m = bounds[0];
        let mut minutes = 0;
        while m < bounds[bounds.len() - 1] {
            assert_eq!(
                weight.get(&(m, bucket_of(bounds, m).unwrap())),
                Some(&1),
                "minute {m}"
            );
            minutes += 1;
            m += MINUTE_MS;
        }
        assert_eq!(weight.len(), minutes, "a minute counted outside its bucket");
        p
    }

    fn count(p: &Plan, g: Grain) -> i64 {
        p.segments
            .iter()
            .filter(|s| s.grain == g)
            .map(|s| (s.end_ms - s.start_ms) / g.width_ms())
            .sum()
    }

    #[test]
    fn utc_days_read_one_day_segment() {
        let b: Vec<i64> = (0..31).map(|d| 100 * DAY_MS + d * DAY_MS).collect();
        let p = check_exact(&b);
        assert_eq!(
            p.segments,
            vec![Segment {
                grain: Grain::Day,
                start_ms: 100 * DAY_MS,
                end_ms: 130 * DAY_MS,
                split: true
            }]
        );
        // One bucket: not split.
        let p = plan(&[0, 7 * DAY_MS]);
        assert_eq!(
            p.segments,
            vec![Segment {
                grain: Grain::Day,
                start_ms: 0,
                end_ms: 7 * DAY_MS,
                split: false
            }]
        );
    }

    #[test]
    fn whole_hour_zone_days_read_days_and_a_few_hours() {
        // New York winter: local midnight is 05:00Z. 30 local days.
        let b: Vec<i64> = (0..31)
            .map(|d| 10 * DAY_MS + d * DAY_MS + 5 * HOUR_MS)
            .collect();
        let p = check_exact(&b);
        assert_eq!(count(&p, Grain::Minute), 0);
        assert!(
            count(&p, Grain::Hour) <= 30 * 5 + 24,
            "{}",
            count(&p, Grain::Hour)
        );
        assert_eq!(count(&p, Grain::Day), 29);
        // East of UTC (+09:00): the cut is at 15:00Z, the later side (9 h) is transferred.
        let b: Vec<i64> = (0..8)
            .map(|d| 10 * DAY_MS + d * DAY_MS - 9 * HOUR_MS)
            .collect();
        let p = check_exact(&b);
        assert!(count(&p, Grain::Hour) <= 7 * 9 + 24);
        // ISO weeks in a whole-hour zone.
        let w: Vec<i64> = (0..5)
            .map(|k| 7 * DAY_MS + k * 7 * DAY_MS - 5 * HOUR_MS)
            .collect();
        check_exact(&w);
    }

    #[test]
    fn half_hour_zone_uses_minutes_only_at_the_cuts() {
        let off = 5 * HOUR_MS + 30 * MINUTE_MS;
        let b: Vec<i64> = (1..9).map(|d| d * DAY_MS - off).collect();
        let p = check_exact(&b);
        assert_eq!(count(&p, Grain::Minute), 30 * 7 + 30);
    }

    #[test]
    fn odd_ranges_are_exact() {
        check_exact(&[7 * MINUTE_MS, 8 * MINUTE_MS]);
        check_exact(&[
            7 * MINUTE_MS,
            3 * HOUR_MS + 7 * MINUTE_MS,
            2 * DAY_MS + 11 * MINUTE_MS,
            9 * DAY_MS,
        ]);
        check_exact(&[
            DAY_MS,
            2 * DAY_MS,
            2 * DAY_MS + HOUR_MS,
            2 * DAY_MS + HOUR_MS + MINUTE_MS,
        ]);
        // Hour buckets: every day is cut many times and read as hours.
        let hours: Vec<i64> = (0..=50)
            .map(|h| DAY_MS + h * HOUR_MS + 30 * MINUTE_MS)
            .collect();
        check_exact(&hours);
        // A day cut exactly at noon.
        check_exact(&[0, DAY_MS + 12 * HOUR_MS, 3 * DAY_MS]);
        let all = plan(&[0, crate::calendar::MAX_MS]);
        assert_eq!(all.segments.len(), 1);
    }

    #[test]
    fn fold_moves_transferred_rows_and_drops_empty_groups() {
        let b = [5 * HOUR_MS, DAY_MS + 5 * HOUR_MS, 2 * DAY_MS + 5 * HOUR_MS];
        let p = plan(&b);
        let one = |segment: usize, bucket_ms: i64| RollupRow {
            segment,
            bucket_ms,
            group: GroupKey::default(),
            sums: Sums {
                requests: 1,
                input_tokens: 10,
                ..Sums::default()
            },
        };
        // One record at 03:00 on day 1 (bucket 0): the day row counts it in bucket 1, the
        // transfer of [day 1, 05:00) moves it back.
        let day = p
            .segments
            .iter()
            .position(|s| s.grain == Grain::Day && s.start_ms == DAY_MS)
            .unwrap();
        let tr = p
            .segments
            .iter()
            .position(|s| s.grain == Grain::Hour && s.start_ms == DAY_MS)
            .unwrap();
        let got = fold(&p, &b, vec![one(day, DAY_MS), one(tr, DAY_MS)]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[&(0, GroupKey::default())].input_tokens, 10);
    }

    #[test]
    fn alignment_and_lookup() {
        assert_eq!(align(&[61_000, 119_999, 120_000]), vec![60_000, 120_000]);
        let b = [10, 20, 30];
        assert_eq!(bucket_of(&b, 9), None);
        assert_eq!(bucket_of(&b, 10), Some(0));
        assert_eq!(bucket_of(&b, 29), Some(1));
        assert_eq!(bucket_of(&b, 30), None);
    }
}
