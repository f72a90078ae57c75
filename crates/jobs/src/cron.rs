//! Cron schedules: the five fields of Vixie cron (`minute hour day-of-month month day-of-week`),
//! evaluated in a time zone.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists `a,b,c`; months
//! and weekdays also take English three-letter names (`jan`, `mon`); Sunday is 0 or 7. As in
//! Vixie cron, when both day fields are restricted a day matching either one fires. `@hourly`,
//! `@daily`, `@weekly` and `@monthly` are short for the usual lines.
//!
//! Local times skipped by a daylight-saving jump do not fire; a repeated local time fires once,
//! at its first occurrence.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    pub fn parse(text: &str) -> Result<Self, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{text}` is not a cron schedule: it needs 5 fields (minute hour day-of-month month day-of-week), it has {}",
                fields.len()
            ));
        }
        let minutes = field(fields[0], 0, 59, &[], "minute")?;
        let hours = field(fields[1], 0, 23, &[], "hour")?;
        let days = field(fields[2], 1, 31, &[], "day-of-month")?;
        let months = field(fields[3], 1, 12, &MONTHS, "month")?;
        let mut weekdays = field(fields[4], 0, 7, &WEEKDAYS, "day-of-week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            text: text.trim().to_string(),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first instant strictly after `after` at which the schedule fires in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).date_naive() - Duration::days(1);
        // Five years of days covers every satisfiable line (29 February included).
        for offset in 0..(366 * 5) {
            let date = start + Duration::days(offset);
            if !self.day_matches(date) {
                continue;
            }
            for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                    let local = date.and_hms_opt(hour, minute, 0).expect("valid time");
                    let instant = match tz.from_local_datetime(&local) {
                        LocalResult::Single(t) => t,
                        LocalResult::Ambiguous(first, _) => first,
                        LocalResult::None => continue,
                    };
                    let instant = instant.with_timezone(&Utc);
                    if instant > after {
                        return Some(instant);
                    }
                }
            }
        }
        None
    }

    /// Fire instants in `(from, to]`, oldest first, at most `limit`.
    pub fn fires_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: Tz,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < limit {
            match self.next_after(at, tz) {
                Some(t) if t <= to => {
                    out.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        out
    }
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// One field as a bit set of the values it allows.
fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let bad = |why: String| format!("cron {what} field `{text}`: {why}");
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Month names count from 1 (`jan`), weekday names from 0 (`sun`).
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(format!("`{s}` is not a number")))?;
        if v < min || v > max {
            return Err(bad(format!("{v} is outside {min}-{max}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| bad(format!("step `{s}` is not a positive number")))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(bad(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // `5/15` means 5, 20, 35, 50 as in Vixie cron.
            (v, if step > 1 { max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_in_seoul() {
        let c = Cron::parse("30 0 * * *").unwrap();
        // 00:30 in Seoul is 15:30 UTC of the day before.
        let next = c
            .next_after(utc("2026-11-28T00:00:00Z"), chrono_tz::Asia::Seoul)
            .unwrap();
        assert_eq!(next, utc("2026-11-28T15:30:00Z"));
        let next = c.next_after(next, chrono_tz::Asia::Seoul).unwrap();
        assert_eq!(next, utc("2026-11-29T15:30:00Z"));
    }

    #[test]
    fn steps_lists_ranges_and_names() {
        let c = Cron::parse("*/15 9-17 * * mon-fri").unwrap();
        let fires = c.fires_between(
            utc("2026-11-27T16:50:00Z"), // a Friday
            utc("2026-11-30T09:20:00Z"), // the Monday after
            chrono_tz::UTC,
            100,
        );
        assert_eq!(
            fires,
            vec![
                utc("2026-11-27T17:00:00Z"),
                utc("2026-11-27T17:15:00Z"),
                utc("2026-11-27T17:30:00Z"),
                utc("2026-11-27T17:45:00Z"),
                utc("2026-11-30T09:00:00Z"),
                utc("2026-11-30T09:15:00Z"),
            ]
        );
        let c = Cron::parse("0 0 1,15 jan,jul *").unwrap();
        assert_eq!(
            c.next_after(utc("2026-11-28T00:00:00Z"), chrono_tz::UTC),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        // Either day field matches when both are restricted; 7 is Sunday.
        let c = Cron::parse("0 12 13 * 7").unwrap();
        assert_eq!(
            c.next_after(utc("2026-11-28T00:00:00Z"), chrono_tz::UTC),
            Some(utc("2026-11-29T12:00:00Z"))
        );
        assert_eq!(Cron::parse("@hourly").unwrap().minutes, 1);
    }

    #[test]
    fn daylight_saving_gap_and_repeat() {
        let ny = chrono_tz::America::New_York;
        let c = Cron::parse("30 2 * * *").unwrap();
        // 2026-03-08 02:30 does not exist in New York: that day does not fire.
        let fires = c.fires_between(
            utc("2026-03-07T00:00:00Z"),
            utc("2026-03-10T00:00:00Z"),
            ny,
            10,
        );
        assert_eq!(
            fires,
            vec![utc("2026-03-07T07:30:00Z"), utc("2026-03-09T06:30:00Z")]
        );
        // 2026-11-01 01:30 happens twice: it fires once.
        let c = Cron::parse("30 1 * * *").unwrap();
        let fires = c.fires_between(
            utc("2026-11-01T00:00:00Z"),
            utc("2026-11-01T12:00:00Z"),
            ny,
            10,
        );
        assert_eq!(fires, vec![utc("2026-11-01T05:30:00Z")]);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            ("* * *", "5 fields"),
            ("60 * * * *", "minute field `60`: 60 is outside 0-59"),
            ("* 5-2 * * *", "runs backwards"),
            ("*/0 * * * *", "step `0`"),
            ("* * * foo *", "month field `foo`"),
        ] {
            let e = Cron::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
