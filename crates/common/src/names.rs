//! Table, schema and column names fixed by `DESIGN.md`.

/// Schema of the raw tables: every received line and every rejected line.
pub const SCHEMA_BRONZE: &str = "bronze";
/// Schema of the typed per-`code` tables.
pub const SCHEMA_SILVER: &str = "silver";
/// Schema of the tables built by jobs.
pub const SCHEMA_GOLD: &str = "gold";
/// Schema of the read-only views of the running system.
pub const SCHEMA_SYSTEM: &str = "system";
/// The schemas whose tables live under the storage root, in listing order.
pub const STORED_SCHEMAS: [&str; 3] = [SCHEMA_BRONZE, SCHEMA_SILVER, SCHEMA_GOLD];

/// `bronze.raw_logs`: every line of every acknowledged body.
pub const TABLE_RAW_LOGS: &str = "raw_logs";
/// `bronze.dead_letters`: every rejected line with its reason.
pub const TABLE_DEAD_LETTERS: &str = "dead_letters";

/// The event type of a silver row, as it arrived.
pub const COL_CODE: &str = "code";
/// Derived UTC event timestamp.
pub const COL_EVENT_TIME: &str = "event_time";
/// Derived event date in the game's time zone; the partition column of silver tables.
pub const COL_EVENT_DATE: &str = "event_date";
/// When gamelake received the line (UTC).
pub const COL_INGEST_TIME: &str = "_ingest_time";
/// The write-ahead-log record that carried the line.
pub const COL_OFFSET: &str = "_offset";
/// JSON object of the values that did not fit their column's type.
pub const COL_CONFLICTS: &str = "_conflicts";
/// The API key id that sent the line.
pub const COL_SOURCE: &str = "_source";
/// The partition column of bronze tables: the ingest date in the game's time zone.
pub const COL_INGEST_DATE: &str = "ingest_date";
/// Raw line bytes in bronze tables.
pub const COL_LINE: &str = "line";
/// Short machine-readable reason of a dead letter (`truncated`, `bad_escape`, …).
pub const COL_REASON: &str = "reason";
/// Human-readable detail of a dead letter's reason.
pub const COL_DETAIL: &str = "detail";
/// The pipeline stage that rejected a dead letter (`ingest`, `parse`).
pub const COL_STAGE: &str = "stage";

/// Columns gamelake adds to a silver table; a source field of the same name cannot take them.
pub const RESERVED_SILVER_COLUMNS: [&str; 6] = [
    COL_CODE,
    COL_EVENT_TIME,
    COL_EVENT_DATE,
    COL_INGEST_TIME,
    COL_OFFSET,
    COL_CONFLICTS,
];

/// Table name for an event `code`: every character outside `[a-z0-9_]` becomes `_`
/// (upper-case ASCII is lowered first, so `ItemAcquire` and `itemacquire` share a table).
pub fn table_name_for_code(code: &str) -> String {
    code.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Column name for a source field: Delta Lake (without column mapping) forbids
/// ` ,;{}()\n\t=` in column names, so those characters become `_`.
pub fn column_name_for_field(field: &str) -> std::borrow::Cow<'_, str> {
    // Byte scan: this runs for every field of every line.
    fn forbidden(b: u8) -> bool {
        matches!(
            b,
            b' ' | b',' | b';' | b'{' | b'}' | b'(' | b')' | b'\n' | b'\t' | b'='
        )
    }
    if field.bytes().any(forbidden) {
        std::borrow::Cow::Owned(
            field
                .chars()
                .map(|c| {
                    if c.is_ascii() && forbidden(c as u8) {
                        '_'
                    } else {
                        c
                    }
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_design_rule() {
        assert_eq!(table_name_for_code("item"), "item");
        assert_eq!(table_name_for_code("item.acquire"), "item_acquire");
        assert_eq!(table_name_for_code("boss:kill-1"), "boss_kill_1");
        assert_eq!(table_name_for_code("Login"), "login");
    }

    #[test]
    fn column_names_lose_forbidden_characters() {
        assert_eq!(column_name_for_field("playerId"), "playerId");
        assert_eq!(column_name_for_field("@timestamp"), "@timestamp");
        assert_eq!(column_name_for_field("a b=c"), "a_b_c");
    }
}
