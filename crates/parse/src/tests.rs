//! Body-level and property tests of the parser.

use std::collections::HashMap;

use arrow_array::{
    Array, BinaryArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use proptest::prelude::*;

use crate::syntax::{parse_line, Record, Val};
use crate::{BodyParser, ColType, IngestMeta, ParseConfig, SchemaHints};

fn meta() -> IngestMeta {
    IngestMeta {
        ingest_time_us: 1_764_300_000_000_000,
        source: "test".into(),
    }
}

fn parse(body: &str) -> crate::ParsedBody {
    BodyParser::new(ParseConfig::default()).unwrap().parse_body(
        body.as_bytes(),
        &meta(),
        &SchemaHints::new(),
    )
}

fn table<'a>(p: &'a crate::ParsedBody, name: &str) -> &'a RecordBatch {
    &p.silver
        .iter()
        .find(|(t, _)| t == name)
        .unwrap_or_else(|| panic!("no table {name}"))
        .1
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

fn ints(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    let a = b
        .column_by_name(col)
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

const LOG_FORMAT_EXAMPLES: &str = r#"2026-11-28 02:10:11.123 [item_acquire] {server=kr-03, account_id=12345, char_id=98761, item_id=50012, item_name='오딘의 검', count=1, reason=drop}
2026-11-28 02:10:11.130 [currency] {server=kr-03, account_id=12345, char_id=98761, currency=gold, delta=-1500, balance=88200, reason="shop:buy"}
2026-11-28T02:10:12.004+09:00 [payment] {server=kr-01, account_id=777, product_id=pkg_start_01, price_krw=33000, store=google, order_id="GPA.3381-2219"}
2026-11-28 02:10:12.551 [combat] {server=kr-07, char_id=5501, target=boss:fenrir, damage=18234.5, crit=true, party=[5501, 5502, 5503], pos={x: 102.3, y: 88.1}}
{code:"resource", appId:"odin", playerId:"p_1029384", gameWorld:"kr-03", modType:"add", rCurrency:"Gold", amount:1500, delta:1500, paid:false, reason:"A_QUEST", subReason:"EliteDungeon", playerLv:52, character1Id:"c_99182", character1Lv:52, character1Nm:"오딘전사", os:"android", market:"google", country:"KR", lang:"ko", sessionId:"s_8f2a", clientIp:"203.0.113.7", modTime:"2026-11-28 02:10:11.123", publishTime:"2026-11-28 02:10:11.130", logId:"01JDXK5Q1H8Y3B"}
{code:"item", appId:"odin", playerId:"p_1029384", gameWorld:"kr-03", itemId:50012, itemNm:'오딘의 검', itemGrade:"legendary", count:1, reason:drop, modTime:"2026-11-28 02:10:12.004", logId:"01JDXK5Q1J2M7C"}
{"ts":"2026-11-28T02:10:11.123+09:00","code":"item","server":"kr-03","account_id":12345,"item_id":50012,"count":1}
"#;

#[test]
fn every_log_format_example_routes_to_its_table() {
    let p = parse(LOG_FORMAT_EXAMPLES);
    assert_eq!((p.accepted, p.dead_lettered), (7, 0));
    let names: Vec<&str> = p.silver.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "combat",
            "currency",
            "item",
            "item_acquire",
            "payment",
            "resource"
        ]
    );
    assert_eq!(p.raw_logs.as_ref().unwrap().num_rows(), 7);

    let item = table(&p, "item");
    assert_eq!(item.num_rows(), 2);
    assert_eq!(strings(item, "itemNm"), [Some("오딘의 검".into()), None]);
    assert_eq!(
        strings(item, "ts"),
        [None, Some("2026-11-28T02:10:11.123+09:00".into())]
    );
    assert_eq!(ints(item, "count"), [Some(1), Some(1)]);

    let combat = table(&p, "combat");
    assert_eq!(strings(combat, "party"), [Some("[5501,5502,5503]".into())]);
    let dmg = combat
        .column_by_name("damage")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(dmg.value(0), 18234.5);

    // 02:10:12.004+09:00 is 17:10:12.004 UTC on the 27th, the 28th in Seoul.
    let pay = table(&p, "payment");
    let t = pay
        .column_by_name("event_time")
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339("2026-11-27T17:10:12.004Z")
        .unwrap()
        .timestamp_micros();
    assert_eq!(t.value(0), expected);
    let d = pay
        .column_by_name("event_date")
        .unwrap()
        .as_any()
        .downcast_ref::<Date32Array>()
        .unwrap();
    assert_eq!(
        gamelake_common::time::format_date32(d.value(0)),
        "2026-11-28"
    );
}

#[test]
fn malformed_lines_become_dead_letters_with_reasons() {
    let body = b"{code:\"item\", ts:\"2026-11-28 02:10:11\", count:1\n\
{code:\"item\", ts:\"2026-11-28 02:10:11\", name:\"a\\qb\"}\n\
{ts:\"2026-11-28 02:10:11\", count:1}\n\
{code:\"item\", count:1}\n\
{code:\"item\", ts:\"yesterday\"}\n\
{code:\"bad code!\", ts:\"2026-11-28 02:10:11\"}\n\
\xff\xfe{code:\"item\"}\n\
\n   \n\
{code:\"item\", ts:\"2026-11-28 02:10:11\", ok:true}\r\n";
    let mut parser = BodyParser::new(ParseConfig::default()).unwrap();
    let p = parser.parse_body(body, &meta(), &SchemaHints::new());
    assert_eq!((p.accepted, p.dead_lettered), (1, 7));
    let dead = p.dead_letters.as_ref().unwrap();
    assert_eq!(
        strings(dead, "reason")
            .into_iter()
            .map(Option::unwrap)
            .collect::<Vec<_>>(),
        [
            "truncated",
            "bad_escape",
            "missing_code",
            "missing_time",
            "bad_time",
            "bad_code",
            "invalid_utf8"
        ]
    );
    let lines = dead
        .column_by_name("line")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    assert_eq!(lines.value(6), b"\xff\xfe{code:\"item\"}");
    assert_eq!(p.raw_logs.as_ref().unwrap().num_rows(), 8);
    assert_eq!(p.dead_reasons.iter().map(|(_, n, _)| n).sum::<usize>(), 7);
}

#[test]
fn long_lines_are_dead_letters_not_errors() {
    let cfg = ParseConfig {
        max_line_bytes: 40,
        ..ParseConfig::default()
    };
    let mut parser = BodyParser::new(cfg).unwrap();
    let body = format!(
        "{{code:item, ts:1764300000000, pad:\"{}\"}}\n",
        "x".repeat(100)
    );
    let p = parser.parse_body(body.as_bytes(), &meta(), &SchemaHints::new());
    assert_eq!(p.dead_lettered, 1);
    let dead = p.dead_letters.unwrap();
    assert_eq!(strings(&dead, "stage"), [Some("ingest".into())]);
}

#[test]
fn type_conflicts_keep_the_row_and_the_value() {
    let body = r#"{code:x, ts:1764300000000, n:1, f:1, s:"a"}
{code:x, ts:1764300000000, n:1.5, f:2.5, s:3}
{code:x, ts:1764300000000, n:"many", f:"x", _offset:9}
"#;
    let p = parse(body);
    assert_eq!((p.accepted, p.dead_lettered), (3, 0));
    let x = table(&p, "x");
    assert_eq!(ints(x, "n"), [Some(1), None, None]);
    assert_eq!(strings(x, "s"), [Some("a".into()), Some("3".into()), None]);
    let f = x.column_by_name("f").unwrap();
    assert_eq!(
        f.data_type(),
        &arrow_schema::DataType::Int64,
        "first value decides"
    );
    assert_eq!(
        strings(x, "_conflicts"),
        [
            None,
            Some(r#"{"n":1.5,"f":2.5}"#.into()),
            Some(r#"{"n":"many","f":"x","_offset":9}"#.into())
        ]
    );
}

#[test]
fn table_types_win_over_first_values() {
    let mut hints = SchemaHints::new();
    hints.insert(
        "x".into(),
        HashMap::from([
            ("f".to_string(), ColType::Float64),
            ("n".to_string(), ColType::Utf8),
        ]),
    );
    let mut parser = BodyParser::new(ParseConfig::default()).unwrap();
    let p = parser.parse_body(b"{code:x, ts:1764300000000, f:1, n:2}", &meta(), &hints);
    let x = table(&p, "x");
    assert_eq!(
        x.column_by_name("f").unwrap().data_type(),
        &arrow_schema::DataType::Float64
    );
    assert_eq!(strings(x, "n"), [Some("2".into())]);
    assert!(x.column_by_name("_conflicts").is_none());
}

#[test]
fn derived_columns_replace_source_fields() {
    let p = parse(
        r#"{code:x, event_time:"garbage", event_date:"no", ts:"2026-11-28T00:00:00Z", other:1}"#,
    );
    let x = table(&p, "x");
    let names: Vec<String> = x
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "code",
            "event_time",
            "event_date",
            "ts",
            "other",
            "_ingest_time"
        ]
    );
    // `event_time` is in the time-field list after `ts`; `ts` matched first.
    assert_eq!(x.num_rows(), 1);
}

#[test]
fn duplicate_keys_last_value_wins() {
    let p = parse(r#"{code:x, ts:1764300000000, a:1, a:2, b:"p", b:"q"}"#);
    let x = table(&p, "x");
    assert_eq!(ints(x, "a"), [Some(2)]);
    assert_eq!(strings(x, "b"), [Some("q".into())]);
}

// ---- property tests ----

fn record_as_json(rec: &Record) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for f in &rec.fields {
        let v = match &f.val {
            Val::Null => serde_json::Value::Null,
            Val::Bool(b) => serde_json::Value::Bool(*b),
            Val::Int(i) => serde_json::Value::from(*i),
            Val::Float(x) => serde_json::Value::from(*x),
            Val::Str(s) => serde_json::Value::String(rec.text(s).to_string()),
            Val::Json(s) => {
                serde_json::from_str(rec.text(s)).expect("rendered nested JSON is valid")
            }
        };
        map.insert(rec.text(&f.key).to_string(), v);
    }
    serde_json::Value::Object(map)
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        // Binary fractions: exact in every float parser, so the comparison is about syntax.
        any::<i32>().prop_map(|n| serde_json::Value::from(n as f64 / 8.0)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
        // Past the 64 bytes a string is scanned a word at a time.
        "\\PC{60,90}".prop_map(serde_json::Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    prop::collection::btree_map("[a-zA-Z_@][a-zA-Z0-9_ ]{0,8}", json_value(), 0..8)
        .prop_map(|m| m.into_iter().collect())
}

/// Writes an object in the relaxed syntax: bare keys where possible, `=` or `:`, single quotes.
fn relaxed(map: &serde_json::Map<String, serde_json::Value>, eq: bool, single: bool) -> String {
    fn val(v: &serde_json::Value, single: bool) -> String {
        match v {
            serde_json::Value::String(s) if single => {
                let json = serde_json::to_string(s).unwrap();
                format!("'{}'", json[1..json.len() - 1].replace('\'', "\\'"))
            }
            serde_json::Value::Array(a) => format!(
                "[{}]",
                a.iter()
                    .map(|x| val(x, single))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            serde_json::Value::Object(o) => format!(
                "{{{}}}",
                o.iter()
                    .map(|(k, x)| format!("{}: {}", key(k), val(x, single)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }
    fn key(k: &str) -> String {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
        {
            k.to_string()
        } else {
            serde_json::to_string(k).unwrap()
        }
    }
    let sep = if eq { "=" } else { ":" };
    format!(
        "{{{}}}",
        map.iter()
            .map(|(k, v)| format!("{}{sep} {}", key(k), val(v, single)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

proptest! {
    #[test]
    fn strict_json_parses_like_serde_json(map in json_object()) {
        let line = serde_json::to_string(&serde_json::Value::Object(map.clone())).unwrap();
        let mut rec = Record::default();
        parse_line(&line, &mut rec).unwrap();
        prop_assert_eq!(record_as_json(&rec), serde_json::Value::Object(map));
    }

    #[test]
    fn relaxed_syntax_parses_to_the_same_record(map in json_object(), eq in any::<bool>(), single in any::<bool>()) {
        let line = relaxed(&map, eq, single);
        let mut rec = Record::default();
        parse_line(&line, &mut rec).unwrap_or_else(|e| panic!("{line}: {e}"));
        prop_assert_eq!(record_as_json(&rec), serde_json::Value::Object(map));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut parser = BodyParser::new(ParseConfig::default()).unwrap();
        let p = parser.parse_body(&bytes, &meta(), &SchemaHints::new());
        let raw = p.raw_logs.as_ref().map_or(0, |b| b.num_rows());
        prop_assert_eq!(raw, p.accepted + p.dead_lettered);
    }

    #[test]
    fn arbitrary_text_near_the_grammar_never_panics(s in "[{}\\[\\]:=,'\" a-z0-9\\\\.-]{0,80}") {
        let mut rec = Record::default();
        let _ = parse_line(&s, &mut rec);
        let _ = parse_line(&format!("2026-11-28 02:10:11 [x] {s}"), &mut rec);
    }
}

/// Rows of one code whose keys move, appear, vanish or repeat between lines: every value lands
/// in its own column whatever the previous row's layout was (the per-position key cache).
#[test]
fn fields_in_any_order_land_in_their_columns() {
    let p = parse(concat!(
        "{code:x, ts:1764300000000, a:1, b:\"p\"}\n",
        "{code:x, ts:1764300000000, b:\"q\", a:2}\n",
        "{code:x, ts:1764300000000, a:3, c:30, b:\"r\"}\n",
        "{code:x, ts:1764300000000, c:40}\n",
        "{code:x, ts:1764300000000, a:5, a:6, _ingest_time:7, event_date:\"no\", b:\"s\"}\n",
        "{code:x, ts:1764300000000, a:8, b:\"t\"}\n",
        // The reserved and derived names again, at other positions: their slots are the ones
        // found for them the first time.
        "{code:x, ts:1764300000000, event_date:\"no\", _ingest_time:9, a:10}\n",
    ));
    let x = table(&p, "x");
    assert_eq!(
        ints(x, "a"),
        [Some(1), Some(2), Some(3), None, Some(6), Some(8), Some(10)]
    );
    assert_eq!(
        strings(x, "b"),
        ["p", "q", "r", "", "s", "t", ""].map(|s| (!s.is_empty()).then(|| s.to_string()))
    );
    assert_eq!(
        ints(x, "c"),
        [None, None, Some(30), Some(40), None, None, None]
    );
    let conflicts = strings(x, "_conflicts");
    assert_eq!(conflicts[4].as_deref(), Some(r#"{"_ingest_time":7}"#));
    assert_eq!(conflicts[6].as_deref(), Some(r#"{"_ingest_time":9}"#));
    assert!(conflicts
        .iter()
        .enumerate()
        .all(|(i, c)| i == 4 || i == 6 || c.is_none()));
    assert!(x.column_by_name("event_date").is_some());
    assert_eq!(x.num_columns(), 9, "{:?}", x.schema());
}
