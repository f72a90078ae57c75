"""Parses Prometheus text on stdin with prometheus_client's parser; prints the samples as JSON:
{"name{label=value,...}": value}. Fails (exit 1) on text the parser rejects."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
types = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"samples": out, "types": types}))
