//! Job files: a SQL query under a header of `-- key: value` comment lines.
//!
//! ```sql
//! -- name: dau
//! -- description: daily active, new and paying accounts
//! -- schedule: 15 0 * * *          (cron; the default builds the day or hour that just ended)
//! -- granularity: day              (day | hour)
//! -- depends_on: silver.*, first_days
//! -- rebuild_back: 1, 7, 30        (also rebuild the partitions this many days or hours back)
//! -- depends_on_past: true         (a day or hour is built only after every earlier one with data)
//! -- target_columns: account STRING, first_date DATE  (create `gold.<name>` empty before the
//! --                                first build, for a job that reads its own earlier days)
//! -- retries: 2
//! -- retry_backoff: 30s
//! -- timeout: 30m
//! SELECT :date AS event_date, count(DISTINCT account) AS dau FROM kpi.activity WHERE event_date = :date
//! ```
//!
//! The query sees the partition it builds as parameters ([`Partition::params`]); its result
//! replaces exactly that partition of `gold.<name>`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use gamelake_lake::arrow::datatypes::{DataType, Field, TimeUnit};

use crate::cron::Cron;

/// How much time one partition of a job covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Hour,
}

impl Granularity {
    /// `day` or `hour`, as the job header writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Hour => "hour",
        }
    }
}

/// One partition: a game day, or an hour of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub date: NaiveDate,
    /// The hour of the day (game time zone) for hourly jobs.
    pub hour: Option<u8>,
}

impl Partition {
    pub fn day(date: NaiveDate) -> Self {
        Self { date, hour: None }
    }

    pub fn hour(date: NaiveDate, hour: u8) -> Self {
        Self {
            date,
            hour: Some(hour),
        }
    }

    /// Parses `2026-11-28` or `2026-11-28T05` (the form [`Display`](std::fmt::Display) writes).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (date, hour) = match text.split_once('T') {
            Some((d, h)) => (d, Some(h)),
            None => (text, None),
        };
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| format!("`{text}` is not a date like 2026-11-28 (or 2026-11-28T05)"))?;
        let hour = match hour {
            None => None,
            Some(h) => Some(
                h.parse::<u8>()
                    .ok()
                    .filter(|h| *h < 24)
                    .ok_or_else(|| format!("`{text}`: the hour must be 00 to 23"))?,
            ),
        };
        Ok(Self { date, hour })
    }

    /// The instants `[start, end)` the partition covers in `tz`.
    pub fn bounds(&self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let local_start = |date: NaiveDate, hour: u32| {
            let naive = date.and_hms_opt(hour, 0, 0).expect("valid hour");
            // A day or hour that starts inside a daylight-saving gap starts when the gap ends.
            tz.from_local_datetime(&naive)
                .earliest()
                .or_else(|| tz.from_local_datetime(&(naive + Span::hours(1))).earliest())
                .expect("an hour after a gap exists")
                .with_timezone(&Utc)
        };
        match self.hour {
            None => (
                local_start(self.date, 0),
                local_start(self.date + Span::days(1), 0),
            ),
            Some(h) if h < 23 => (
                local_start(self.date, h as u32),
                local_start(self.date, h as u32 + 1),
            ),
            Some(h) => (
                local_start(self.date, h as u32),
                local_start(self.date + Span::days(1), 0),
            ),
        }
    }

    /// The partition `n` days or hours before this one.
    pub fn back(&self, n: u32) -> Self {
        match self.hour {
            None => Self::day(self.date - Span::days(n as i64)),
            Some(h) => {
                let total = self.date.and_hms_opt(h as u32, 0, 0).expect("valid hour")
                    - Span::hours(n as i64);
                Self::hour(total.date(), total.hour() as u8)
            }
        }
    }

    /// The SQL values of `:date`, `:hour`, `:start`, `:end` and `:today`.
    pub fn params(&self, tz: Tz, today: NaiveDate) -> BTreeMap<&'static str, String> {
        let (start, end) = self.bounds(tz);
        let ts = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%SZ"));
        let mut p = BTreeMap::new();
        p.insert("date", format!("DATE '{}'", self.date));
        p.insert("start", ts(start));
        p.insert("end", ts(end));
        p.insert("today", format!("DATE '{today}'"));
        if let Some(h) = self.hour {
            p.insert("hour", format!("CAST({h} AS INT)"));
        }
        p
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.hour {
            None => write!(f, "{}", self.date),
            Some(h) => write!(f, "{}T{h:02}", self.date),
        }
    }
}

/// What a job waits for or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependency {
    /// Another job: this job's partition runs after that job built the same partition.
    Job(String),
    /// A table (`silver.payment`) or all tables of a schema (`silver.*`; of silver, the ones
    /// the job's SQL reads): new rows in a built partition make the job build it again.
    Table { schema: String, table: String },
}

/// A job as its file declares it.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub description: String,
    /// Where the file came from (`builtin:dau.sql` or a path).
    pub source: String,
    pub sql: String,
    pub granularity: Granularity,
    /// `None`: runs only when asked (`gamelake jobs run`).
    pub schedule: Option<Cron>,
    pub time_zone: Tz,
    /// The date column of the target table (`event_date`; hourly jobs also `event_hour`).
    pub partition_column: String,
    pub depends_on: Vec<Dependency>,
    pub rebuild_back: Vec<u32>,
    /// Each partition reads the job's own earlier ones (Airflow's `depends_on_past`): a day (an
    /// hour) is built only once every earlier day (hour) with source rows is, and a rebuilt one
    /// makes the later built ones due again.
    pub depends_on_past: bool,
    /// The target's columns, when the job reads its own table: `gold.<name>` is created empty
    /// with them before the first build, so that the first build can read it.
    pub target_columns: Option<Vec<Field>>,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub timeout: Duration,
}

/// Default schedules: a few minutes after the day or hour ends, so that its late lines land.
pub const DEFAULT_DAILY: &str = "15 0 * * *";
pub const DEFAULT_HOURLY: &str = "10 * * * *";

impl JobSpec {
    /// Parses a job file. `default_tz` is the game's time zone.
    pub fn parse(
        source: &str,
        default_name: &str,
        text: &str,
        default_tz: Tz,
    ) -> Result<Self, String> {
        let err = |line: usize, msg: String| format!("{source}:{line}: {msg}");
        let mut header: BTreeMap<String, (usize, String)> = BTreeMap::new();
        let mut body_start = 0;
        let mut description = Vec::new();
        // The header is the leading `-- key: value` lines; the first other line starts the SQL
        // (comments after the header, such as the written-down decisions, stay in it).
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let trimmed = line.trim();
            let entry = trimmed
                .strip_prefix("--")
                .and_then(|c| c.trim().split_once(':'))
                .filter(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                });
            match entry {
                Some((key, value)) => {
                    let (key, value) = (key.to_string(), value.trim().to_string());
                    if key == "description" {
                        description.push(value);
                    } else if header.insert(key.clone(), (i + 1, value)).is_some() {
                        return Err(err(i + 1, format!("`{key}` is given twice")));
                    }
                }
                None if trimmed.is_empty() => {}
                None => break,
            }
            body_start += line.len();
        }
        let sql = text[body_start.min(text.len())..]
            .trim()
            .trim_end_matches(';')
            .to_string();
        if sql.is_empty() {
            return Err(format!("{source}: the job has no SQL after its header"));
        }
        let mut take = |key: &str| header.remove(key);
        let name = take("name")
            .map(|v| v.1)
            .unwrap_or_else(|| default_name.to_string());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "{source}: job name `{name}` must be lower-case letters, digits and `_`"
            ));
        }
        let granularity = match take("granularity") {
            None => Granularity::Day,
            Some((_, v)) if v == "day" => Granularity::Day,
            Some((_, v)) if v == "hour" => Granularity::Hour,
            Some((l, v)) => return Err(err(l, format!("`granularity: {v}`: use `day` or `hour`"))),
        };
        let time_zone = match take("time_zone") {
            None => default_tz,
            Some((l, v)) => v
                .parse::<Tz>()
                .map_err(|_| err(l, format!("`time_zone: {v}` is not an IANA time zone")))?,
        };
        let schedule = match take("schedule") {
            Some((_, v)) if v == "none" || v == "manual" => None,
            Some((l, v)) => Some(Cron::parse(&v).map_err(|e| err(l, format!("`schedule`: {e}")))?),
            None => Some(
                Cron::parse(match granularity {
                    Granularity::Day => DEFAULT_DAILY,
                    Granularity::Hour => DEFAULT_HOURLY,
                })
                .expect("default schedules parse"),
            ),
        };
        let partition_column = take("partition_column")
            .map(|v| v.1)
            .unwrap_or_else(|| gamelake_common::COL_EVENT_DATE.to_string());
        let depends_on = match take("depends_on") {
            None => vec![Dependency::Table {
                schema: gamelake_common::SCHEMA_SILVER.into(),
                table: "*".into(),
            }],
            Some((l, v)) => list(&v)
                .map(|d| match d.split_once('.') {
                    Some((schema, table)) if !schema.is_empty() && !table.is_empty() => {
                        Ok(Dependency::Table {
                            schema: schema.into(),
                            table: table.into(),
                        })
                    }
                    Some(_) => Err(err(l, format!("`depends_on`: `{d}` is not schema.table"))),
                    None => Ok(Dependency::Job(d.to_string())),
                })
                .collect::<Result<_, _>>()?,
        };
        let rebuild_back = match take("rebuild_back") {
            None => Vec::new(),
            Some((l, v)) => list(&v)
                .map(|n| {
                    n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        err(l, format!("`rebuild_back`: `{n}` is not a positive number"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let depends_on_past = match take("depends_on_past") {
            None => false,
            Some((_, v)) if v == "true" => true,
            Some((_, v)) if v == "false" => false,
            Some((l, v)) => {
                return Err(err(
                    l,
                    format!("`depends_on_past: {v}`: use `true` or `false`"),
                ))
            }
        };
        let target_columns = match take("target_columns") {
            None => None,
            Some((l, v)) => {
                let fields = columns(&v).map_err(|e| err(l, format!("`target_columns`: {e}")))?;
                if !fields.iter().any(|f| f.name() == &partition_column) {
                    return Err(err(
                        l,
                        format!("`target_columns` must include the partition column `{partition_column}`"),
                    ));
                }
                Some(fields)
            }
        };
        let retries = match take("retries") {
            None => 2,
            Some((l, v)) => v
                .parse()
                .map_err(|_| err(l, format!("`retries: {v}` is not a number")))?,
        };
        let mut duration = |key: &str, default: Duration| match take(key) {
            None => Ok(default),
            Some((l, v)) => {
                gamelake_common::parse_duration(&v).map_err(|e| err(l, format!("`{key}`: {e}")))
            }
        };
        let retry_backoff = duration("retry_backoff", Duration::from_secs(30))?;
        let timeout = duration("timeout", Duration::from_secs(30 * 60))?;
        if let Some((key, (line, _))) = header.into_iter().next() {
            return Err(err(
                line,
                format!(
                    "unknown header key `{key}` (known: name, description, schedule, time_zone, \
                     granularity, partition_column, depends_on, rebuild_back, depends_on_past, \
                     target_columns, retries, retry_backoff, timeout)"
                ),
            ));
        }
        // Check the parameters now, not at the first run.
        let probe_date = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
        let probe = match granularity {
            Granularity::Day => Partition::day(probe_date),
            Granularity::Hour => Partition::hour(probe_date, 0),
        };
        substitute(&sql, &probe.params(time_zone, probe_date))
            .map_err(|e| format!("{source}: {e}"))?;
        Ok(Self {
            name,
            description: description.join(" "),
            source: source.to_string(),
            sql,
            granularity,
            schedule,
            time_zone,
            partition_column,
            depends_on,
            rebuild_back,
            depends_on_past,
            target_columns,
            retries,
            retry_backoff,
            timeout,
        })
    }

    /// `gold.<name>`.
    pub fn target(&self) -> gamelake_lake::TableId {
        gamelake_lake::TableId::new(gamelake_common::SCHEMA_GOLD, &self.name)
    }

    /// Whether a build reads the job's own table (its earlier partitions): such partitions are
    /// built and committed one at a time, in order. True with `depends_on_past`,
    /// `target_columns`, or SQL that names `gold.<name>`.
    pub fn reads_itself(&self) -> bool {
        let sql = self.sql.to_lowercase();
        let name = self.name.to_lowercase();
        self.depends_on_past
            || self.target_columns.is_some()
            || sql.contains(&format!("gold.{name}"))
            || sql.contains(&format!("gold.\"{name}\""))
    }

    /// The jobs this one waits for.
    pub fn upstream_jobs(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().filter_map(|d| match d {
            Dependency::Job(j) => Some(j.as_str()),
            Dependency::Table { .. } => None,
        })
    }

    /// The partition a run fired at `at` builds: the last whole day or hour before it.
    pub fn partition_for_fire(&self, at: DateTime<Utc>) -> Partition {
        let local = at.with_timezone(&self.time_zone);
        match self.granularity {
            Granularity::Day => Partition::day(local.date_naive() - Span::days(1)),
            Granularity::Hour => {
                let prev = local.naive_local() - Span::hours(1);
                Partition::hour(prev.date(), prev.hour() as u8)
            }
        }
    }

    /// The partitions a build of `p` also refreshes, `p` first.
    pub fn with_rebuilds(&self, p: Partition) -> Vec<Partition> {
        let mut out = vec![p];
        out.extend(self.rebuild_back.iter().map(|n| p.back(*n)));
        out
    }

    /// Every partition from `from` to `to` (inclusive) at the job's granularity.
    pub fn partitions(&self, from: NaiveDate, to: NaiveDate) -> Vec<Partition> {
        let mut out = Vec::new();
        let mut d = from;
        while d <= to {
            match self.granularity {
                Granularity::Day => out.push(Partition::day(d)),
                Granularity::Hour => out.extend((0..24).map(|h| Partition::hour(d, h))),
            }
            d += Span::days(1);
        }
        out
    }

    /// The SQL with the partition's parameters in place.
    pub fn sql_for(&self, p: Partition, today: NaiveDate) -> Result<String, String> {
        substitute(&self.sql, &p.params(self.time_zone, today))
    }
}

/// `account STRING, first_date DATE`: nullable columns of the SQL types jobs write.
fn columns(text: &str) -> Result<Vec<Field>, String> {
    let mut out: Vec<Field> = Vec::new();
    for item in list(text) {
        let (name, ty) = item
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("`{item}` is not `name TYPE`"))?;
        let ty = ty.trim();
        let data_type = match ty.to_ascii_uppercase().as_str() {
            "STRING" | "TEXT" | "VARCHAR" => DataType::Utf8,
            "DATE" => DataType::Date32,
            "BIGINT" | "INT8" => DataType::Int64,
            "INT" | "INTEGER" | "INT4" => DataType::Int32,
            "DOUBLE" | "FLOAT8" => DataType::Float64,
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            _ => {
                return Err(format!(
                    "`{ty}` (column `{name}`) is not one of STRING, DATE, BIGINT, INT, DOUBLE, BOOLEAN, TIMESTAMP"
                ))
            }
        };
        if out.iter().any(|f| f.name() == name) {
            return Err(format!("column `{name}` is named twice"));
        }
        out.push(Field::new(name, data_type, true));
    }
    if out.is_empty() {
        return Err("no columns".into());
    }
    Ok(out)
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Replaces `:name` parameters outside strings, quoted names and comments; `::` casts stay.
pub fn substitute(sql: &str, params: &BTreeMap<&'static str, String>) -> Result<String, String> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                let value = params.get(name).ok_or_else(|| {
                    let known: Vec<String> = params.keys().map(|k| format!(":{k}")).collect();
                    format!("unknown parameter `:{name}` (known: {})", known.join(", "))
                })?;
                out.push_str(&sql[copied..i]);
                out.push_str(value);
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn header_and_defaults() {
        let text = "-- name: dau\n-- description: daily\n-- description: active accounts\n\
                    -- depends_on: silver.*, first_days\n-- rebuild_back: 1, 7\n\
                    -- a note that stays in the SQL\nSELECT :date AS event_date;\n";
        let j = JobSpec::parse("t.sql", "x", text, chrono_tz::Asia::Seoul).unwrap();
        assert_eq!(j.name, "dau");
        assert_eq!(j.description, "daily active accounts");
        assert_eq!(j.granularity, Granularity::Day);
        assert_eq!(j.schedule.as_ref().unwrap().text(), DEFAULT_DAILY);
        assert_eq!(j.upstream_jobs().collect::<Vec<_>>(), ["first_days"]);
        assert_eq!(j.rebuild_back, [1, 7]);
        assert_eq!(j.retries, 2);
        assert_eq!(
            j.sql,
            "-- a note that stays in the SQL\nSELECT :date AS event_date"
        );
        assert_eq!(
            j.with_rebuilds(Partition::day(date("2026-11-28"))),
            [
                Partition::day(date("2026-11-28")),
                Partition::day(date("2026-11-27")),
                Partition::day(date("2026-11-21"))
            ]
        );
    }

    #[test]
    fn header_errors_name_file_line_and_key() {
        for (text, needle) in [
            (
                "-- schedul: 1 * * * *\nSELECT 1",
                "t.sql:1: unknown header key `schedul`",
            ),
            (
                "-- schedule: 61 * * * *\nSELECT 1",
                "t.sql:1: `schedule`: cron minute",
            ),
            ("-- granularity: week\nSELECT 1", "use `day` or `hour`"),
            ("-- name: x\n", "no SQL"),
            ("SELECT :dat", "unknown parameter `:dat`"),
            ("-- timeout: 5 parsecs\nSELECT 1", "`timeout`"),
        ] {
            let e = JobSpec::parse("t.sql", "x", text, chrono_tz::UTC).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn parameters_skip_strings_comments_and_casts() {
        let p = Partition::hour(date("2026-11-28"), 5)
            .params(chrono_tz::Asia::Seoul, date("2026-11-29"));
        let sql = "SELECT ':date', \":start\", x::date, :date, :hour -- :end\n/* :end */ FROM t WHERE t >= :start AND t < :end AND d < :today";
        assert_eq!(
            substitute(sql, &p).unwrap(),
            "SELECT ':date', \":start\", x::date, DATE '2026-11-28', CAST(5 AS INT) -- :end\n/* :end */ FROM t \
             WHERE t >= TIMESTAMP '2026-11-27T20:00:00Z' AND t < TIMESTAMP '2026-11-27T21:00:00Z' AND d < DATE '2026-11-29'"
        );
    }

    #[test]
    fn partitions_fire_times_and_bounds() {
        let j = JobSpec::parse(
            "t.sql",
            "h",
            "-- granularity: hour\nSELECT 1",
            chrono_tz::Asia::Seoul,
        )
        .unwrap();
        // 00:10 in Seoul on the 29th builds hour 23 of the 28th.
        let at = DateTime::parse_from_rfc3339("2026-11-28T15:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(j.partition_for_fire(at).to_string(), "2026-11-28T23");
        assert_eq!(
            Partition::hour(date("2026-11-28"), 0).back(1).to_string(),
            "2026-11-27T23"
        );
        assert_eq!(
            Partition::parse("2026-11-28T05").unwrap(),
            Partition::hour(date("2026-11-28"), 5)
        );
        assert!(Partition::parse("2026-11-28T24").is_err());
        assert_eq!(
            j.partitions(date("2026-11-27"), date("2026-11-28")).len(),
            48
        );
        // A day in New York when clocks go back has 25 hours.
        let (s, e) = Partition::day(date("2026-11-01")).bounds(chrono_tz::America::New_York);
        assert_eq!((e - s).num_hours(), 25);
    }
}
