//! When a user's digest is due: the latest slot at or before "now" of their schedule
//! (`digest_time` in their time zone; weekly on Mondays, monthly on the 1st), DST-correct.
//! A digest is due when none was sent since that slot, so a run after downtime sends at
//! most one (for the latest slot), and the slot itself never drifts.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime,
    TimeZone, Utc,
};
use chrono_tz::Tz;

/// `digest_frequency` values that get a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub(crate) fn parse(s: &str) -> Option<Period> {
        match s {
            "daily" => Some(Period::Daily),
            "weekly" => Some(Period::Weekly),
            "monthly" => Some(Period::Monthly),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// The local date of the schedule's day on or before `d`, and the one before that.
    fn anchor(self, d: NaiveDate) -> NaiveDate {
        match self {
            Period::Daily => d,
            Period::Weekly => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
            Period::Monthly => d.with_day(1).unwrap_or(d),
        }
    }

    fn previous(self, anchor: NaiveDate) -> Option<NaiveDate> {
        match self {
            Period::Daily => anchor.pred_opt(),
            Period::Weekly => anchor.checked_sub_signed(Duration::days(7)),
            Period::Monthly => anchor.checked_sub_months(Months::new(1)),
        }
    }
}

/// The latest instant `<= now` at which this schedule is due.
pub(crate) fn latest_slot(
    period: Period,
    at: NaiveTime,
    zone: Tz,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut day = period.anchor(now.with_timezone(&zone).date_naive());
    // The current period's slot may still be ahead (later today, or in a gap that resolves
    // after now); the previous period's is then the latest. Three steps are always enough.
    for _ in 0..3 {
        let slot = instant_of(zone, day.and_time(at))?;
        if slot <= now {
            return Some(slot);
        }
        day = period.previous(day)?;
    }
    None
}

/// The instant a local wall-clock time denotes in `zone`. A time that occurs twice (clocks
/// go back) is the earlier one; a time that does not exist (clocks go forward) is the next
/// valid instant, the moment the clocks jump.
pub(crate) fn instant_of(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => first_instant_at_or_after(zone, local),
    }
}

/// The first instant whose local time is `>= local`: for a time inside a gap, the end of
/// the gap. Offsets lie within ±15 h of UTC, so the answer lies in that window, and local
/// time only moves forward within it around a gap: a binary search on seconds finds it.
fn first_instant_at_or_after(zone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let base = local.and_utc().timestamp();
    let local_at = |secs: i64| {
        DateTime::<Utc>::from_timestamp(secs, 0).map(|t| t.with_timezone(&zone).naive_local())
    };
    let (mut lo, mut hi) = (base - 15 * 3600, base + 15 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_at(mid)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::<Utc>::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn nine() -> NaiveTime {
        NaiveTime::from_hms_opt(9, 0, 0).unwrap()
    }

    fn slot(p: Period, at: NaiveTime, zone: Tz, now: &str) -> String {
        latest_slot(p, at, zone, utc(now))
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn daily_slot_is_today_once_the_local_time_has_passed_else_yesterday() {
        let ny = Tz::America__New_York;
        assert_eq!(
            slot(Period::Daily, nine(), ny, "2026-03-06T13:59:59Z"),
            "2026-03-05T14:00:00Z"
        );
        assert_eq!(
            slot(Period::Daily, nine(), ny, "2026-03-06T14:00:00Z"),
            "2026-03-06T14:00:00Z"
        );
        // Across the spring-forward weekend, 09:00 local moves from 14:00 to 13:00 UTC.
        assert_eq!(
            slot(Period::Daily, nine(), ny, "2026-03-08T13:00:00Z"),
            "2026-03-08T13:00:00Z"
        );
        assert_eq!(
            slot(Period::Daily, nine(), ny, "2026-11-01T13:30:00Z"),
            "2026-10-31T13:00:00Z"
        );
        assert_eq!(
            slot(Period::Daily, nine(), ny, "2026-11-01T14:00:00Z"),
            "2026-11-01T14:00:00Z"
        );
        assert_eq!(
            slot(
                Period::Daily,
                nine(),
                Tz::Asia__Kolkata,
                "2026-03-08T03:30:00Z"
            ),
            "2026-03-08T03:30:00Z"
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_is_the_moment_clocks_jump_and_a_repeated_time_the_first() {
        let ny = Tz::America__New_York;
        let half_two = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        // 02:30 does not exist on 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        assert_eq!(
            slot(Period::Daily, half_two, ny, "2026-03-08T12:00:00Z"),
            "2026-03-08T07:00:00Z"
        );
        // 01:30 happens twice on 2026-11-01: EDT (05:30 UTC) first, then EST (06:30 UTC).
        let half_one = NaiveTime::from_hms_opt(1, 30, 0).unwrap();
        assert_eq!(
            slot(Period::Daily, half_one, ny, "2026-11-01T06:00:00Z"),
            "2026-11-01T05:30:00Z"
        );
        assert_eq!(
            slot(Period::Daily, half_one, ny, "2026-11-01T05:29:00Z"),
            "2026-10-31T05:30:00Z"
        );
    }

    #[test]
    fn weekly_is_monday_and_monthly_the_first_in_the_users_zone() {
        let kolkata = Tz::Asia__Kolkata;
        // 2026-03-09 is a Monday; 09:00 IST is 03:30 UTC.
        assert_eq!(
            slot(Period::Weekly, nine(), kolkata, "2026-03-12T00:00:00Z"),
            "2026-03-09T03:30:00Z"
        );
        assert_eq!(
            slot(Period::Weekly, nine(), kolkata, "2026-03-09T03:29:00Z"),
            "2026-03-02T03:30:00Z"
        );
        assert_eq!(
            slot(Period::Monthly, nine(), Tz::UTC, "2026-03-01T08:00:00Z"),
            "2026-02-01T09:00:00Z"
        );
        assert_eq!(
            slot(Period::Monthly, nine(), Tz::UTC, "2026-03-31T23:00:00Z"),
            "2026-03-01T09:00:00Z"
        );
        // Late on Sunday 8 March in UTC it is already Monday 9 March in Kolkata.
        assert_eq!(
            slot(
                Period::Weekly,
                NaiveTime::MIN,
                kolkata,
                "2026-03-08T19:00:00Z"
            ),
            "2026-03-08T18:30:00Z"
        );
    }
}
