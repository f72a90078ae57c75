//! Timestamps of game logs: parsing the forms of `LOG_FORMAT.md` and mapping instants to the
//! calendar day of the game's time zone.
//!
//! Parsing is on the per-line hot path, so it is hand-written for the two fixed layouts and keeps
//! a one-hour cache of the zone offset (logs arrive roughly in time order, so it almost always
//! hits). A [`GameClock`] is cheap to clone; give each parsing thread its own.

use std::cell::Cell;

use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_HOUR: i64 = 3_600;
const SECONDS_PER_DAY: i64 = 86_400;

/// Why a timestamp did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// The text matches neither `YYYY-MM-DD HH:MM:SS[.f]` nor RFC 3339.
    Layout,
    /// A field is out of range (month 13, hour 25, …).
    Range,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeError::Layout => f.write_str(
                "expected `YYYY-MM-DD HH:MM:SS[.fff]` or RFC 3339 (`2026-11-28T02:10:11Z`)",
            ),
            TimeError::Range => f.write_str("date or time field out of range"),
        }
    }
}

/// The game's time zone with small offset caches; converts log timestamps to UTC microseconds
/// and UTC instants to the game's calendar day.
#[derive(Debug, Clone)]
pub struct GameClock {
    tz: Tz,
    /// (local hour number, offset seconds) of the last local-to-UTC conversion.
    local_cache: Cell<(i64, i64)>,
    /// (UTC hour number, offset seconds) of the last UTC-to-local conversion.
    utc_cache: Cell<(i64, i64)>,
}

impl GameClock {
    /// A clock for the IANA zone `name` (`Asia/Seoul`, `UTC`, `America/Los_Angeles`).
    pub fn new(name: &str) -> Result<Self, String> {
        let tz: Tz = name.parse().map_err(|_| {
            format!("unknown time zone `{name}`: use an IANA name such as `Asia/Seoul`")
        })?;
        Ok(Self::from_tz(tz))
    }

    /// A clock for an already parsed zone.
    pub fn from_tz(tz: Tz) -> Self {
        Self {
            tz,
            local_cache: Cell::new((i64::MIN, 0)),
            utc_cache: Cell::new((i64::MIN, 0)),
        }
    }

    /// The zone of this clock.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.fraction]` (in the game's zone) or RFC 3339 with `T` and an
    /// offset or `Z` (a `T` form without offset is read in the game's zone too) to UTC microseconds.
    pub fn parse_timestamp(&self, text: &str) -> Result<i64, TimeError> {
        let b = text.as_bytes();
        if b.len() < 19 {
            return Err(TimeError::Layout);
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        if b[10] != b' ' && b[10] != b'T' && b[10] != b't' {
            return Err(TimeError::Layout);
        }
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(TimeError::Range);
        }
        if day > days_in_month(year, month) {
            return Err(TimeError::Range);
        }
        let mut i = 19;
        let mut micros = 0i64;
        if i < b.len() && (b[i] == b'.' || b[i] == b',') {
            i += 1;
            let start = i;
            let mut scale = 100_000i64;
            while i < b.len() && b[i].is_ascii_digit() {
                micros += (b[i] - b'0') as i64 * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return Err(TimeError::Layout);
            }
        }
        let local_seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
            + hour * SECONDS_PER_HOUR
            + minute * 60
            + second.min(59);
        let offset_seconds = if i == b.len() {
            self.offset_of_local(local_seconds)
        } else {
            parse_offset(&b[i..])?
        };
        Ok((local_seconds - offset_seconds) * MICROS_PER_SECOND + micros)
    }

    /// Days since 1970-01-01 of the game-zone calendar day that contains the UTC instant.
    pub fn local_date(&self, utc_micros: i64) -> i32 {
        let utc_seconds = utc_micros.div_euclid(MICROS_PER_SECOND);
        let offset = self.offset_of_utc(utc_seconds);
        (utc_seconds + offset).div_euclid(SECONDS_PER_DAY) as i32
    }

    fn offset_of_local(&self, local_seconds: i64) -> i64 {
        let hour = local_seconds.div_euclid(SECONDS_PER_HOUR);
        let (cached_hour, cached_offset) = self.local_cache.get();
        if cached_hour == hour {
            return cached_offset;
        }
        let naive = chrono::DateTime::from_timestamp(local_seconds, 0)
            .expect("seconds of a parsed four-digit year are in range")
            .naive_utc();
        let offset = match self.tz.from_local_datetime(&naive).earliest() {
            Some(dt) => dt.offset().fix().local_minus_utc() as i64,
            // A local time inside a daylight-saving gap: read it with the offset before the gap.
            None => self
                .tz
                .offset_from_utc_datetime(&naive)
                .fix()
                .local_minus_utc() as i64,
        };
        self.local_cache.set((hour, offset));
        offset
    }

    fn offset_of_utc(&self, utc_seconds: i64) -> i64 {
        let hour = utc_seconds.div_euclid(SECONDS_PER_HOUR);
        let (cached_hour, cached_offset) = self.utc_cache.get();
        if cached_hour == hour {
            return cached_offset;
        }
        let offset = match chrono::DateTime::from_timestamp(utc_seconds, 0) {
            Some(dt) => self
                .tz
                .offset_from_utc_datetime(&dt.naive_utc())
                .fix()
                .local_minus_utc() as i64,
            None => 0,
        };
        self.utc_cache.set((hour, offset));
        offset
    }
}

/// Days since 1970-01-01 of a date (proleptic Gregorian), as Arrow's `Date32` counts them.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `YYYY-MM-DD` text of a `Date32` day number.
pub fn format_date32(days: i32) -> String {
    let date = NaiveDate::from_num_days_from_ce_opt(days + 719_163).unwrap_or_default();
    date.format("%Y-%m-%d").to_string()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<i64, TimeError> {
    let mut v = 0i64;
    for &c in &b[at..at + n] {
        if !c.is_ascii_digit() {
            return Err(TimeError::Layout);
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Result<(), TimeError> {
    if b[at] == c {
        Ok(())
    } else {
        Err(TimeError::Layout)
    }
}

/// `Z`, `+09:00`, `-0330` or `+09`.
fn parse_offset(b: &[u8]) -> Result<i64, TimeError> {
    match b {
        [b'Z' | b'z'] => Ok(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hours, minutes) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return Err(TimeError::Layout),
            };
            if hours > 23 || minutes > 59 {
                return Err(TimeError::Range);
            }
            let seconds = hours * SECONDS_PER_HOUR + minutes * 60;
            Ok(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => Err(TimeError::Layout),
    }
}

/// A duration as people write it in config and flags: `500ms`, `30s`, `10m`, `2h`, `7d`
/// (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 10m or 2h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => return Err(format!("`{s}`: unit `{u}` is not ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seoul() -> GameClock {
        GameClock::new("Asia/Seoul").unwrap()
    }

    #[test]
    fn local_form_is_read_in_the_game_zone() {
        let clock = seoul();
        // 2026-11-28 02:10:11.123 KST = 2026-11-27 17:10:11.123 UTC
        let micros = clock.parse_timestamp("2026-11-28 02:10:11.123").unwrap();
        let expected = chrono::DateTime::parse_from_rfc3339("2026-11-27T17:10:11.123Z")
            .unwrap()
            .timestamp_micros();
        assert_eq!(micros, expected);
        assert_eq!(format_date32(clock.local_date(micros)), "2026-11-28");
    }

    #[test]
    fn rfc3339_offsets_are_honoured() {
        let clock = seoul();
        let a = clock
            .parse_timestamp("2026-11-28T02:10:12.004+09:00")
            .unwrap();
        let b = clock.parse_timestamp("2026-11-27T17:10:12.004Z").unwrap();
        let c = clock
            .parse_timestamp("2026-11-27T17:10:12.004000Z")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        // 23:30 UTC on the 27th is already the 28th in Seoul.
        let late = clock.parse_timestamp("2026-11-27T23:30:00Z").unwrap();
        assert_eq!(format_date32(clock.local_date(late)), "2026-11-28");
    }

    #[test]
    fn bad_layouts_and_ranges_are_rejected() {
        let clock = seoul();
        assert_eq!(clock.parse_timestamp("2026-11-28"), Err(TimeError::Layout));
        assert_eq!(
            clock.parse_timestamp("2026/11/28 02:10:11"),
            Err(TimeError::Layout)
        );
        assert_eq!(
            clock.parse_timestamp("2026-13-28 02:10:11"),
            Err(TimeError::Range)
        );
        assert_eq!(
            clock.parse_timestamp("2026-02-30 02:10:11"),
            Err(TimeError::Range)
        );
        assert_eq!(
            clock.parse_timestamp("2026-11-28 02:10:11+25:00"),
            Err(TimeError::Range)
        );
        assert_eq!(
            clock.parse_timestamp("2026-11-28 02:10:11 junk"),
            Err(TimeError::Layout)
        );
    }

    #[test]
    fn daylight_saving_zones_convert_both_ways() {
        let clock = GameClock::new("America/Los_Angeles").unwrap();
        let summer = clock.parse_timestamp("2026-07-01 12:00:00").unwrap();
        let winter = clock.parse_timestamp("2026-12-01 12:00:00").unwrap();
        assert_eq!(
            summer,
            clock.parse_timestamp("2026-07-01T19:00:00Z").unwrap()
        );
        assert_eq!(
            winter,
            clock.parse_timestamp("2026-12-01T20:00:00Z").unwrap()
        );
    }

    #[test]
    fn civil_days_match_chrono() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 11, 28), (1969, 12, 31)] {
            let chrono_days = NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)
                .unwrap()
                .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days();
            assert_eq!(days_from_civil(y, m, d), chrono_days);
        }
    }
}
