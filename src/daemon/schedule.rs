//! When the daemon runs: a cron expression in a time zone.
//!
//! Three shapes are accepted. The standard five fields (`minute hour
//! day-of-month month day-of-week`, `*/15 * * * *`), whose day of week counts
//! from 0 = Sunday (7 is Sunday too); and the `cron` crate's own six and seven
//! fields (seconds first, an optional year last), whose day of week counts
//! from 1 = Sunday. Five-field expressions are translated: `0 ` is prepended
//! for the seconds and day-of-week numbers are rewritten, so `0 9 * * 1` is
//! Monday at 09:00 as in crontab(5). `@hourly`, `@daily` and the like are
//! passed to the crate as they are.
//!
//! One difference from crontab(5) remains: when both the day of month and
//! the day of week are restricted, a time must match both (crontab matches
//! either).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Why a schedule cannot be used. The messages name the expression, never a key:
/// the config layer adds the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("{expression:?} is not a cron expression: {detail}")]
    Expression { expression: String, detail: String },
    #[error("{name:?} is not a time zone name from the IANA database (for example UTC or Europe/Berlin)")]
    TimeZone { name: String },
}

/// A parsed cron expression and the time zone it is read in.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    /// As written in the config.
    expression: String,
    schedule: cron::Schedule,
    time_zone: Tz,
}

impl CronSchedule {
    pub fn parse(expression: &str, time_zone: &str) -> Result<CronSchedule, ScheduleError> {
        let time_zone: Tz = time_zone
            .trim()
            .parse()
            .map_err(|_| ScheduleError::TimeZone {
                name: time_zone.to_owned(),
            })?;
        let fail = |detail: String| ScheduleError::Expression {
            expression: expression.to_owned(),
            detail,
        };
        let crate_syntax = to_crate_syntax(expression).map_err(fail)?;
        let schedule = cron::Schedule::from_str(&crate_syntax).map_err(|e| fail(e.to_string()))?;
        Ok(CronSchedule {
            expression: expression.trim().to_owned(),
            schedule,
            time_zone,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first fire time strictly after `t`; None when the schedule never
    /// fires again (a seven-field expression whose years are past).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&t.with_timezone(&self.time_zone))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Rewrites a five-field expression for the `cron` crate; six and seven
/// fields and `@` shortcuts are left alone.
fn to_crate_syntax(expression: &str) -> Result<String, String> {
    let e = expression.trim();
    if e.starts_with('@') {
        return Ok(e.to_owned());
    }
    let fields: Vec<&str> = e.split_whitespace().collect();
    match fields.len() {
        5 => Ok(format!(
            "0 {} {} {} {} {}",
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            standard_weekdays(fields[4])?
        )),
        6 | 7 => Ok(fields.join(" ")),
        n => Err(format!(
            "{n} fields; give 5 (minute hour day-of-month month day-of-week), or 6 or 7 with seconds first and an optional year last"
        )),
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A crontab(5) day-of-week field (0 or 7 = Sunday) as the crate's list of
/// days (1 = Sunday). `*` and `?` stay as they are.
fn standard_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("day of week: {s:?} is not a step (1 or more)"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (weekday(a)?, weekday(b)?),
            None if step > 1 => (weekday(range)?, 7),
            None => {
                let d = weekday(range)?;
                (d, d)
            }
        };
        if first > last {
            return Err(format!(
                "day of week: the range {range:?} goes backwards (write it as two ranges)"
            ));
        }
        for d in (first..=last).step_by(usize::from(step)) {
            days[usize::from(d % 7)] = true;
        }
    }
    let list: Vec<String> = days
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(d, _)| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

/// A crontab(5) day of week: 0 to 7 (0 and 7 are Sunday) or a name.
fn weekday(value: &str) -> Result<u8, String> {
    if let Ok(n) = value.parse::<u8>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day of week: {n} is not from 0 to 7"))
        };
    }
    let upper = value.to_ascii_uppercase();
    DAY_NAMES
        .iter()
        .position(|name| upper.starts_with(name) && name.len() == 3 && upper.len() == 3)
        .map(|p| p as u8)
        .ok_or_else(|| format!("day of week: {value:?} is not a day (0-7 or SUN-SAT)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::parse(expr, tz).unwrap();
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn a_five_field_expression_fires_on_the_minute() {
        assert_eq!(
            fires("*/15 * * * *", "UTC", "2024-03-04T10:07:31Z", 3),
            [
                "2024-03-04T10:15:00+00:00",
                "2024-03-04T10:30:00+00:00",
                "2024-03-04T10:45:00+00:00"
            ]
        );
    }

    #[test]
    fn a_fire_time_is_strictly_after_the_given_instant() {
        assert_eq!(
            fires("*/15 * * * *", "UTC", "2024-03-04T10:15:00Z", 1),
            ["2024-03-04T10:30:00+00:00"]
        );
    }

    #[test]
    fn six_and_seven_field_expressions_have_seconds_first() {
        assert_eq!(
            fires("* * * * * *", "UTC", "2024-03-04T10:07:31Z", 2),
            ["2024-03-04T10:07:32+00:00", "2024-03-04T10:07:33+00:00"]
        );
        assert_eq!(
            fires("30 0 6 * * * 2025", "UTC", "2024-03-04T10:07:31Z", 1),
            ["2025-01-01T06:00:30+00:00"]
        );
        let past = CronSchedule::parse("0 0 0 1 1 * 2020", "UTC").unwrap();
        assert_eq!(past.next_after(utc("2024-01-01T00:00:00Z")), None);
    }

    #[test]
    fn weekday_one_in_five_fields_is_monday_as_in_crontab() {
        // 2024-03-03 is a Sunday.
        let t = fires("0 9 * * 1", "UTC", "2024-03-03T12:00:00Z", 1);
        assert_eq!(t, ["2024-03-04T09:00:00+00:00"]);
        assert_eq!(utc(&t[0]).weekday(), Weekday::Mon);
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * sun"] {
            assert_eq!(
                fires(sunday, "UTC", "2024-03-01T00:00:00Z", 1),
                ["2024-03-03T09:00:00+00:00"],
                "{sunday}"
            );
        }
        // Monday to Friday, and Friday to Sunday (7 at the end of a range).
        let weekdays: Vec<Weekday> = fires("0 9 * * 1-5", "UTC", "2024-03-03T00:00:00Z", 6)
            .iter()
            .map(|t| utc(t).weekday())
            .collect();
        use Weekday::*;
        assert_eq!(weekdays, [Mon, Tue, Wed, Thu, Fri, Mon]);
        let weekend: Vec<Weekday> = fires("0 9 * * 5-7", "UTC", "2024-03-04T00:00:00Z", 4)
            .iter()
            .map(|t| utc(t).weekday())
            .collect();
        assert_eq!(weekend, [Fri, Sat, Sun, Fri]);
        let every_other: Vec<Weekday> = fires("0 9 * * */2", "UTC", "2024-03-02T10:00:00Z", 4)
            .iter()
            .map(|t| utc(t).weekday())
            .collect();
        assert_eq!(every_other, [Sun, Tue, Thu, Sat]);
    }

    #[test]
    fn the_six_field_form_keeps_the_crates_weekday_numbers() {
        // In the crate's own syntax 2 is Monday.
        let t = fires("0 0 9 * * 2", "UTC", "2024-03-03T12:00:00Z", 1);
        assert_eq!(utc(&t[0]).weekday(), Weekday::Mon);
    }

    #[test]
    fn shortcuts_are_accepted() {
        assert_eq!(
            fires("@hourly", "UTC", "2024-03-04T10:07:31Z", 1),
            ["2024-03-04T11:00:00+00:00"]
        );
    }

    #[test]
    fn a_time_zone_moves_the_fire_time_and_follows_daylight_saving() {
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        assert_eq!(
            fires("0 2 * * *", "Europe/Berlin", "2024-01-10T12:00:00Z", 1),
            ["2024-01-11T01:00:00+00:00"]
        );
        assert_eq!(
            fires("0 2 * * *", "Europe/Berlin", "2024-07-10T12:00:00Z", 1),
            ["2024-07-11T00:00:00+00:00"]
        );
        let s = CronSchedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        let local = s
            .next_after(utc("2024-07-10T12:00:00Z"))
            .unwrap()
            .with_timezone(&s.time_zone());
        assert_eq!((local.hour(), local.minute()), (2, 0));
        assert_eq!(
            chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2024, 7, 11, 2, 0, 0)
                .unwrap(),
            local
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let e = CronSchedule::parse("*/15 * * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("4 fields; give 5"), "{e}");
        let e = CronSchedule::parse("0 9 * * 8", "UTC").unwrap_err();
        assert!(e.to_string().contains("8 is not from 0 to 7"), "{e}");
        let e = CronSchedule::parse("0 9 * * 5-1", "UTC").unwrap_err();
        assert!(e.to_string().contains("goes backwards"), "{e}");
        let e = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("\"61 * * * *\" is not a cron expression"),
            "{e}"
        );
        let e = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(
            e,
            ScheduleError::TimeZone {
                name: "Mars/Olympus".to_owned()
            }
        );
    }
}
