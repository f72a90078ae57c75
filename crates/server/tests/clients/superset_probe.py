"""Apache Superset (PyPI apache-superset==6.1.0, psycopg2) against gamelake's Postgres port, as
an analyst sets it up: a fresh Superset (its metadata in SQLite under HOME) is started on
loopback, then driven only through its REST API: log in, register gamelake as a PostgreSQL
database, list its schemas and tables, add a `silver` table as a dataset, save a bar chart
of it and read the chart's data, and run a query in SQL Lab. Prints what it saw as JSON for
the Rust e2e test to check.

    python superset_probe.py HOME PG_PORT PG_USER PG_PASSWORD

Run with the Python of the Superset virtualenv; its `superset` command is beside it.
"""
import json
import os
import socket
import subprocess
import sys
import time

import requests

home, pg_port, pg_user, pg_password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
superset = os.path.join(os.path.dirname(sys.executable), "superset")
config = os.path.join(home, "superset_config.py")
with open(config, "w") as f:
    f.write(
        f"""
SECRET_KEY = "gamelake-superset-test-only-0123456789"
SQLALCHEMY_DATABASE_URI = "sqlite:///{home}/superset.db"
WTF_CSRF_ENABLED = False
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
"""
    )
env = dict(os.environ, SUPERSET_HOME=home, SUPERSET_CONFIG_PATH=config, FLASK_APP="superset")


def run(*args):
    p = subprocess.run([superset, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"superset {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")


run("db", "upgrade")
run("fab", "create-admin", "--username", "admin", "--firstname", "A", "--lastname", "B",
    "--email", "admin@example.com", "--password", "admin-password")
run("init")

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
log = open(os.path.join(home, "superset.log"), "w")
server = subprocess.Popen(
    [superset, "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads"],
    env=env, stdout=log, stderr=subprocess.STDOUT,
)
base = f"http://127.0.0.1:{port}"
out = {}
try:
    for _ in range(600):
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if server.poll() is not None:
            sys.exit("superset exited; see superset.log")
        time.sleep(0.2)
    else:
        sys.exit("superset did not answer /health within 120 s")

    http = requests.Session()
    r = http.post(f"{base}/api/v1/security/login", json={
        "username": "admin", "password": "admin-password", "provider": "db", "refresh": True})
    r.raise_for_status()
    http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def call(method, path, **kw):
        r = http.request(method, f"{base}{path}", timeout=120, **kw)
        if r.status_code >= 400:
            sys.exit(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json()

    uri = f"postgresql+psycopg2://{pg_user}:{pg_password}@127.0.0.1:{pg_port}/gamelake"
    # A wrong password is refused by gamelake, and Superset says so.
    bad = http.post(f"{base}/api/v1/database/test_connection/", json={
        "database_name": "gamelake-bad", "sqlalchemy_uri": uri.replace(pg_password, "wrong-password")})
    out["bad_password"] = [bad.status_code, bad.text[:400]]
    call("POST", "/api/v1/database/test_connection/", json={
        "database_name": "gamelake", "sqlalchemy_uri": uri})
    db = call("POST", "/api/v1/database/", json={
        "database_name": "gamelake", "sqlalchemy_uri": uri, "expose_in_sqllab": True})["id"]
    out["schemas"] = call("GET", f"/api/v1/database/{db}/schemas/")["result"]
    tables = call("GET", f"/api/v1/database/{db}/tables/?q=(force:!t,schema_name:silver)")["result"]
    out["silver_tables"] = sorted(t["value"] for t in tables)

    # What SQL Lab's table panel shows: SQLAlchemy reflects columns, primary key, indexes.
    meta = call("GET", f"/api/v1/database/{db}/table_metadata/?name=item&schema=silver")
    out["table_metadata"] = {
        "columns": len(meta["columns"]),
        "primary_key": (meta.get("primaryKey") or {}).get("column_names", []),
        "indexes": meta.get("indexes", []),
    }

    ds = call("POST", "/api/v1/dataset/", json={
        "database": db, "schema": "silver", "table_name": "item"})["id"]
    dataset = call("GET", f"/api/v1/dataset/{ds}")["result"]
    out["dataset_columns"] = {c["column_name"]: c["type"] for c in dataset["columns"]}

    # A bar chart: events per server, as saved from the Explore view (form data + query context).
    form = {
        "datasource": f"{ds}__table", "viz_type": "echarts_timeseries_bar",
        "x_axis": "server", "metrics": ["count"], "groupby": [], "row_limit": 1000,
        "adhoc_filters": [],
    }
    query_context = {
        "datasource": {"id": ds, "type": "table"},
        "force": True,
        "queries": [{
            "columns": ["server"], "metrics": ["count"], "orderby": [["count", False]],
            "row_limit": 1000, "filters": [], "extras": {},
        }],
        "form_data": form, "result_format": "json", "result_type": "full",
    }
    chart = call("POST", "/api/v1/chart/", json={
        "slice_name": "items by server", "viz_type": "echarts_timeseries_bar",
        "datasource_id": ds, "datasource_type": "table",
        "params": json.dumps(form), "query_context": json.dumps(query_context)})["id"]
    data = call("GET", f"/api/v1/chart/{chart}/data/")["result"][0]
    out["chart_rows"] = sorted(([row["server"], row["count"]] for row in data["data"]), key=str)
    out["chart_query"] = data["query"]

    sql = call("POST", "/api/v1/sqllab/execute/", json={
        "database_id": db, "schema": "silver", "runAsync": False,
        "sql": "SELECT code, count(*) AS n FROM silver.item GROUP BY code"})
    out["sqllab"] = [[row["code"], row["n"]] for row in sql["data"]]
finally:
    server.terminate()
    server.wait(timeout=30)
print(json.dumps(out))
