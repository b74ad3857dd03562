"""Executors: where a sweep's points run (local processes, a Dask cluster, a Ray cluster).

An executor takes a picklable top-level function and a list of task mappings
and yields ``(task, outcome)`` pairs *as they finish* (any order). The outcome
is whatever the function returned, or the exception that escaped it (or the
executor's own error, e.g. a worker process that died). Results never depend
on the executor: a point's result is a pure function of its task, and the
driver (:mod:`clustersim.sweep`) writes every result itself, so workers need
no shared file system.

Executor specs (``--executor``):

* ``local`` (default): ``concurrent.futures.ProcessPoolExecutor`` with
  ``workers`` processes (default: all cores, ``os.cpu_count()``), started with
  the ``spawn`` method so a parent holding threads (a Dask client, a GUI) cannot
  deadlock a child; ``local:N`` is the same with N processes;
* ``serial``: in this process, one point after another (debugging, profilers);
* ``dask://HOST:PORT`` or ``tcp://HOST:PORT``: an existing Dask scheduler
  (``pip install "clustersim[dask]"``); ``dask`` alone starts a local Dask
  cluster on loopback for this sweep;
* ``ray`` (a local Ray instance, or the cluster named by ``RAY_ADDRESS``) or
  ``ray://HOST:PORT`` (Ray client; ``pip install "clustersim[ray]"``).

Workers of a Dask or Ray cluster must have the same clustersim installed and
see input files (traces, topologies) at the same paths as the driver.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from clustersim.errors import ConfigError

Task = dict[str, Any]
TaskFn = Callable[[Task], Any]


class Executor(Protocol):
    """Runs ``fn(task)`` for each task; yields ``(task, result or exception)`` as they end."""

    name: str

    def run(self, fn: TaskFn, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Yield each task with its outcome in completion order."""
        ...

    def close(self) -> None:
        """Release workers and connections this executor opened."""
        ...


class SerialExecutor:
    """Runs tasks one by one in this process (no parallelism)."""

    name = "serial"

    def run(self, fn: TaskFn, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Call ``fn`` on each task in order; exceptions are yielded, not raised."""
        for task in tasks:
            try:
                out: Any = fn(task)
            except Exception as exc:
                out = exc
            yield task, out

    def close(self) -> None:
        """Nothing to release."""


def _watch_parent() -> None:
    """Worker initializer: exit as soon as the parent process dies (even by ``kill -9``)."""
    import threading

    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait as wait_conn

        wait_conn([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="clustersim-parent-watch", daemon=True).start()


DEAD_WORKER_HINT = (
    "a worker process died (out of memory, a crash in native code, or a script that starts a "
    "sweep without `if __name__ == '__main__':`)"
)


class LocalExecutor:
    """A pool of ``workers`` local processes (``spawn`` start method).

    At most ``2 * workers`` tasks are in flight, so a killed driver leaves
    little queued work behind and memory stays flat for large sweeps. Workers
    watch their parent and exit when it dies, so a killed sweep leaves no
    orphans. A script that runs a sweep must guard it with
    ``if __name__ == "__main__":`` (spawned workers import the script).
    """

    def __init__(self, workers: int | None = None) -> None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ConfigError(f"executor 'local': workers must be >= 1, got {n}")
        self.workers = n
        self.name = f"local:{n}"

    def run(self, fn: TaskFn, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Submit tasks with a bounded window; yield them as they complete."""
        if not tasks:
            return
        ctx = mp.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(tasks)), mp_context=ctx, initializer=_watch_parent
        )
        window = 2 * self.workers
        pending: dict[Future[Any], Task] = {}
        it = iter(tasks)
        try:
            for task in it:
                pending[pool.submit(fn, task)] = task
                if len(pending) >= window:
                    break
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    exc = fut.exception()
                    if isinstance(exc, BrokenProcessPool):
                        exc = BrokenProcessPool(f"{DEAD_WORKER_HINT}: {exc}")
                    yield task, (exc if exc is not None else fut.result())
                for task in it:
                    try:
                        pending[pool.submit(fn, task)] = task
                    except RuntimeError as exc:  # pool broken by a dead worker
                        yield task, BrokenProcessPool(f"{DEAD_WORKER_HINT}: {exc}")
                        continue
                    if len(pending) >= window:
                        break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Pools live only inside :meth:`run`; nothing to release."""


class DaskExecutor:
    """Tasks on a Dask ``distributed`` cluster (an existing scheduler, or a local one)."""

    def __init__(self, address: str | None, workers: int | None = None) -> None:
        try:
            dist: Any = importlib.import_module("distributed")
        except ImportError:
            raise ConfigError(
                "executor 'dask' needs Dask distributed: pip install 'clustersim[dask]'"
            ) from None
        self._cluster: Any = None
        if address is None:
            self._cluster = dist.LocalCluster(
                n_workers=workers or (os.cpu_count() or 1),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            self._client: Any = dist.Client(self._cluster)
            self.name = "dask:local"
        else:
            try:
                self._client = dist.Client(address, timeout="30s")
            except OSError as exc:
                raise ConfigError(
                    f"executor 'dask': cannot reach scheduler {address}: {exc}"
                ) from None
            self.name = f"dask:{address}"

    def run(self, fn: TaskFn, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Submit every task (``pure=False``); yield them as they complete."""
        as_completed: Any = importlib.import_module("distributed").as_completed
        if not tasks:
            return
        futs = {self._client.submit(fn, t, pure=False): t for t in tasks}
        try:
            for fut in as_completed(list(futs)):
                task = futs[fut]
                try:
                    out: Any = fut.result()
                except Exception as exc:
                    out = exc
                yield task, out
        finally:
            for f in futs:
                f.cancel()

    def close(self) -> None:
        """Close the client (and the local cluster when this executor started one)."""
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class RayExecutor:
    """Tasks on Ray: ``ray.init(address)``; ``None`` = local instance or ``RAY_ADDRESS``."""

    def __init__(self, address: str | None, workers: int | None = None) -> None:
        try:
            ray: Any = importlib.import_module("ray")
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install 'clustersim[ray]'") from None
        self._ray: Any = ray
        self._own = not ray.is_initialized()
        if self._own:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and "RAY_ADDRESS" not in os.environ:
                kwargs["num_cpus"] = workers or (os.cpu_count() or 1)
            ray.init(address=address, **kwargs)
        self.name = f"ray:{address or os.environ.get('RAY_ADDRESS', 'local')}"

    def run(self, fn: TaskFn, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Submit every task as a Ray remote function; yield them as they complete."""
        ray = self._ray
        if not tasks:
            return
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = {remote.remote(t): t for t in tasks}
        left = list(refs)
        try:
            while left:
                done, left = ray.wait(left, num_returns=1)
                for ref in done:
                    try:
                        out: Any = ray.get(ref)
                    except Exception as exc:
                        cause = getattr(exc, "cause", None)
                        out = cause if isinstance(cause, Exception) else exc
                    yield refs[ref], out
        finally:
            for ref in left:
                ray.cancel(ref)

    def close(self) -> None:
        """Shut Ray down when this executor started it."""
        if self._own:
            self._ray.shutdown()


def make_executor(spec: str | None = None, workers: int | None = None) -> Executor:
    """The executor named by ``spec`` (see the module docstring); ``None`` means ``local``."""
    s = (spec or "local").strip()
    if s == "serial":
        return SerialExecutor()
    if s == "local" or s.startswith("local:"):
        n = workers
        if s.startswith("local:"):
            try:
                n = int(s.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"executor '{s}': expected local:N with an integer N") from None
        return LocalExecutor(n)
    if s == "dask":
        return DaskExecutor(None, workers)
    if s.startswith("dask://"):
        return DaskExecutor("tcp://" + s.removeprefix("dask://"), workers)
    if s.startswith(("tcp://", "tls://")):
        return DaskExecutor(s, workers)
    if s == "ray":
        return RayExecutor(None, workers)
    if s.startswith("ray://"):
        return RayExecutor(s, workers)
    raise ConfigError(
        f"unknown executor '{s}'; use local, local:N, serial, dask, dask://HOST:PORT, "
        "ray or ray://HOST:PORT"
    )
