"""A Python driver against gamelake's Postgres port: psycopg 3, extended protocol with
server-side parameters. Prints what it saw as JSON for the Rust e2e test to check.

    python pg_psycopg.py PORT USER PASSWORD
"""
import json
import sys
import threading
import time

import psycopg

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dsn = dict(host="127.0.0.1", port=port, dbname="gamelake", user=user, password=password)
out = {}
with psycopg.connect(**dsn, autocommit=True) as conn:
    out["version"] = conn.execute("SELECT version()").fetchone()[0]
    out["tables"] = sorted(
        f"{s}.{t}"
        for s, t in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('bronze', 'silver') ORDER BY 1, 2"
        ).fetchall()
    )
    # Every column of a table, with the type the driver decoded it to.
    cur = conn.execute("SELECT * FROM silver.payment")
    row = cur.fetchone()
    out["payment"] = {
        d.name: [type(v).__name__, None if v is None else str(v)] for d, v in zip(cur.description, row)
    }
    # Server-side parameters (psycopg 3 sends them with Bind), typed int8 and text.
    cur = conn.execute(
        "SELECT count(*) AS n, max(item_id) AS top FROM silver.item WHERE account_id = %s AND server = %s",
        (12345, "kr-03"),
    )
    out["param"] = list(cur.fetchone())
    out["param_prepared"] = [
        conn.execute("SELECT count(*) FROM silver.item WHERE count >= %s", (c,), prepare=True).fetchone()[0]
        for c in (1, 2, 3, 4)
    ]
    out["nulls"] = list(conn.execute(
        "SELECT account_id, \"playerId\", \"count\" > 0 AS positive, 1.5::double precision AS f FROM silver.item WHERE \"logId\" = %s",
        ("b2",),
    ).fetchone())
    try:
        conn.execute("CREATE TABLE silver.x AS SELECT 1 AS a")
        out["ddl"] = "accepted"
    except psycopg.Error as e:
        out["ddl"] = [e.sqlstate, str(e)]
    # Cancel a query from another thread while DataFusion computes its rows (psycopg sends
    # the protocol's cancel request, as psql does on Ctrl-C).
    timer = threading.Timer(1.0, conn.cancel_safe)
    timer.start()
    started = time.monotonic()
    try:
        conn.execute("SELECT sum(value) FROM range(0, 100000000000)").fetchone()
        out["cancel"] = "finished"
    except psycopg.Error as e:
        out["cancel"] = [e.sqlstate, str(e), time.monotonic() - started]
    timer.join()
    out["after_cancel"] = list(conn.execute("SELECT 1").fetchone())
try:
    psycopg.connect(**{**dsn, "password": password + "-wrong"}).close()
    out["wrong_password"] = "accepted"
except psycopg.OperationalError as e:
    out["wrong_password"] = str(e)
print(json.dumps(out, default=str))
