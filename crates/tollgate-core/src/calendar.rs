//! Calendar arithmetic for usage buckets, pure: UTC or IANA time zone days, ISO weeks (Monday
//! 00:00), calendar months, local hours and UTC minutes, as instants in ms since the epoch.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::account::Period;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// 1970-01-01T00:00:00Z: no usage predates it.
pub const MIN_MS: i64 = 0;
/// 10000-01-01T00:00:00Z, the end of "all time".
pub const MAX_MS: i64 = 253_402_300_800_000;

/// Bucket widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// UTC minutes.
    Minute,
    /// Local hours (UTC hours in every zone whose offset is a whole number of hours).
    Hour,
    /// Local calendar days.
    Day,
    /// ISO weeks: local Monday 00:00 to the next.
    Week,
    /// Local calendar months.
    Month,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            "week" => Some(Unit::Week),
            "month" => Some(Unit::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
        }
    }
}

pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms.clamp(MIN_MS, MAX_MS)).unwrap_or_default()
}

/// The UTC offset of `tz` at `ms`, in ms.
pub fn offset_ms(tz: Tz, ms: i64) -> i64 {
    let off = tz.offset_from_utc_datetime(&utc(ms).naive_utc());
    i64::from(off.fix().local_minus_utc()) * 1000
}

/// The local calendar date of an instant.
pub fn local_date(tz: Tz, ms: i64) -> NaiveDate {
    utc(ms).with_timezone(&tz).date_naive()
}

/// The first instant of a local date: local midnight, or the first valid local time after it
/// when midnight falls in a DST gap.
pub fn day_start(tz: Tz, d: NaiveDate) -> i64 {
    let mut local = NaiveDateTime::new(d, NaiveTime::MIN);
    for _ in 0..(26 * 4) {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.timestamp_millis();
        }
        local += Duration::minutes(15);
    }
    // Unreachable for real zones; fall back to the offset at UTC midnight.
    let naive_ms = local.and_utc().timestamp_millis();
    naive_ms - offset_ms(tz, naive_ms)
}

pub fn monday_of(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

pub fn month_first(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

pub fn next_month_first(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

pub fn prev_month_first(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 1 {
        (d.year() - 1, 12)
    } else {
        (d.year(), d.month() - 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

/// The first date of the calendar bucket (day, ISO week, month) holding `d`.
pub fn unit_first_date(unit: Unit, d: NaiveDate) -> NaiveDate {
    match unit {
        Unit::Week => monday_of(d),
        Unit::Month => month_first(d),
        _ => d,
    }
}

fn next_unit_date(unit: Unit, d: NaiveDate) -> NaiveDate {
    match unit {
        Unit::Week => d + Duration::days(7),
        Unit::Month => next_month_first(d),
        _ => d + Duration::days(1),
    }
}

/// Is `ms` the start of a local hour?
fn is_local_hour(tz: Tz, ms: i64) -> bool {
    (ms + offset_ms(tz, ms)).rem_euclid(HOUR_MS) == 0
}

/// Start instants of the local hours in `(start, end)`, ascending.
fn local_hours_between(tz: Tz, start: i64, end: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut h = start.div_euclid(HOUR_MS) * HOUR_MS;
    while h < end {
        let off = offset_ms(tz, h);
        let b = h + (-off).rem_euclid(HOUR_MS);
        // A zone that changes offset inside this UTC hour is checked every quarter hour.
        if offset_ms(tz, h + HOUR_MS - 1) != off {
            for q in 0..4 {
                let t = h + q * 15 * MINUTE_MS;
                if t > start && t < end && is_local_hour(tz, t) {
                    out.push(t);
                }
            }
        } else if b > start && b < end {
            out.push(b);
        }
        h += HOUR_MS;
    }
    out.dedup();
    out
}

/// The start of the bucket of `unit` that holds `ms`.
pub fn bucket_floor(tz: Tz, unit: Unit, ms: i64) -> i64 {
    match unit {
        Unit::Minute => ms.div_euclid(MINUTE_MS) * MINUTE_MS,
        Unit::Hour => {
            let local = ms + offset_ms(tz, ms);
            let floored = ms - local.rem_euclid(HOUR_MS);
            if is_local_hour(tz, floored) {
                floored
            } else {
                // Across an offset change: the last local hour start at or before `ms`.
                local_hours_between(tz, ms - 2 * HOUR_MS, ms + 1)
                    .last()
                    .copied()
                    .unwrap_or(floored)
            }
        }
        Unit::Day | Unit::Week | Unit::Month => {
            day_start(tz, unit_first_date(unit, local_date(tz, ms)))
        }
    }
}

/// Buckets covering `[start, end)`: the first and last are clipped to the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub tz: Tz,
    pub unit: Unit,
    /// `bounds[i]..bounds[i + 1]` is bucket `i`; `bounds[0] = start`, last = `end`.
    pub bounds: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyBuckets(pub usize);

impl Grid {
    /// Fails when more than `max` buckets would be needed.
    pub fn new(
        tz: Tz,
        unit: Unit,
        start: i64,
        end: i64,
        max: usize,
    ) -> Result<Grid, TooManyBuckets> {
        let mut bounds = vec![start];
        if end > start {
            match unit {
                Unit::Minute => {
                    let mut t = (start.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
                    while t < end {
                        if bounds.len() > max {
                            return Err(TooManyBuckets(((end - start) / MINUTE_MS) as usize));
                        }
                        bounds.push(t);
                        t += MINUTE_MS;
                    }
                }
                Unit::Hour => {
                    if (end - start) / HOUR_MS > max as i64 + 2 {
                        return Err(TooManyBuckets(((end - start) / HOUR_MS) as usize));
                    }
                    bounds.extend(local_hours_between(tz, start, end));
                }
                Unit::Day | Unit::Week | Unit::Month => {
                    let mut d = next_unit_date(unit, unit_first_date(unit, local_date(tz, start)));
                    loop {
                        let t = day_start(tz, d);
                        if t >= end {
                            break;
                        }
                        if t > start {
                            if bounds.len() > max {
                                let approx = (end - start) / DAY_MS;
                                return Err(TooManyBuckets(approx as usize));
                            }
                            bounds.push(t);
                        }
                        d = next_unit_date(unit, d);
                    }
                }
            }
            bounds.push(end);
        }
        if bounds.len() > max + 1 {
            return Err(TooManyBuckets(bounds.len() - 1));
        }
        Ok(Grid { tz, unit, bounds })
    }

    pub fn len(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn start(&self, i: usize) -> i64 {
        self.bounds[i]
    }

    pub fn end(&self, i: usize) -> i64 {
        self.bounds[i + 1]
    }

    /// The unclipped start of bucket `i` (the first bucket may be clipped by the range).
    pub fn natural_start(&self, i: usize) -> i64 {
        bucket_floor(self.tz, self.unit, self.bounds[i])
    }

    /// The bucket's label: its local first date (`YYYY-MM-DD`) for days, weeks and months, its
    /// start as RFC 3339 in the zone's offset for hours and minutes.
    pub fn label(&self, i: usize) -> String {
        let t = self.natural_start(i);
        match self.unit {
            Unit::Day | Unit::Week | Unit::Month => format_date(local_date(self.tz, t)),
            Unit::Hour | Unit::Minute => rfc3339(self.tz, t, false),
        }
    }
}

pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// RFC 3339 in the zone's offset (`Z` for UTC), with or without milliseconds.
pub fn rfc3339(tz: Tz, ms: i64, millis: bool) -> String {
    let t = utc(ms).with_timezone(&tz);
    let off = t.offset().fix().local_minus_utc();
    let base = if millis {
        t.format("%Y-%m-%dT%H:%M:%S%.3f")
    } else {
        t.format("%Y-%m-%dT%H:%M:%S")
    };
    if off == 0 {
        format!("{base}Z")
    } else {
        format!("{base}{}", t.format("%:z"))
    }
}

/// `YYYY-MM-DD`, strictly (no other forms), within 1970..=9999.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    (1970..=9999).contains(&d.year()).then_some(d)
}

/// An RFC 3339 instant, in ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis();
    (MIN_MS..=MAX_MS).contains(&t).then_some(t)
}

/// An instant as the usage APIs and the CLI take one: `YYYY-MM-DD` (that local day's start, or
/// with `end_of_day` the next day's start, so an end date is inclusive), RFC 3339, or Unix
/// seconds.
pub fn parse_instant(v: &str, tz: Tz, end_of_day: bool) -> Option<i64> {
    if let Some(d) = parse_date(v) {
        let d = if end_of_day {
            d.succ_opt().unwrap_or(d)
        } else {
            d
        };
        return Some(day_start(tz, d));
    }
    if let Some(t) = parse_rfc3339(v) {
        return Some(t);
    }
    let secs = v.parse::<i64>().ok()?;
    (0..=MAX_MS / 1000).contains(&secs).then_some(secs * 1000)
}

// ---- budget periods (key spend limits): UTC calendar boundaries ----

/// Start of the UTC period containing `now_ms`.
pub fn period_start(period: Period, now_ms: i64) -> i64 {
    let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
        return now_ms;
    };
    let day = now.date_naive();
    let start = match period {
        Period::Daily => day,
        Period::Weekly => day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday())),
        Period::Monthly => day.with_day(1).unwrap_or(day),
        Period::Total => return 0,
    };
    start
        .and_hms_opt(0, 0, 0)
        .map_or(now_ms, |t| t.and_utc().timestamp_millis())
}

/// Start of the next period (when a spend limit resets).
pub fn period_end(period: Period, now_ms: i64) -> Option<i64> {
    let start = Utc
        .timestamp_millis_opt(period_start(period, now_ms))
        .single()?;
    let next = match period {
        Period::Daily => start + chrono::Duration::days(1),
        Period::Weekly => start + chrono::Duration::days(7),
        Period::Monthly => start.checked_add_months(chrono::Months::new(1))?,
        Period::Total => return None,
    };
    Some(next.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }
    fn date(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }
    const UTC: Tz = chrono_tz::UTC;

    #[test]
    fn utc_day_edges() {
        let late = ms("2027-12-31T23:59:59.999Z");
        let midnight = ms("2028-01-01T00:00:00Z");
        assert_eq!(local_date(UTC, late), date("2027-12-31"));
        assert_eq!(local_date(UTC, midnight), date("2028-01-01"));
        assert_eq!(
            bucket_floor(UTC, Unit::Day, late),
            ms("2027-12-31T00:00:00Z")
        );
        assert_eq!(bucket_floor(UTC, Unit::Day, midnight), midnight);
        assert_eq!(
            day_start(UTC, date("2028-02-29")),
            ms("2028-02-29T00:00:00Z")
        );
    }

    #[test]
    fn iso_week_one_crosses_the_year_end() {
        // ISO week 1 of 2025 starts on Monday 2024-12-30.
        let t = ms("2025-01-01T12:00:00Z");
        assert_eq!(bucket_floor(UTC, Unit::Week, t), ms("2024-12-30T00:00:00Z"));
        assert_eq!(monday_of(date("2024-12-29")), date("2024-12-23"));
        assert_eq!(monday_of(date("2024-12-30")), date("2024-12-30"));
        // ISO week 53 of 2026 runs to Sunday 2027-01-03.
        assert_eq!(monday_of(date("2027-01-03")), date("2026-12-28"));
        let g = Grid::new(
            UTC,
            Unit::Week,
            ms("2024-12-25T00:00:00Z"),
            ms("2025-01-10T00:00:00Z"),
            100,
        )
        .unwrap();
        assert_eq!(
            g.bounds,
            vec![
                ms("2024-12-25T00:00:00Z"),
                ms("2024-12-30T00:00:00Z"),
                ms("2025-01-06T00:00:00Z"),
                ms("2025-01-10T00:00:00Z")
            ]
        );
        assert_eq!(g.label(0), "2024-12-23");
        assert_eq!(g.label(1), "2024-12-30");
        assert_eq!(g.label(2), "2025-01-06");
    }

    #[test]
    fn month_ends_and_leap_days() {
        assert_eq!(next_month_first(date("2028-02-29")), date("2028-03-01"));
        assert_eq!(next_month_first(date("2027-12-31")), date("2028-01-01"));
        assert_eq!(prev_month_first(date("2028-01-15")), date("2027-12-01"));
        assert_eq!(month_first(date("2028-02-29")), date("2028-02-01"));
        let g = Grid::new(
            UTC,
            Unit::Month,
            ms("2028-01-31T00:00:00Z"),
            ms("2028-04-01T00:00:00Z"),
            10,
        )
        .unwrap();
        assert_eq!(
            g.bounds,
            vec![
                ms("2028-01-31T00:00:00Z"),
                ms("2028-02-01T00:00:00Z"),
                ms("2028-03-01T00:00:00Z"),
                ms("2028-04-01T00:00:00Z")
            ]
        );
        let days = Grid::new(
            UTC,
            Unit::Day,
            ms("2028-02-28T00:00:00Z"),
            ms("2028-03-02T00:00:00Z"),
            10,
        )
        .unwrap();
        let labels: Vec<_> = (0..days.len()).map(|i| days.label(i)).collect();
        assert_eq!(labels, ["2028-02-28", "2028-02-29", "2028-03-01"]);
        assert!(parse_date("2027-02-29").is_none());
        assert!(parse_date("2028-02-29").is_some());
    }

    #[test]
    fn zones_with_whole_and_partial_hour_offsets() {
        let ny: Tz = parse_tz("America/New_York").unwrap();
        // 2028-03-12 is a DST start in New York: the day has 23 hours.
        let a = day_start(ny, date("2028-03-12"));
        let b = day_start(ny, date("2028-03-13"));
        assert_eq!(a, ms("2028-03-12T05:00:00Z"));
        assert_eq!(b - a, 23 * HOUR_MS);
        assert_eq!(
            local_date(ny, ms("2028-01-01T04:59:59.999Z")),
            date("2027-12-31")
        );
        let kolkata: Tz = parse_tz("Asia/Kolkata").unwrap();
        assert_eq!(
            day_start(kolkata, date("2028-02-29")),
            ms("2028-02-28T18:30:00Z")
        );
        assert_eq!(
            bucket_floor(kolkata, Unit::Hour, ms("2028-02-28T18:29:00Z")),
            ms("2028-02-28T17:30:00Z")
        );
        let hours = Grid::new(
            kolkata,
            Unit::Hour,
            ms("2028-02-28T18:00:00Z"),
            ms("2028-02-28T20:00:00Z"),
            10,
        )
        .unwrap();
        assert_eq!(
            hours.bounds,
            vec![
                ms("2028-02-28T18:00:00Z"),
                ms("2028-02-28T18:30:00Z"),
                ms("2028-02-28T19:30:00Z"),
                ms("2028-02-28T20:00:00Z")
            ]
        );
        assert_eq!(hours.label(1), "2028-02-29T00:00:00+05:30");
        // The New York fall-back day has 25 local hours, each its own bucket.
        let fall = Grid::new(
            ny,
            Unit::Hour,
            day_start(ny, date("2028-11-05")),
            day_start(ny, date("2028-11-06")),
            100,
        )
        .unwrap();
        assert_eq!(fall.len(), 25);
        assert!(parse_tz("Mars/Olympus").is_none());
    }

    #[test]
    fn rfc3339_formats() {
        let t = ms("2028-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(UTC, t, true), "2028-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(UTC, t, false), "2028-02-29T23:59:59Z");
        let tokyo: Tz = parse_tz("Asia/Tokyo").unwrap();
        assert_eq!(rfc3339(tokyo, t, false), "2028-03-01T08:59:59+09:00");
    }

    #[test]
    fn grid_limits() {
        let r = Grid::new(UTC, Unit::Minute, 0, DAY_MS * 2, 1440);
        assert!(r.is_err());
        let g = Grid::new(UTC, Unit::Minute, 0, DAY_MS, 1440).unwrap();
        assert_eq!(g.len(), 1440);
        let e = Grid::new(UTC, Unit::Day, 5, 5, 10).unwrap();
        assert!(e.is_empty());
    }
}

#[cfg(test)]
mod period_tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn periods_follow_utc_calendar_boundaries() {
        // 2026-01-01 is a Thursday; its ISO week began Monday 2025-12-29.
        assert_eq!(
            period_start(Period::Weekly, ms("2026-01-01T12:00:00Z")),
            ms("2025-12-29T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Weekly, ms("2025-12-29T00:00:00Z")),
            ms("2025-12-29T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Weekly, ms("2025-12-28T23:59:59.999Z")),
            ms("2025-12-22T00:00:00Z")
        );
        assert_eq!(
            period_start(Period::Daily, ms("2028-02-29T23:59:59.999Z")),
            ms("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Daily, ms("2028-02-29T23:59:59.999Z")),
            Some(ms("2028-03-01T00:00:00Z"))
        );
        assert_eq!(
            period_start(Period::Monthly, ms("2028-02-29T10:00:00Z")),
            ms("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            period_end(Period::Monthly, ms("2026-01-31T10:00:00Z")),
            Some(ms("2026-02-01T00:00:00Z"))
        );
        assert_eq!(
            period_end(Period::Monthly, ms("2026-12-31T23:59:59.999Z")),
            Some(ms("2027-01-01T00:00:00Z"))
        );
        assert_eq!(period_end(Period::Total, 5), None);
    }
}
