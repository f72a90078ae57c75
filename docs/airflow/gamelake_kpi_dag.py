"""An Airflow DAG that drives gamelake's KPI jobs with `gamelake jobs run`.

gamelake's own scheduler (`[jobs] enabled = true`, the default) already runs these jobs on
their cron, in dependency order, with retries, catch-up and late-data rebuilds. Use a DAG like
this one instead when Airflow is where a team's schedules live: turn the built-in scheduler
off (`[jobs] enabled = false`) and let Airflow call the CLI on the machine that has the data
dir (or the same `data_dir = "s3://…"` and config).

Exit codes of `gamelake jobs run`: 0 built; 1 the build failed after the job's own retries
(Airflow may retry the task); 2 wrong command or configuration (fix the DAG, do not retry);
3 a job it depends on has not built the partition yet (the upstream task did not run).

The command lines below are run by gamelake's test suite
(crates/server/tests/e2e/jobs.rs, `airflow_dag_command_lines`), with `{{ ds }}` and the hour
filled in as Airflow would.
"""

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

GAMELAKE = "gamelake"
CONFIG = "--config /etc/gamelake/gamelake.toml"
# The game's time zone: Airflow's `ds` is then the game day the run builds.
TZ = pendulum.timezone("Asia/Seoul")

# Daily KPI jobs and what each waits for. `first_days` (each account's first active day) reads
# its own earlier days, so it runs with Airflow's `depends_on_past`: a day waits for the day
# before. Let `start_date` be the first day with events, or build the days before it once with
# `gamelake jobs backfill first_days --from FIRST_DAY --to DAY_BEFORE_START_DATE`; otherwise
# `gamelake jobs run first_days` refuses with exit 3 and names the days to build.
DAILY = {
    "first_days": [],
    "dau": ["first_days"],
    "revenue": ["dau"],
    "retention": ["first_days"],
    "ccu": [],
    "currency_flow": [],
}

with DAG(
    dag_id="gamelake_kpi_daily",
    schedule="15 0 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz=TZ),
    catchup=True,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
) as daily:
    tasks = {
        name: BashOperator(
            task_id=name,
            bash_command=f"{GAMELAKE} jobs run {name} --date {{{{ ds }}}} {CONFIG}",
            depends_on_past=(name == "first_days"),
        )
        for name in DAILY
    }
    for name, upstream in DAILY.items():
        for u in upstream:
            tasks[u] >> tasks[name]

with DAG(
    dag_id="gamelake_kpi_hourly",
    schedule="10 * * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz=TZ),
    catchup=True,
    max_active_runs=1,
) as hourly:
    BashOperator(
        task_id="item_economy",
        bash_command=(
            f"{GAMELAKE} jobs run item_economy "
            "--date {{ data_interval_start.in_timezone('Asia/Seoul').strftime('%Y-%m-%dT%H') }} "
            f"{CONFIG}"
        ),
    )

with DAG(
    dag_id="gamelake_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz=TZ),
    params={"job": "first_days", "from": "2026-11-01", "to": "2026-11-07"},
) as backfill:
    BashOperator(
        task_id="backfill",
        bash_command=(
            f"{GAMELAKE} jobs backfill {{{{ params.job }}}} --from {{{{ params.from }}}} "
            f"--to {{{{ params.to }}}} --with-downstream {CONFIG}"
        ),
    )
