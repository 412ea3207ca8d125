//! The policy of `cairn forget`: which snapshots to keep. Pure logic, no repository access.
//!
//! Snapshots are split into groups, one per service (snapshots without a service form one
//! group of their own), and every rule applies within a group, walking its snapshots newest
//! first (ties on time broken by snapshot id, so the result is deterministic). A snapshot is
//! kept if *any* rule keeps it, and every rule that keeps it is recorded as a reason:
//!
//! | rule                  | reason              | keeps                                                   |
//! |-----------------------|---------------------|---------------------------------------------------------|
//! | `--keep-last N`       | `last`              | the N newest snapshots                                  |
//! | `--keep-hourly N`     | `hourly`            | the newest snapshot of each of the last N UTC hours that have snapshots |
//! | `--keep-daily N`      | `daily`             | the same for UTC days                                   |
//! | `--keep-weekly N`     | `weekly`            | the same for ISO 8601 weeks (Monday to Sunday, UTC)     |
//! | `--keep-monthly N`    | `monthly`           | the same for UTC calendar months                        |
//! | `--keep-within D`     | `within 7d`         | every snapshot taken at most D before the group's newest snapshot (inclusive) |
//! | `--keep-per-revision N` | `per-revision`    | the N newest snapshots of every revision (snapshots without a revision are not kept by it) |
//! | `--keep-revision R`   | `revision R`        | every snapshot of revision R, in any group              |
//! | (always)              | `active revision`   | the newest snapshot of the service's active revision    |
//!
//! The bucket rules are restic's: a bucket (hour, day, week, month) counts only if it holds a
//! snapshot, so `--keep-daily 7` keeps seven days' worth of snapshots even if the backups
//! stopped a month ago. `--keep-within` is measured from the newest snapshot of the group, not
//! from now, also as in restic, so a service whose backups stopped does not lose its history.
//!
//! At least one of last, hourly, daily, weekly, monthly, within and per-revision must be given:
//! `--keep-revision` and the active-revision rule only protect snapshots on top of a policy, so
//! a forget with no rule is refused instead of forgetting (almost) everything.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

const NS_PER_SEC: i64 = 1_000_000_000;
const NS_PER_MIN: i64 = 60 * NS_PER_SEC;
const NS_PER_HOUR: i64 = 60 * NS_PER_MIN;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// What the policy needs to know about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken, ns since the epoch (UTC).
    pub time_ns: i64,
    /// Its service label: the group it belongs to.
    pub service: Option<String>,
    /// Its revision label.
    pub revision: Option<String>,
    /// Its tags (not used by any rule yet; carried for display).
    pub tags: Vec<String>,
}

impl SnapshotInfo {
    /// The policy's view of a snapshot document.
    pub fn from_snapshot(id: SnapshotId, snap: &Snapshot) -> Self {
        SnapshotInfo {
            id,
            time_ns: snap.time_ns,
            service: snap.service.clone(),
            revision: snap.revision.clone(),
            tags: snap.tags.clone(),
        }
    }
}

/// The keep rules of one `cairn forget`. A count of 0 (or `None`) turns a rule off;
/// `usize::MAX` means "all" (every bucket, every snapshot of each revision...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`: the newest N snapshots.
    pub last: usize,
    /// `--keep-hourly`: the newest snapshot of each of the last N hours that have one.
    pub hourly: usize,
    /// `--keep-daily`: the newest snapshot of each of the last N days that have one.
    pub daily: usize,
    /// `--keep-weekly`: the newest snapshot of each of the last N ISO weeks that have one.
    pub weekly: usize,
    /// `--keep-monthly`: the newest snapshot of each of the last N months that have one.
    pub monthly: usize,
    /// `--keep-within`: every snapshot at most this many ns older than the group's newest.
    pub within_ns: Option<i64>,
    /// `--keep-per-revision`: the newest N snapshots of every revision.
    pub per_revision: usize,
    /// `--keep-revision`: revisions whose snapshots are never forgotten.
    pub keep_revisions: Vec<String>,
    /// `--service`: decide only this service's snapshots.
    pub service: Option<String>,
}

impl Policy {
    /// Refuses a policy that has no keep rule (which would forget everything not protected
    /// by `--keep-revision` or the active revision) or a negative `--keep-within`.
    pub fn validate(&self) -> Result<()> {
        if let Some(w) = self.within_ns
            && w < 0
        {
            return Err(Error::Invalid(format!(
                "--keep-within must not be negative (got {w} ns)"
            )));
        }
        let any = self.last > 0
            || self.hourly > 0
            || self.daily > 0
            || self.weekly > 0
            || self.monthly > 0
            || self.within_ns.is_some()
            || self.per_revision > 0;
        if !any {
            return Err(Error::Invalid(
                "no keep rule given: refusing to forget every snapshot; pass at least one of \
                 --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, \
                 --keep-within, --keep-per-revision (--keep-revision only protects snapshots \
                 on top of those)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Whether it is kept; `false` means forget it.
    pub keep: bool,
    /// Every rule that keeps it (empty exactly when `keep` is false), in the order of the
    /// table in the module documentation.
    pub reasons: Vec<String>,
    /// Its group: the service, or `None` for snapshots without one.
    pub group: Option<String>,
}

/// Decides which of `snaps` to keep under `policy`. `active` maps a service to its active
/// revision, whose newest snapshot is always kept.
///
/// Returns one decision per decided snapshot: all of `snaps`, or with `policy.service` only
/// that service's. Decisions come group by group (unlabelled first, then services in name
/// order), newest first within a group. Fails, deciding nothing, if the policy has no rule.
pub fn decide(
    snaps: &[SnapshotInfo],
    policy: &Policy,
    active: &HashMap<String, String>,
) -> Result<Vec<Decision>> {
    policy.validate()?;
    let mut groups: BTreeMap<Option<&str>, Vec<&SnapshotInfo>> = BTreeMap::new();
    for s in snaps {
        if let Some(only) = &policy.service
            && s.service.as_deref() != Some(only.as_str())
        {
            continue;
        }
        groups.entry(s.service.as_deref()).or_default().push(s);
    }
    let mut out = Vec::with_capacity(snaps.len());
    for (group, mut members) in groups {
        members.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(a.id.cmp(&b.id)));
        let active_rev = group.and_then(|g| active.get(g)).map(String::as_str);
        let reasons = group_reasons(&members, policy, active_rev);
        out.extend(members.iter().zip(reasons).map(|(s, reasons)| Decision {
            id: s.id,
            keep: !reasons.is_empty(),
            reasons,
            group: group.map(str::to_owned),
        }));
    }
    Ok(out)
}

/// The reasons to keep each member of one group; `members` is sorted newest first.
fn group_reasons(
    members: &[&SnapshotInfo],
    policy: &Policy,
    active_rev: Option<&str>,
) -> Vec<Vec<String>> {
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let Some(newest) = members.first() else {
        return reasons;
    };

    for r in reasons.iter_mut().take(policy.last) {
        r.push("last".into());
    }

    let buckets: [(usize, &str, Bucket); 4] = [
        (policy.hourly, "hourly", hour_bucket),
        (policy.daily, "daily", day_bucket),
        (policy.weekly, "weekly", week_bucket),
        (policy.monthly, "monthly", month_bucket),
    ];
    for (count, name, bucket) in buckets {
        let mut left = count;
        let mut previous = None;
        for (s, r) in members.iter().zip(reasons.iter_mut()) {
            if left == 0 {
                break;
            }
            let b = bucket(s.time_ns);
            // Newest first, so the first snapshot seen in a bucket is its newest.
            if previous != Some(b) {
                previous = Some(b);
                left -= 1;
                r.push(name.into());
            }
        }
    }

    if let Some(within) = policy.within_ns {
        let reason = format!("within {}", format_duration(within));
        for (s, r) in members.iter().zip(reasons.iter_mut()) {
            if newest.time_ns.saturating_sub(s.time_ns) <= within {
                r.push(reason.clone());
            }
        }
    }

    if policy.per_revision > 0 {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (s, r) in members.iter().zip(reasons.iter_mut()) {
            if let Some(rev) = s.revision.as_deref() {
                let n = seen.entry(rev).or_default();
                if *n < policy.per_revision {
                    *n += 1;
                    r.push("per-revision".into());
                }
            }
        }
    }

    for (s, r) in members.iter().zip(reasons.iter_mut()) {
        if let Some(rev) = s.revision.as_deref()
            && policy.keep_revisions.iter().any(|k| k == rev)
        {
            r.push(format!("revision {rev}"));
        }
    }

    if let Some(active_rev) = active_rev
        && let Some(i) = members
            .iter()
            .position(|s| s.revision.as_deref() == Some(active_rev))
    {
        reasons[i].push("active revision".into());
    }

    reasons
}

/// Parses a `--keep-within` duration into ns: one or more `<number><unit>` pieces, summed,
/// with no spaces, e.g. `36h`, `7d`, `2w`, `1y2m3d`, `90min`.
///
/// Units: `y` (365 days), `m` (a *month*, 30 days, as in restic), `w` (7 days), `d`, `h`,
/// `min` (minutes) and `s`. Months and years are fixed lengths, not calendar arithmetic.
/// Note that `90m` is 90 months: minutes are spelled `min`.
pub fn parse_duration(s: &str) -> Result<i64> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "bad duration {s:?}: {why} (expected e.g. 36h, 7d, 2w, 1y2m3d, 90min; \
             units y, m = month, w, d, h, min, s)"
        ))
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per = match unit {
            "y" => 365 * NS_PER_DAY,
            "m" => 30 * NS_PER_DAY,
            "w" => 7 * NS_PER_DAY,
            "d" => NS_PER_DAY,
            "h" => NS_PER_HOUR,
            "min" => NS_PER_MIN,
            "s" => NS_PER_SEC,
            "" => return Err(bad("a number needs a unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        total = number
            .checked_mul(per)
            .and_then(|ns| total.checked_add(ns))
            .ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// A duration in ns as people read it: days, hours, minutes and seconds (`7d`, `1d12h`,
/// `90min` shows as `1h30min`); a zero duration is `0s`.
pub fn format_duration(ns: i64) -> String {
    if ns < 0 {
        return format!("-{}", format_duration(ns.checked_neg().unwrap_or(i64::MAX)));
    }
    let mut out = String::new();
    let mut rest = ns;
    for (per, unit) in [
        (NS_PER_DAY, "d"),
        (NS_PER_HOUR, "h"),
        (NS_PER_MIN, "min"),
        (NS_PER_SEC, "s"),
        (1, "ns"),
    ] {
        let n = rest / per;
        rest %= per;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Maps a time in ns to the bucket (hour, day, week, month) it falls in.
type Bucket = fn(i64) -> i64;

/// The UTC hour a time falls in, as hours since the epoch.
fn hour_bucket(time_ns: i64) -> i64 {
    time_ns.div_euclid(NS_PER_HOUR)
}

/// The UTC day a time falls in, as days since the epoch.
fn day_bucket(time_ns: i64) -> i64 {
    time_ns.div_euclid(NS_PER_DAY)
}

/// The ISO week a time falls in, as `year * 100 + week`.
fn week_bucket(time_ns: i64) -> i64 {
    let (year, week) = iso_week(day_bucket(time_ns));
    year * 100 + week
}

/// The UTC month a time falls in, as `year * 12 + month - 1`.
fn month_bucket(time_ns: i64) -> i64 {
    let (year, month, _) = civil_from_days(day_bucket(time_ns));
    year * 12 + month - 1
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a day number (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The ISO 8601 `(year, week)` of a day number: weeks run Monday to Sunday, and week 1 is the
/// week holding the year's first Thursday.
fn iso_week(days: i64) -> (i64, i64) {
    let weekday = (days + 3).rem_euclid(7) + 1; // Monday = 1 .. Sunday = 7; 1970-01-01 was a Thursday
    let thursday = days + 4 - weekday;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    /// A UTC time in ns.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * NS_PER_DAY + h * NS_PER_HOUR + mi * NS_PER_MIN
    }

    fn snap(n: u8, time_ns: i64) -> SnapshotInfo {
        SnapshotInfo {
            id: id(n),
            time_ns,
            service: None,
            revision: None,
            tags: Vec::new(),
        }
    }

    fn labelled(n: u8, time_ns: i64, service: Option<&str>, rev: Option<&str>) -> SnapshotInfo {
        SnapshotInfo {
            service: service.map(str::to_owned),
            revision: rev.map(str::to_owned),
            ..snap(n, time_ns)
        }
    }

    fn run(snaps: &[SnapshotInfo], policy: &Policy) -> Vec<Decision> {
        decide(snaps, policy, &HashMap::new()).unwrap()
    }

    /// The kept snapshots, by the byte their id is made of.
    fn kept(ds: &[Decision]) -> BTreeSet<u8> {
        ds.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect()
    }

    fn reasons_of(ds: &[Decision], n: u8) -> Vec<&str> {
        let d = ds.iter().find(|d| d.id == id(n)).expect("decided");
        d.reasons.iter().map(String::as_str).collect()
    }

    fn set(ns: &[u8]) -> BTreeSet<u8> {
        ns.iter().copied().collect()
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2021, 1, 1), 18_628); // 1609459200 s
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // Before the epoch, bucket by floor, not truncation.
        assert_eq!(day_bucket(-1), -1);
        assert_eq!(hour_bucket(-1), -1);
        assert_eq!(month_bucket(-1), 1969 * 12 + 11);
    }

    #[test]
    fn iso_weeks_across_year_ends() {
        let week = |y, m, d| iso_week(days_from_civil(y, m, d));
        assert_eq!(week(2020, 12, 28), (2020, 53)); // Monday
        assert_eq!(week(2020, 12, 31), (2020, 53));
        assert_eq!(week(2021, 1, 1), (2020, 53));
        assert_eq!(week(2021, 1, 3), (2020, 53)); // Sunday
        assert_eq!(week(2021, 1, 4), (2021, 1));
        assert_eq!(week(2020, 12, 27), (2020, 52));
        assert_eq!(week(2019, 12, 30), (2020, 1));
        assert_eq!(week(2018, 12, 31), (2019, 1));
        assert_eq!(week(2016, 1, 3), (2015, 53));
        assert_eq!(week(2024, 12, 30), (2025, 1));
        assert_eq!(week(2023, 6, 15), (2023, 24));
        assert_eq!(week(1969, 12, 31), (1970, 1));
        assert_eq!(week(1969, 12, 28), (1969, 52));
    }

    #[test]
    fn keep_last() {
        // Deliberately not in time order.
        let snaps = [
            snap(3, at(2021, 3, 3, 0, 0)),
            snap(1, at(2021, 3, 1, 0, 0)),
            snap(5, at(2021, 3, 5, 0, 0)),
            snap(2, at(2021, 3, 2, 0, 0)),
            snap(4, at(2021, 3, 4, 0, 0)),
        ];
        let ds = run(
            &snaps,
            &Policy {
                last: 2,
                ..Policy::default()
            },
        );
        assert_eq!(ds.len(), 5);
        assert_eq!(kept(&ds), set(&[5, 4]));
        assert_eq!(reasons_of(&ds, 5), ["last"]);
        assert!(reasons_of(&ds, 3).is_empty());
        // Newest first.
        let order: Vec<u8> = ds.iter().map(|d| d.id.0[0]).collect();
        assert_eq!(order, [5, 4, 3, 2, 1]);

        let all = run(
            &snaps,
            &Policy {
                last: 10,
                ..Policy::default()
            },
        );
        assert_eq!(kept(&all), set(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn keep_hourly() {
        let snaps = [
            snap(1, at(2021, 3, 1, 10, 5)),
            snap(2, at(2021, 3, 1, 10, 50)),
            snap(3, at(2021, 3, 1, 11, 10)),
            snap(4, at(2021, 3, 1, 12, 0)),
            snap(5, at(2021, 3, 1, 12, 30)),
            snap(6, at(2021, 3, 2, 10, 20)), // same hour of the day, other day
        ];
        let hourly = |n| {
            kept(&run(
                &snaps,
                &Policy {
                    hourly: n,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(hourly(1), set(&[6]));
        assert_eq!(hourly(3), set(&[6, 5, 3]));
        assert_eq!(hourly(10), set(&[6, 5, 3, 2]));
        assert_eq!(hourly(usize::MAX), set(&[6, 5, 3, 2]));
    }

    #[test]
    fn keep_daily_across_month_and_year() {
        let snaps = [
            snap(1, at(2020, 12, 31, 8, 0)),
            snap(2, at(2020, 12, 31, 20, 0)),
            snap(3, at(2021, 1, 1, 1, 0)),
            snap(4, at(2021, 1, 1, 23, 59)),
            snap(5, at(2021, 1, 2, 12, 0)),
            snap(6, at(2021, 1, 9, 0, 0)), // a gap: empty days do not count
        ];
        let daily = |n| {
            kept(&run(
                &snaps,
                &Policy {
                    daily: n,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(daily(2), set(&[6, 5]));
        assert_eq!(daily(3), set(&[6, 5, 4]));
        assert_eq!(daily(4), set(&[6, 5, 4, 2]));
        assert_eq!(daily(100), set(&[6, 5, 4, 2]));
    }

    #[test]
    fn keep_weekly_across_iso_week_53() {
        let snaps = [
            snap(1, at(2020, 12, 27, 12, 0)), // Sunday, 2020-W52
            snap(2, at(2020, 12, 28, 12, 0)), // Monday, 2020-W53
            snap(3, at(2020, 12, 31, 12, 0)), // 2020-W53
            snap(4, at(2021, 1, 1, 12, 0)),   // 2020-W53, though another year
            snap(5, at(2021, 1, 3, 23, 0)),   // Sunday, 2020-W53
            snap(6, at(2021, 1, 4, 0, 30)),   // Monday, 2021-W01
        ];
        let weekly = |n| {
            kept(&run(
                &snaps,
                &Policy {
                    weekly: n,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(weekly(1), set(&[6]));
        assert_eq!(weekly(2), set(&[6, 5]));
        assert_eq!(weekly(3), set(&[6, 5, 1]));
        assert_eq!(weekly(9), set(&[6, 5, 1]));
    }

    #[test]
    fn keep_monthly_across_year() {
        let snaps = [
            snap(1, at(2020, 11, 15, 0, 0)),
            snap(2, at(2020, 12, 1, 0, 0)),
            snap(3, at(2020, 12, 31, 23, 59)),
            snap(4, at(2021, 1, 1, 0, 0)),
            snap(5, at(2021, 1, 31, 0, 0)),
            snap(6, at(2021, 4, 1, 0, 0)), // February and March are empty
        ];
        let monthly = |n| {
            kept(&run(
                &snaps,
                &Policy {
                    monthly: n,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(monthly(1), set(&[6]));
        assert_eq!(monthly(2), set(&[6, 5]));
        assert_eq!(monthly(3), set(&[6, 5, 3]));
        assert_eq!(monthly(4), set(&[6, 5, 3, 1]));
        assert_eq!(monthly(5), set(&[6, 5, 3, 1]));
    }

    #[test]
    fn keep_within_measures_from_the_newest_snapshot() {
        let newest = at(2021, 3, 10, 12, 0);
        let snaps = [
            snap(1, newest),
            snap(2, newest - NS_PER_DAY),
            snap(3, newest - 7 * NS_PER_DAY), // exactly 7 days: kept
            snap(4, newest - 7 * NS_PER_DAY - 1),
            snap(5, newest - 30 * NS_PER_DAY),
        ];
        let policy = Policy {
            within_ns: Some(parse_duration("7d").unwrap()),
            ..Policy::default()
        };
        let ds = run(&snaps, &policy);
        assert_eq!(kept(&ds), set(&[1, 2, 3]));
        assert_eq!(reasons_of(&ds, 3), ["within 7d"]);

        // A zero duration keeps only the newest (and anything taken at the same instant).
        let zero = Policy {
            within_ns: Some(0),
            ..Policy::default()
        };
        let mut with_twin = snaps.to_vec();
        with_twin.push(snap(6, newest));
        assert_eq!(kept(&run(&with_twin, &zero)), set(&[1, 6]));
    }

    #[test]
    fn all_reasons_are_recorded() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 9, 0), None, Some("r1")),
            labelled(2, at(2021, 3, 1, 11, 0), None, Some("r1")),
            labelled(3, at(2021, 3, 2, 10, 0), None, Some("r2")),
        ];
        let policy = Policy {
            last: 1,
            daily: 2,
            within_ns: Some(NS_PER_DAY),
            per_revision: 1,
            keep_revisions: vec!["r1".into()],
            ..Policy::default()
        };
        let ds = run(&snaps, &policy);
        assert_eq!(kept(&ds), set(&[1, 2, 3]));
        assert_eq!(
            reasons_of(&ds, 3),
            ["last", "daily", "within 1d", "per-revision"]
        );
        assert_eq!(
            reasons_of(&ds, 2),
            ["daily", "within 1d", "per-revision", "revision r1"]
        );
        assert_eq!(reasons_of(&ds, 1), ["revision r1"]);
    }

    #[test]
    fn keep_per_revision() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 0, 0), None, Some("r1")),
            labelled(2, at(2021, 3, 2, 0, 0), None, Some("r1")),
            labelled(3, at(2021, 3, 3, 0, 0), None, Some("r1")),
            labelled(4, at(2021, 3, 4, 0, 0), None, Some("r2")),
            labelled(5, at(2021, 3, 5, 0, 0), None, Some("r2")),
            labelled(6, at(2021, 3, 6, 0, 0), None, Some("r3")),
            labelled(7, at(2021, 3, 7, 0, 0), None, None),
        ];
        let per = |n| {
            kept(&run(
                &snaps,
                &Policy {
                    per_revision: n,
                    ..Policy::default()
                },
            ))
        };
        assert_eq!(per(1), set(&[3, 5, 6]));
        assert_eq!(per(2), set(&[2, 3, 4, 5, 6]));
        // Snapshots without a revision are not kept by this rule.
        assert_eq!(per(usize::MAX), set(&[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn keep_revision_protects_every_snapshot_of_it() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 0, 0), Some("web"), Some("r1")),
            labelled(2, at(2021, 3, 2, 0, 0), Some("web"), Some("r1")),
            labelled(3, at(2021, 3, 3, 0, 0), Some("web"), Some("r2")),
            labelled(4, at(2021, 3, 4, 0, 0), Some("web"), Some("r3")),
            labelled(5, at(2021, 3, 5, 0, 0), None, Some("r1")),
            labelled(6, at(2021, 3, 6, 0, 0), None, None),
            labelled(7, at(2021, 3, 7, 0, 0), None, None),
        ];
        let ds = run(
            &snaps,
            &Policy {
                last: 1,
                keep_revisions: vec!["r1".into(), "r9".into()],
                ..Policy::default()
            },
        );
        assert_eq!(kept(&ds), set(&[1, 2, 4, 5, 7]));
        assert_eq!(reasons_of(&ds, 1), ["revision r1"]);
        assert_eq!(reasons_of(&ds, 4), ["last"]);
        assert_eq!(reasons_of(&ds, 5), ["revision r1"]);
    }

    #[test]
    fn newest_snapshot_of_the_active_revision_is_kept() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 0, 0), Some("web"), Some("r1")),
            labelled(2, at(2021, 3, 2, 0, 0), Some("web"), Some("r1")),
            labelled(3, at(2021, 3, 3, 0, 0), Some("web"), Some("r2")),
            labelled(4, at(2021, 3, 4, 0, 0), Some("web"), Some("r2")),
            labelled(5, at(2021, 3, 5, 0, 0), Some("web"), Some("r3")),
            labelled(6, at(2021, 3, 1, 0, 0), Some("db"), Some("r1")),
            labelled(7, at(2021, 3, 2, 0, 0), Some("db"), Some("r1")),
            labelled(8, at(2021, 3, 3, 0, 0), None, Some("r1")),
            labelled(9, at(2021, 3, 4, 0, 0), None, Some("r2")),
        ];
        let active: HashMap<String, String> = [
            ("web".to_owned(), "r1".to_owned()),
            ("db".to_owned(), "r1".to_owned()),
            ("gone".to_owned(), "r7".to_owned()),
        ]
        .into();
        let policy = Policy {
            last: 1,
            ..Policy::default()
        };
        let ds = decide(&snaps, &policy, &active).unwrap();
        // web: 5 is the newest, 2 the newest of active r1 (1 goes). db: 7 is both.
        // Unlabelled snapshots have no active revision.
        assert_eq!(kept(&ds), set(&[2, 5, 7, 9]));
        assert_eq!(reasons_of(&ds, 2), ["active revision"]);
        assert_eq!(reasons_of(&ds, 7), ["last", "active revision"]);
        assert_eq!(reasons_of(&ds, 9), ["last"]);
        assert!(reasons_of(&ds, 8).is_empty());
    }

    #[test]
    fn groups_are_decided_separately() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 0, 0), Some("web"), None),
            labelled(2, at(2021, 3, 2, 0, 0), Some("web"), None),
            labelled(3, at(2021, 3, 9, 0, 0), Some("web"), None),
            labelled(4, at(2021, 3, 3, 0, 0), Some("db"), None),
            labelled(5, at(2021, 3, 4, 0, 0), Some("db"), None),
            labelled(6, at(2021, 3, 5, 0, 0), None, None),
            labelled(7, at(2021, 3, 6, 0, 0), None, None),
        ];
        let ds = run(
            &snaps,
            &Policy {
                last: 1,
                within_ns: Some(NS_PER_DAY),
                ..Policy::default()
            },
        );
        assert_eq!(kept(&ds), set(&[3, 5, 4, 7, 6]));
        // Within is measured from each group's own newest snapshot.
        assert_eq!(reasons_of(&ds, 4), ["within 1d"]);
        assert_eq!(reasons_of(&ds, 6), ["within 1d"]);
        assert!(reasons_of(&ds, 2).is_empty());
        let order: Vec<(u8, Option<&str>)> =
            ds.iter().map(|d| (d.id.0[0], d.group.as_deref())).collect();
        assert_eq!(
            order,
            [
                (7, None),
                (6, None),
                (5, Some("db")),
                (4, Some("db")),
                (3, Some("web")),
                (2, Some("web")),
                (1, Some("web")),
            ]
        );
    }

    #[test]
    fn service_option_decides_only_that_service() {
        let snaps = [
            labelled(1, at(2021, 3, 1, 0, 0), Some("web"), None),
            labelled(2, at(2021, 3, 2, 0, 0), Some("web"), None),
            labelled(3, at(2021, 3, 3, 0, 0), Some("db"), None),
            labelled(4, at(2021, 3, 4, 0, 0), None, None),
        ];
        let ds = run(
            &snaps,
            &Policy {
                last: 1,
                service: Some("web".into()),
                ..Policy::default()
            },
        );
        let decided: BTreeSet<u8> = ds.iter().map(|d| d.id.0[0]).collect();
        assert_eq!(decided, set(&[1, 2]));
        assert_eq!(kept(&ds), set(&[2]));
        assert!(ds.iter().all(|d| d.group.as_deref() == Some("web")));

        let none = run(
            &snaps,
            &Policy {
                last: 1,
                service: Some("mail".into()),
                ..Policy::default()
            },
        );
        assert!(none.is_empty());
    }

    #[test]
    fn a_policy_without_a_rule_is_refused() {
        let snaps = [labelled(1, at(2021, 3, 1, 0, 0), Some("web"), Some("r1"))];
        let active: HashMap<String, String> = [("web".to_owned(), "r1".to_owned())].into();
        let refused = [
            Policy::default(),
            Policy {
                keep_revisions: vec!["r1".into()],
                service: Some("web".into()),
                ..Policy::default()
            },
            Policy {
                last: 1,
                within_ns: Some(-1),
                ..Policy::default()
            },
        ];
        for policy in &refused {
            assert!(matches!(
                decide(&snaps, policy, &active),
                Err(Error::Invalid(_))
            ));
            assert!(matches!(
                decide(&[], policy, &active),
                Err(Error::Invalid(_))
            ));
        }
        let msg = decide(&snaps, &Policy::default(), &active)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no keep rule"), "{msg}");

        // Each rule alone is enough.
        for policy in [
            Policy {
                last: 1,
                ..Policy::default()
            },
            Policy {
                hourly: 1,
                ..Policy::default()
            },
            Policy {
                daily: 1,
                ..Policy::default()
            },
            Policy {
                weekly: 1,
                ..Policy::default()
            },
            Policy {
                monthly: 1,
                ..Policy::default()
            },
            Policy {
                within_ns: Some(0),
                ..Policy::default()
            },
            Policy {
                per_revision: 1,
                ..Policy::default()
            },
        ] {
            assert!(policy.validate().is_ok(), "{policy:?}");
            assert!(decide(&[], &policy, &active).unwrap().is_empty());
        }
    }

    #[test]
    fn parse_duration_accepts_restic_style() {
        let d = NS_PER_DAY;
        assert_eq!(parse_duration("36h").unwrap(), 36 * NS_PER_HOUR);
        assert_eq!(parse_duration("7d").unwrap(), 7 * d);
        assert_eq!(parse_duration("2w").unwrap(), 14 * d);
        assert_eq!(parse_duration("1y2m3d").unwrap(), (365 + 60 + 3) * d);
        assert_eq!(parse_duration("90m").unwrap(), 90 * 30 * d); // months, as in restic
        assert_eq!(parse_duration("90min").unwrap(), 90 * NS_PER_MIN);
        assert_eq!(parse_duration("30s").unwrap(), 30 * NS_PER_SEC);
        assert_eq!(parse_duration("1d12h").unwrap(), 36 * NS_PER_HOUR);
        assert_eq!(parse_duration("0d").unwrap(), 0);
        assert_eq!(parse_duration("007h").unwrap(), 7 * NS_PER_HOUR);
        assert_eq!(parse_duration("290y").unwrap(), 290 * 365 * d);
    }

    #[test]
    fn parse_duration_rejects_garbage() {
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "-7d",
            "+7d",
            "7 d",
            " 7d",
            "7d ",
            "1.5d",
            "7D",
            "7dd",
            "1y2",
            "h1",
            "7hours",
            "300y",
            "99999999999999999999d",
            "١d",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(matches!(err, Error::Invalid(_)), "{bad:?}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("bad duration"), "{bad:?}: {msg}");
        }
        assert!(
            parse_duration("7x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit \"x\"")
        );
    }

    #[test]
    fn durations_format_for_people() {
        assert_eq!(format_duration(7 * NS_PER_DAY), "7d");
        assert_eq!(format_duration(36 * NS_PER_HOUR), "1d12h");
        assert_eq!(format_duration(90 * NS_PER_MIN), "1h30min");
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(NS_PER_SEC + 5), "1s5ns");
        assert_eq!(format_duration(-NS_PER_DAY), "-1d");
        assert_eq!(
            format_duration(i64::MIN),
            format!("-{}", format_duration(i64::MAX))
        );
    }

    #[test]
    fn snapshot_info_from_a_document() {
        let doc = Snapshot {
            version: crate::snapshot::SNAPSHOT_VERSION,
            time_ns: 42,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec![],
            tree: crate::id::BlobId::default(),
            service: Some("web".into()),
            revision: Some("r1".into()),
            tags: vec!["t".into()],
            parent: None,
            summary: Default::default(),
        };
        let info = SnapshotInfo::from_snapshot(id(9), &doc);
        assert_eq!(
            info,
            SnapshotInfo {
                id: id(9),
                time_ns: 42,
                service: Some("web".into()),
                revision: Some("r1".into()),
                tags: vec!["t".into()],
            }
        );
    }
}
