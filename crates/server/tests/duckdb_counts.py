"""Counts rows of gamelake's Delta tables with DuckDB's Delta extension.

Usage: duckdb_counts.py DATA_DIR schema/table...
Prints a JSON object {"schema/table": count, ...}; for silver/item also the count of
rows with server = 'kr-03' (a typed column read through Parquet), as "silver/item:kr-03".
The extension is loaded from the file shipped by the `duckdb-extension-delta` wheel,
with automatic installation and loading off: no network.
"""
import json
import os
import sys

import duckdb
import duckdb_extension_delta

ext_dir = os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions")
ext = None
for root, _, files in os.walk(ext_dir):
    for f in files:
        if f.endswith(".duckdb_extension"):
            ext = os.path.join(root, f)
if ext is None:
    sys.exit(f"no .duckdb_extension file under {ext_dir}")

con = duckdb.connect(config={
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_unsigned_extensions": True,
})
con.execute(f"LOAD '{ext}'")
root = sys.argv[1]
out = {}
for table in sys.argv[2:]:
    path = os.path.join(root, table)
    out[table] = con.execute(f"SELECT count(*) FROM delta_scan('{path}')").fetchone()[0]
    if table == "silver/item":
        out[table + ":kr-03"] = con.execute(
            f"SELECT count(*) FROM delta_scan('{path}') WHERE server = 'kr-03'"
        ).fetchone()[0]
print(json.dumps(out))
