"""Where the fanned-out tasks of a flow (a study's trial workers, the pipeline's trainings) run:
a Dask cluster through Prefect's own DaskTaskRunner (prefect-dask). A local cluster of K
single-threaded worker processes by default, each with TensorFlow's thread pools sized to
cores / K; or the scheduler at a configured address (`tcp://host:8786`), whose workers were
started by the user."""

from __future__ import annotations

import logging
import os

from prefect_dask import DaskTaskRunner


def worker_threads(workers: int) -> int:
    """TensorFlow's intra-op threads for each of `workers` processes sharing this machine."""
    return max((os.cpu_count() or 1) // max(workers, 1), 1)


def dask_task_runner(scheduler: str, workers: int) -> DaskTaskRunner:
    """The scheduler's cluster, or a local one of `workers` single-threaded processes."""
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    threads = str(worker_threads(workers))
    cluster = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "silence_logs": logging.WARNING,
        "dashboard_address": None,
        # read by TensorFlow when a worker process starts it: K trainings share the cores
        "env": {
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": threads,
        },
    }
    return DaskTaskRunner(cluster_kwargs=cluster)


def share_temporary_server() -> None:
    """In local mode, start Prefect's temporary server now and name it in PREFECT_API_URL, so
    the worker processes the cluster starts report to the same server as the flow."""
    if "PREFECT_API_URL" in os.environ:
        return
    # deferred: Prefect's server code, needed in local mode only
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=180)
    os.environ["PREFECT_API_URL"] = server.api_url
