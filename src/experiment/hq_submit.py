"""Submits a cnnsplitter task graph as one HyperQueue job through HyperQueue's Python API.

Written next to the job by `cnnsplitter experiment submit --hq` and run by it; it reports on
standard output, one JSON object per line: submitted, progress, failed, finished.

usage: python submit.py JOB.json [--server-dir DIR] [--local-workers K] [--wait]
"""

import argparse
import json
import sys


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("--server-dir")
    parser.add_argument("--local-workers", type=int, default=0)
    parser.add_argument("--wait", action="store_true")
    args = parser.parse_args()
    try:
        from hyperqueue import Client, Job, LocalCluster
        from hyperqueue.cluster import WorkerConfig
        from hyperqueue.ffi.protocol import ResourceRequest
    except ImportError as e:
        emit(event="missing", error=str(e), python=sys.executable)
        return 3

    with open(args.job) as f:
        spec = json.load(f)
    # max_fails=None: a failed task cancels only what depends on it; the rest runs on.
    job = Job(name=spec["name"], max_fails=None)
    tasks = []
    for t in spec["tasks"]:
        tasks.append(
            job.program(
                t["args"],
                deps=[tasks[i] for i in t["deps"]],
                name=t["id"],
                stdout=t["stdout"],
                stderr=t["stderr"],
                resources=ResourceRequest(cpus=t["cpus"]),
            )
        )

    cluster = None
    try:
        if args.local_workers > 0:
            cluster = LocalCluster(server_dir=args.server_dir)
            for _ in range(args.local_workers):
                cluster.start_worker(WorkerConfig(cores=1))
            client = cluster.client()
        else:
            client = Client(args.server_dir)
        submitted = client.submit(job)
        emit(event="submitted", job=submitted.id, tasks=len(tasks))
        if args.wait:

            def progress(jobs):
                emit(
                    event="progress",
                    finished=sum(s["finished"] for s in jobs.values()),
                    total=sum(s["total"] for s in jobs.values()),
                )

            failed_jobs = client.connection.wait_for_jobs([submitted.id], progress)
            if failed_jobs:
                failed = client.get_failed_tasks(submitted)
                emit(event="failed", tasks=[{"index": int(i), "error": c.error} for i, c in failed.items()])
            emit(event="finished")
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
