//! The `kpi` views: the silver tables seen through the roles of shared/KPI.md (account, world,
//! platform, store, payment amount, …), so that the shipped jobs read one shape whatever the
//! game calls its fields.
//!
//! Which field plays a role is configuration (`[kpi]`), a list tried in order: the first field a
//! row has wins (`coalesce`), so a table holding both `account_id` (kv lines) and `playerId`
//! (bare lines) yields one `account` column. Every role is read as text, amounts and counts as
//! numbers. A table lacking every field of a role gives NULL there. The views are built afresh
//! for each run from the tables' current columns, so new tables and columns are picked up.
//!
//! | view | rows | columns |
//! | --- | --- | --- |
//! | `kpi.activity` | every event of every silver table with an account field | account, world, os, store, code, event_time, event_date |
//! | `kpi.payments` | payment codes | account, amount, world, os, store, event_time, event_date |
//! | `kpi.sessions` | login, logout and heartbeat codes | account, kind (`login`/`logout`/`heartbeat`), event_time, event_date |
//! | `kpi.currency` | currency codes | account, currency, delta, reason, world, event_time, event_date |
//! | `kpi.items` | item codes | account, item_id, item_grade, kind (`acquire`/`consume`), count, reason, world, event_time, event_date |
//!
//! Decisions the definitions leave open, written down here:
//! - Codes of one role are unioned (a game with both `payment` and `purchase` counts both).
//! - An `item` event (neither `item_acquire` nor `item_consume`) is a consume when its mode field
//!   (`modType`, `mod_type`) says `consume`, `use`, `sub`, `remove` or `spend`, or, without a
//!   mode, when its count is negative; otherwise an acquire. Counts are summed as absolute
//!   values.
//! - `kpi.activity` leaves out rows without an account.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The views of the `kpi` schema, in the order [`KpiConfig::views`] builds them.
pub const VIEWS: [&str; 5] = ["activity", "payments", "sessions", "currency", "items"];

/// Field and code names of the KPI roles.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    pub account: Vec<String>,
    pub world: Vec<String>,
    pub os: Vec<String>,
    pub store: Vec<String>,
    pub payment_codes: Vec<String>,
    pub amount: Vec<String>,
    pub login_codes: Vec<String>,
    pub logout_codes: Vec<String>,
    pub heartbeat_codes: Vec<String>,
    pub currency_codes: Vec<String>,
    pub currency: Vec<String>,
    pub delta: Vec<String>,
    pub reason: Vec<String>,
    pub item_codes: Vec<String>,
    pub item_acquire_codes: Vec<String>,
    pub item_consume_codes: Vec<String>,
    pub item_id: Vec<String>,
    pub item_grade: Vec<String>,
    pub item_count: Vec<String>,
    pub item_mode: Vec<String>,
}

fn v(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

impl Default for KpiConfig {
    fn default() -> Self {
        Self {
            account: v(&["account_id", "playerId"]),
            world: v(&["server", "gameWorld"]),
            os: v(&["os"]),
            store: v(&["market", "store"]),
            payment_codes: v(&["payment", "purchase"]),
            amount: v(&["price_krw", "priceKrw"]),
            login_codes: v(&["login"]),
            logout_codes: v(&["logout"]),
            heartbeat_codes: v(&["heartbeat"]),
            currency_codes: v(&["resource", "currency"]),
            currency: v(&["rCurrency", "currency"]),
            delta: v(&["delta"]),
            reason: v(&["reason"]),
            item_codes: v(&["item"]),
            item_acquire_codes: v(&["item_acquire"]),
            item_consume_codes: v(&["item_consume"]),
            item_id: v(&["itemId", "item_id"]),
            item_grade: v(&["itemGrade", "item_grade"]),
            item_count: v(&["count"]),
            item_mode: v(&["modType", "mod_type"]),
        }
    }
}

impl KpiConfig {
    /// The first problem with the lists, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, list) in [
            ("account", &self.account),
            ("payment_codes", &self.payment_codes),
            ("amount", &self.amount),
            ("login_codes", &self.login_codes),
        ] {
            if list.is_empty() {
                return Err(format!("`kpi.{key}` must name at least one field or code"));
            }
        }
        Ok(())
    }

    /// `CREATE VIEW` statements of the five views, for tables with these columns (silver table
    /// name → column names).
    pub fn views(&self, tables: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
        let t = Tables { tables, cfg: self };
        vec![
            (VIEWS[0].into(), t.activity()),
            (VIEWS[1].into(), t.payments()),
            (VIEWS[2].into(), t.sessions()),
            (VIEWS[3].into(), t.currency()),
            (VIEWS[4].into(), t.items()),
        ]
    }
}

/// `coalesce` of the role's fields a table has (in the role's order), each cast to `cast`;
/// `None` when it has none. (Games name a field differently by format: `account_id` is a
/// number in kv lines and `playerId` a text in bare ones, so they meet as text.)
pub fn coalesce_of(columns: &[String], fields: &[String], cast: &str) -> Option<String> {
    let present = each_present(columns, fields, |f| format!("CAST({f} AS {cast})"));
    match present.len() {
        0 => None,
        1 => Some(present[0].clone()),
        _ => Some(format!("coalesce({})", present.join(", "))),
    }
}

/// `expr` of each of the role's fields the table has (quoted), in the role's order.
fn each_present(
    columns: &[String],
    fields: &[String],
    expr: impl Fn(&str) -> String,
) -> Vec<String> {
    fields
        .iter()
        .filter(|f| columns.contains(f))
        .map(|f| expr(&quote(f)))
        .collect()
}

struct Tables<'a> {
    tables: &'a BTreeMap<String, Vec<String>>,
    cfg: &'a KpiConfig,
}

const TIME_COLS: &str = "event_time, event_date";
const EMPTY_TIME: &str = "CAST(NULL AS TIMESTAMP) AS event_time, CAST(NULL AS DATE) AS event_date";

impl Tables<'_> {
    /// `coalesce` of the role's fields the table has, cast; NULL when it has none.
    fn role(&self, table: &str, fields: &[String], cast: &str) -> String {
        coalesce_of(&self.tables[table], fields, cast)
            .unwrap_or_else(|| format!("CAST(NULL AS {cast})"))
    }

    /// A filter for rows with any of the role's fields the table has: the same rows as
    /// `role(…) IS NOT NULL` without casting every value to test it (a cast of a value is NULL
    /// only when the value is).
    fn any_present(&self, table: &str, fields: &[String]) -> String {
        let present = each_present(&self.tables[table], fields, |f| format!("{f} IS NOT NULL"));
        match present.len() {
            0 => "false".to_string(),
            1 => present[0].clone(),
            _ => format!("({})", present.join(" OR ")),
        }
    }

    fn has_any(&self, table: &str, fields: &[String]) -> bool {
        let cols = &self.tables[table];
        fields.iter().any(|f| cols.contains(f))
    }

    /// The tables of these codes that exist, in the order given.
    fn of_codes<'c>(&self, codes: &'c [String]) -> Vec<&'c str> {
        codes
            .iter()
            .map(|c| c.as_str())
            .filter(|c| self.tables.contains_key(*c))
            .collect()
    }

    fn union(&self, selects: Vec<String>, empty: String) -> String {
        if selects.is_empty() {
            format!("SELECT {empty} WHERE false")
        } else {
            selects.join("\nUNION ALL\n")
        }
    }

    fn activity(&self) -> String {
        let c = self.cfg;
        let selects = self
            .tables
            .keys()
            .filter(|t| self.has_any(t, &c.account))
            .map(|t| {
                format!(
                    "SELECT {} AS account, {} AS world, {} AS os, {} AS store, {} AS code, {TIME_COLS} FROM silver.{} WHERE {}",
                    self.role(t, &c.account, "STRING"),
                    self.role(t, &c.world, "STRING"),
                    self.role(t, &c.os, "STRING"),
                    self.role(t, &c.store, "STRING"),
                    literal(t),
                    quote(t),
                    self.any_present(t, &c.account),
                )
            })
            .collect();
        self.union(
            selects,
            format!(
                "CAST(NULL AS STRING) AS account, CAST(NULL AS STRING) AS world, CAST(NULL AS STRING) AS os, \
                 CAST(NULL AS STRING) AS store, CAST(NULL AS STRING) AS code, {EMPTY_TIME}"
            ),
        )
    }

    fn payments(&self) -> String {
        let c = self.cfg;
        let selects = self
            .of_codes(&c.payment_codes)
            .into_iter()
            .map(|t| {
                format!(
                    "SELECT {} AS account, {} AS amount, {} AS world, {} AS os, {} AS store, {TIME_COLS} FROM silver.{}",
                    self.role(t, &c.account, "STRING"),
                    self.role(t, &c.amount, "DOUBLE"),
                    self.role(t, &c.world, "STRING"),
                    self.role(t, &c.os, "STRING"),
                    self.role(t, &c.store, "STRING"),
                    quote(t),
                )
            })
            .collect();
        self.union(
            selects,
            format!(
                "CAST(NULL AS STRING) AS account, CAST(NULL AS DOUBLE) AS amount, CAST(NULL AS STRING) AS world, \
                 CAST(NULL AS STRING) AS os, CAST(NULL AS STRING) AS store, {EMPTY_TIME}"
            ),
        )
    }

    fn sessions(&self) -> String {
        let c = self.cfg;
        let mut selects = Vec::new();
        for (kind, codes) in [
            ("login", &c.login_codes),
            ("logout", &c.logout_codes),
            ("heartbeat", &c.heartbeat_codes),
        ] {
            for t in self.of_codes(codes) {
                selects.push(format!(
                    "SELECT {} AS account, '{kind}' AS kind, {TIME_COLS} FROM silver.{}",
                    self.role(t, &c.account, "STRING"),
                    quote(t),
                ));
            }
        }
        self.union(
            selects,
            format!("CAST(NULL AS STRING) AS account, CAST(NULL AS STRING) AS kind, {EMPTY_TIME}"),
        )
    }

    fn currency(&self) -> String {
        let c = self.cfg;
        let selects = self
            .of_codes(&c.currency_codes)
            .into_iter()
            .map(|t| {
                format!(
                    "SELECT {} AS account, {} AS currency, {} AS delta, {} AS reason, {} AS world, {TIME_COLS} FROM silver.{}",
                    self.role(t, &c.account, "STRING"),
                    self.role(t, &c.currency, "STRING"),
                    self.role(t, &c.delta, "DOUBLE"),
                    self.role(t, &c.reason, "STRING"),
                    self.role(t, &c.world, "STRING"),
                    quote(t),
                )
            })
            .collect();
        self.union(
            selects,
            format!(
                "CAST(NULL AS STRING) AS account, CAST(NULL AS STRING) AS currency, CAST(NULL AS DOUBLE) AS delta, \
                 CAST(NULL AS STRING) AS reason, CAST(NULL AS STRING) AS world, {EMPTY_TIME}"
            ),
        )
    }

    fn items(&self) -> String {
        let c = self.cfg;
        let mut selects = Vec::new();
        let mut push = |t: &str, kind: String| {
            let count = self.role(t, &c.item_count, "BIGINT");
            selects.push(format!(
                "SELECT {} AS account, {} AS item_id, {} AS item_grade, {kind} AS kind, abs(coalesce({count}, 1)) AS count, \
                 {} AS reason, {} AS world, {TIME_COLS} FROM silver.{}",
                self.role(t, &c.account, "STRING"),
                self.role(t, &c.item_id, "STRING"),
                self.role(t, &c.item_grade, "STRING"),
                self.role(t, &c.reason, "STRING"),
                self.role(t, &c.world, "STRING"),
                quote(t),
            ));
        };
        for t in self.of_codes(&c.item_acquire_codes) {
            push(t, "'acquire'".into());
        }
        for t in self.of_codes(&c.item_consume_codes) {
            push(t, "'consume'".into());
        }
        for t in self.of_codes(&c.item_codes) {
            let kind = if self.has_any(t, &c.item_mode) {
                format!(
                    "CASE WHEN lower({}) IN ('consume', 'use', 'sub', 'remove', 'spend') THEN 'consume' ELSE 'acquire' END",
                    self.role(t, &c.item_mode, "STRING")
                )
            } else {
                format!(
                    "CASE WHEN {} < 0 THEN 'consume' ELSE 'acquire' END",
                    self.role(t, &c.item_count, "BIGINT")
                )
            };
            push(t, kind);
        }
        self.union(
            selects,
            format!(
                "CAST(NULL AS STRING) AS account, CAST(NULL AS STRING) AS item_id, CAST(NULL AS STRING) AS item_grade, \
                 CAST(NULL AS STRING) AS kind, CAST(NULL AS BIGINT) AS count, CAST(NULL AS STRING) AS reason, \
                 CAST(NULL AS STRING) AS world, {EMPTY_TIME}"
            ),
        )
    }
}

/// A SQL identifier in double quotes (field names keep their case).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_of_the_fields_a_table_has() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            coalesce_of(&cols(&["a", "x"]), &cols(&["x", "y"]), "VARCHAR"),
            Some("CAST(\"x\" AS VARCHAR)".into())
        );
        assert_eq!(
            coalesce_of(&cols(&["y", "x"]), &cols(&["x", "y"]), "DOUBLE"),
            Some("coalesce(CAST(\"x\" AS DOUBLE), CAST(\"y\" AS DOUBLE))".into())
        );
        assert_eq!(
            coalesce_of(&cols(&["a"]), &cols(&["x", "y"]), "VARCHAR"),
            None
        );
    }

    #[test]
    fn roles_pick_the_fields_each_table_has() {
        let mut tables = BTreeMap::new();
        tables.insert(
            "payment".to_string(),
            v(&[
                "account_id",
                "playerId",
                "price_krw",
                "server",
                "event_time",
                "event_date",
            ]),
        );
        tables.insert(
            "combat".to_string(),
            v(&["char_id", "event_time", "event_date"]),
        );
        tables.insert(
            "item".to_string(),
            v(&["playerId", "itemId", "count", "event_time", "event_date"]),
        );
        let views: BTreeMap<String, String> =
            KpiConfig::default().views(&tables).into_iter().collect();
        let activity = &views["activity"];
        assert!(activity.contains(
            "coalesce(CAST(\"account_id\" AS STRING), CAST(\"playerId\" AS STRING)) AS account"
        ));
        // Rows without an account are not activity, tested without casting.
        let wheres: Vec<&str> = activity
            .lines()
            .filter_map(|l| l.split_once(" WHERE ").map(|(_, w)| w))
            .collect();
        assert_eq!(
            wheres,
            [
                "\"playerId\" IS NOT NULL",
                "(\"account_id\" IS NOT NULL OR \"playerId\" IS NOT NULL)"
            ]
        );
        // A table without an account field is not activity.
        assert!(!activity.contains("silver.\"combat\""));
        assert!(views["payments"].contains("CAST(\"price_krw\" AS DOUBLE) AS amount"));
        assert!(views["payments"].contains("CAST(NULL AS STRING) AS os"));
        // No session tables: an empty view of the right shape.
        assert!(views["sessions"].ends_with("WHERE false"));
        // `item` without a mode field: the sign of the count decides.
        assert!(views["items"].contains("CASE WHEN CAST(\"count\" AS BIGINT) < 0 THEN 'consume'"));
    }
}
