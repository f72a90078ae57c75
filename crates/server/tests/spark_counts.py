"""Counts rows of gamelake's silver Delta tables with Apache Spark (pyspark, local[2]), the way
an EMR or Databricks job reads them: the Parquet files the Delta log lists, with filters that
Spark pushes into the Parquet reader (row-group statistics and dictionary filtering).

Usage: spark_counts.py DATA_DIR SINCE_UTC table...
Prints a JSON object {"table": [rows, rows with event_time >= SINCE_UTC], ...}.

The live files come from the table's JSON commits (adds minus removes); the tables it is given
have no checkpoint yet, and it refuses one rather than guess. No jars are fetched: plain Spark.
"""
import json
import os
import sys

from pyspark.sql import SparkSession

root, since, tables = sys.argv[1], sys.argv[2], sys.argv[3:]


def live_files(table_dir):
    log = os.path.join(table_dir, "_delta_log")
    if os.path.exists(os.path.join(log, "_last_checkpoint")):
        sys.exit(f"{log} has a checkpoint; this reader follows JSON commits only")
    files = {}
    for name in sorted(n for n in os.listdir(log) if n.endswith(".json")):
        for line in open(os.path.join(log, name)):
            action = json.loads(line)
            if "add" in action:
                files[action["add"]["path"]] = True
            elif "remove" in action:
                files.pop(action["remove"]["path"], None)
    return [os.path.join(table_dir, p) for p in files]


spark = (
    SparkSession.builder.master("local[2]")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
out = {}
for table in tables:
    table_dir = os.path.join(root, "silver", table)
    df = spark.read.option("basePath", table_dir).option("mergeSchema", "true").parquet(*live_files(table_dir))
    recent = df.filter(f"event_time >= TIMESTAMP '{since}'").count()
    out[table] = [df.count(), recent]
spark.stop()
print(json.dumps(out))
