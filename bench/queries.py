"""Dashboard queries on gamelake (HTTP /v1/query) and DuckDB (its Delta extension, in-process,
over the same Delta tables), timed the same way: wall time of each query, N runs, median.

    python queries.py HTTP_URL DATA_DIR RUNS [--check]

With --check, also compares the two engines' answers and exits 1 if they differ.
Prints JSON: {query: {"gamelake_ms": [...], "duckdb_ms": [...], "rows": n}}.
"""
import datetime
import json
import os
import statistics
import sys
import time
import urllib.request
import zoneinfo

import duckdb
import duckdb_extension_delta

url, data_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
check = "--check" in sys.argv

tables = json.load(urllib.request.urlopen(f"{url}/v1/tables"))["tables"]
silver = [t for t in tables if t["schema"] == "silver" and t["name"] != "loadgen_marker"]
def having(col):
    return [t["name"] for t in silver if any(c[0] == col for c in t["columns"])]
today = datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Seoul")).date().isoformat()
union_codes = " UNION ALL ".join(f"SELECT code, event_time FROM silver.{t}" for t in having("event_time"))
union_accounts = " UNION ALL ".join(
    f"SELECT account_id, event_date FROM silver.{t}" for t in having("account_id"))
QUERIES = {
    "events per minute by code, last hour": f"SELECT date_trunc('minute', event_time) AS minute, code, count(*) AS events FROM ({union_codes}) WHERE event_time >= now() - INTERVAL '1 hour' GROUP BY 1, 2 ORDER BY 1, 2",
    "DAU today": f"SELECT count(DISTINCT account_id) AS dau FROM ({union_accounts}) WHERE event_date = DATE '{today}'",
    "revenue today by world": f"SELECT server AS world, sum(price_krw) AS revenue, count(DISTINCT account_id) AS payers FROM silver.payment WHERE event_date = DATE '{today}' GROUP BY 1 ORDER BY 1",
}

ext_dir = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions")
ext = next(os.path.join(r, f) for r, _, fs in os.walk(ext_dir) for f in fs if f.endswith(".duckdb_extension"))
con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                             "allow_unsigned_extensions": True})
con.execute(f"LOAD '{ext}'")
con.execute("SET TimeZone = 'UTC'")
con.execute("CREATE SCHEMA silver")
for t in silver:
    con.execute(f"CREATE VIEW silver.{t['name']} AS SELECT * FROM delta_scan('{data_dir}/silver/{t['name']}')")

def gamelake(sql):
    req = urllib.request.Request(f"{url}/v1/query", data=json.dumps({"sql": sql}).encode(),
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["rows"]

def timed(f, sql):
    t = time.perf_counter()
    rows = f(sql)
    return (time.perf_counter() - t) * 1000, rows

out = {}
for name, sql in QUERIES.items():
    g, d = [], []
    for _ in range(runs):
        ms, grows = timed(gamelake, sql)
        g.append(ms)
        ms, drows = timed(lambda q: con.execute(q).fetchall(), sql)
        d.append(ms)
    out[name] = {"gamelake_ms": g, "duckdb_ms": d, "rows": len(grows),
                 "gamelake_median_ms": statistics.median(g), "duckdb_median_ms": statistics.median(d)}
    if check:
        norm = lambda rows: [[str(v).replace("T", " ")[:19] if not isinstance(v, (int, float)) else round(float(v), 6) for v in r] for r in rows]
        same = norm(gamelake(sql)) == norm(con.execute(sql).fetchall())
        out[name]["same_answer"] = same
print(json.dumps(out))
if check and not all(v["same_answer"] for v in out.values()):
    sys.exit(1)
