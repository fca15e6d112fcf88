"""Tasks/s through one and through two Celery workers (notify_like on the lab's RabbitMQ).

Each run queues a backlog of N tasks, then starts the workers; the rate is taken from the
notifications' own commit timestamps (first to last), so worker start-up is not counted.
Prints the median of the runs.

    python benchmarks/notify_throughput.py [--tasks 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import labkit as lk
from labkit.backend import tasks
from labkit.backend.workers import CeleryWorkers

DB = "bench_notify"


def one_run(lab, n_workers: int, n_tasks: int) -> float:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with lab.leader.connect(DB) as conn:
        conn.execute("TRUNCATE notifications, notify_attempts, task_failures")
    workers = CeleryWorkers(lab.config.lab_dir / f"celery-{queue}", broker_url=lab.broker_url,
                            dsn=lab.leader.dsn(DB), queue=queue, workers=n_workers)
    tasks.declare_queues(workers.app)
    notify_like = workers.app.tasks["notify_like"]
    with workers.app.producer_or_acquire() as producer:
        for i in range(1, n_tasks + 1):
            notify_like.apply_async(kwargs=dict(liker_id=i, media_id=1, owner_id=2),
                                    producer=producer)
    try:
        with workers:
            deadline = time.monotonic() + 300
            while lab.leader.execute("SELECT count(*) FROM notifications", dbname=DB)[0][0] \
                    < n_tasks:
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not finish within 300 s")
                time.sleep(0.1)
    finally:
        with lab.rabbitmq.connect() as conn:
            ch = conn.channel()
            ch.queue_delete(queue)
            ch.queue_delete(f"{queue}.dead")
    ((span_s,),) = lab.leader.execute(
        "SELECT extract(epoch FROM max(created_at) - min(created_at)) FROM notifications",
        dbname=DB)
    return (n_tasks - 1) / float(span_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = lk.up()
    lab.postgres.create_database(DB)
    with lab.leader.connect(DB) as conn:
        tasks.install(conn)
    print(f"notify_like throughput, {args.tasks} tasks per run, {args.runs} runs "
          f"(solo pool, acks_late, publisher confirms, a push and its record per task)")
    for n_workers in (1, 2):
        rates = [one_run(lab, n_workers, args.tasks) for _ in range(args.runs)]
        print(f"  {n_workers} worker(s): median {statistics.median(rates):7.0f} tasks/s   "
              f"runs: {', '.join(f'{r:.0f}' for r in rates)}")


if __name__ == "__main__":
    main()
