//! Which backups are kept: the newest of each of the last N days, weeks (ISO weeks,
//! Monday to Sunday, UTC) and months. A backup kept by any of the three is kept.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use tm_config::Retention;

/// The indexes into `made` (when each backup was made) of the backups to keep at `now`.
/// The newest backup is always kept.
pub fn kept(made: &[DateTime<Utc>], now: DateTime<Utc>, policy: Retention) -> BTreeSet<usize> {
    let mut newest_first: Vec<usize> = (0..made.len()).collect();
    newest_first.sort_by(|a, b| made[*b].cmp(&made[*a]));
    let today = now.date_naive();
    let mut keep = BTreeSet::new();
    keep.extend(newest_first.first().copied());
    let periods: [(u32, PeriodsBack); 3] = [
        (policy.daily, days_back),
        (policy.weekly, weeks_back),
        (policy.monthly, months_back),
    ];
    for (count, back) in periods {
        let mut taken = BTreeSet::new();
        for &i in &newest_first {
            let Some(period) = back(made[i].date_naive(), today) else {
                continue;
            };
            if period < i64::from(count) && taken.insert(period) {
                keep.insert(i);
            }
        }
    }
    keep
}

/// How many periods (days, weeks, months) before `today`'s a day is in.
type PeriodsBack = fn(NaiveDate, NaiveDate) -> Option<i64>;

/// 0 for `today`, 1 for yesterday…; `None` for a day after `today`.
fn days_back(day: NaiveDate, today: NaiveDate) -> Option<i64> {
    let back = (today - day).num_days();
    (back >= 0).then_some(back)
}

/// 0 for this ISO week, 1 for the last one…
fn weeks_back(day: NaiveDate, today: NaiveDate) -> Option<i64> {
    let monday = |d: NaiveDate| d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
    days_back(monday(day), monday(today)).map(|days| days / 7)
}

/// 0 for this month, 1 for the last one…
fn months_back(day: NaiveDate, today: NaiveDate) -> Option<i64> {
    let index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
    let back = index(today) - index(day);
    (back >= 0).then_some(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const POLICY: Retention = Retention {
        daily: 7,
        weekly: 4,
        monthly: 12,
    };

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid time")
    }

    /// A clock that moves a day at a time: a backup each day at 02:00, retention applied
    /// after each, as the scheduled job does. What is left after `days` days.
    fn simulate(start: DateTime<Utc>, days: i64, policy: Retention) -> Vec<DateTime<Utc>> {
        let mut kept_backups: Vec<DateTime<Utc>> = Vec::new();
        for day in 0..days {
            let now = start + Duration::days(day);
            kept_backups.push(now);
            let keep = kept(&kept_backups, now, policy);
            kept_backups = keep.into_iter().map(|i| kept_backups[i]).collect();
        }
        kept_backups
    }

    #[test]
    fn a_year_and_more_of_daily_backups_leaves_7_daily_4_weekly_12_monthly() {
        // 2026-01-01 02:00 to 2027-03-31 02:00 (455 days).
        let left = simulate(at(2026, 1, 1, 2), 455, POLICY);
        let now = *left.last().expect("the newest is kept");
        assert_eq!(now, at(2027, 3, 31, 2));
        // The last seven days, each.
        for back in 0..7 {
            assert!(left.contains(&(now - Duration::days(back))), "day -{back}");
        }
        // The newest of each of the last four ISO weeks: 2027-03-31 is a Wednesday, so
        // this week's is today's, and the three weeks before end on Sundays 28, 21, 14.
        for sunday in [at(2027, 3, 28, 2), at(2027, 3, 21, 2), at(2027, 3, 14, 2)] {
            assert!(left.contains(&sunday), "{sunday}");
        }
        // The newest of each of the last twelve months: the last day of each month from
        // April 2026 to February 2027, and today for March 2027.
        for (y, m, d) in [
            (2026, 4, 30),
            (2026, 5, 31),
            (2026, 6, 30),
            (2026, 7, 31),
            (2026, 8, 31),
            (2026, 9, 30),
            (2026, 10, 31),
            (2026, 11, 30),
            (2026, 12, 31),
            (2027, 1, 31),
            (2027, 2, 28),
        ] {
            assert!(left.contains(&at(y, m, d, 2)), "{y}-{m}-{d}");
        }
        // Nothing else: 7 days (25–31 March, Sunday 28 among them) + Sundays 21 and 14
        // + 11 month ends.
        assert_eq!(left.len(), 7 + 2 + 11, "{left:?}");
        // Nothing older than a year is left.
        assert!(left.iter().all(|t| *t > at(2026, 3, 31, 2)));
    }

    #[test]
    fn the_policy_counts_are_honoured() {
        let left = simulate(
            at(2026, 1, 1, 2),
            200,
            Retention {
                daily: 2,
                weekly: 0,
                monthly: 0,
            },
        );
        assert_eq!(left.len(), 2);
        let only_newest = simulate(
            at(2026, 1, 1, 2),
            50,
            Retention {
                daily: 0,
                weekly: 0,
                monthly: 0,
            },
        );
        assert_eq!(only_newest, vec![at(2026, 2, 19, 2)]);
    }

    #[test]
    fn several_backups_a_day_keep_the_newest_of_the_day() {
        let made = [at(2026, 6, 10, 1), at(2026, 6, 10, 13), at(2026, 6, 10, 7)];
        let keep = kept(&made, at(2026, 6, 10, 14), POLICY);
        assert_eq!(keep, BTreeSet::from([1]));
    }

    #[test]
    fn a_backup_dated_after_now_is_kept_only_as_the_newest() {
        // A clock set back: what is "in the future" is not counted in any period, but the
        // newest backup is never deleted.
        let made = [at(2026, 6, 12, 1), at(2026, 6, 9, 1)];
        let keep = kept(&made, at(2026, 6, 10, 0), POLICY);
        assert_eq!(keep, BTreeSet::from([0, 1]));
    }
}
