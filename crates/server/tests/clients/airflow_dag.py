"""Loads docs/airflow/gamelake_kpi_dag.py with stand-ins for the Airflow and pendulum modules
it imports, and prints the shell commands its tasks would run, as Airflow would render them,
one JSON object per line in an order that respects the DAG's dependencies.

usage: airflow_dag.py DAG_FILE DS HOUR_PARTITION JOB FROM TO
"""

import json
import re
import sys
import types

dag_file, ds, hour, job, date_from, date_to = sys.argv[1:7]

tasks = []


class DAG:
    def __init__(self, dag_id, **kwargs):
        self.dag_id = dag_id
        self.params = kwargs.get("params", {})

    def __enter__(self):
        DAG.current = self
        return self

    def __exit__(self, *exc):
        DAG.current = None


class BashOperator:
    def __init__(self, task_id, bash_command, **kwargs):
        self.dag = DAG.current
        self.task_id = task_id
        self.bash_command = bash_command
        self.upstream = []
        tasks.append(self)

    def __rshift__(self, other):
        other.upstream.append(self)
        return other


pendulum = types.ModuleType("pendulum")
pendulum.timezone = lambda name: name
pendulum.datetime = lambda *a, **k: (a, k)
pendulum.duration = lambda **k: k
airflow = types.ModuleType("airflow")
airflow.DAG = DAG
operators = types.ModuleType("airflow.operators")
bash = types.ModuleType("airflow.operators.bash")
bash.BashOperator = BashOperator
sys.modules.update(
    {
        "pendulum": pendulum,
        "airflow": airflow,
        "airflow.operators": operators,
        "airflow.operators.bash": bash,
    }
)

exec(compile(open(dag_file).read(), dag_file, "exec"), {"__name__": "dag"})

values = {
    "ds": ds,
    "data_interval_start.in_timezone('Asia/Seoul').strftime('%Y-%m-%dT%H')": hour,
    "params.job": job,
    "params.from": date_from,
    "params.to": date_to,
}


def render(template):
    def one(m):
        key = m.group(1).strip()
        if key not in values:
            raise SystemExit(f"no value for template expression {key!r}")
        return values[key]

    return re.sub(r"\{\{(.*?)\}\}", one, template)


done = []
while len(done) < len(tasks):
    for t in tasks:
        if t not in done and all(u in done for u in t.upstream):
            done.append(t)
            print(json.dumps({"dag": t.dag.dag_id, "task": t.task_id, "command": render(t.bash_command)}))
