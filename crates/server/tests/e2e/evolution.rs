//! Schema evolution end to end: a field appears mid-stream on a partitioned table; a value of
//! another type than its column goes to `_conflicts`.

use serde_json::Value;

use crate::util::{one, Server};

#[tokio::test]
async fn new_fields_become_columns_without_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[lake]\ncommit_interval_ms = 200\n");
    let before = "{\"ts\":\"2026-11-27T10:00:00+09:00\",\"code\":\"quest\",\"quest_id\":1,\"exp\":10}\n\
                  {\"ts\":\"2026-11-28T10:00:00+09:00\",\"code\":\"quest\",\"quest_id\":2,\"exp\":20}\n";
    assert_eq!(s.post_logs(before, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM silver.quest", one(2))
        .await;

    // The game is patched: `difficulty` appears, in an existing and in a new partition.
    let after = "{\"ts\":\"2026-11-28T11:00:00+09:00\",\"code\":\"quest\",\"quest_id\":3,\"exp\":30,\"difficulty\":\"hard\"}\n\
                 {\"ts\":\"2026-11-29T11:00:00+09:00\",\"code\":\"quest\",\"quest_id\":4,\"exp\":40.5,\"difficulty\":\"easy\",\"bonus\":true}\n";
    assert_eq!(s.post_logs(after, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM silver.quest", one(4))
        .await;
    let rows = s
        .query("SELECT quest_id, exp, difficulty, bonus, _conflicts, CAST(event_date AS VARCHAR) FROM silver.quest ORDER BY quest_id")
        .await;
    let expected = vec![
        vec![
            Value::from(1),
            Value::from(10),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::from("2026-11-27"),
        ],
        vec![
            Value::from(2),
            Value::from(20),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::from("2026-11-28"),
        ],
        vec![
            Value::from(3),
            Value::from(30),
            Value::from("hard"),
            Value::Null,
            Value::Null,
            Value::from("2026-11-28"),
        ],
        // `exp` is Int64 since the first record: 40.5 does not fit and is kept in `_conflicts`.
        vec![
            Value::from(4),
            Value::Null,
            Value::from("easy"),
            Value::from(true),
            Value::from(r#"{"exp":40.5}"#),
            Value::from("2026-11-29"),
        ],
    ];
    assert_eq!(rows, expected);
    let types = s
        .query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'silver' AND table_name = 'quest' AND column_name IN ('exp', 'difficulty', 'bonus') ORDER BY column_name")
        .await;
    assert_eq!(
        types,
        vec![
            vec![Value::from("bonus"), Value::from("Boolean")],
            vec![Value::from("difficulty"), Value::from("Utf8View")],
            vec![Value::from("exp"), Value::from("Int64")],
        ]
    );
    // Partition pruning sees the new partition.
    s.wait_for(
        "SELECT count(*) FROM silver.quest WHERE event_date = DATE '2026-11-29'",
        one(1),
    )
    .await;
}
