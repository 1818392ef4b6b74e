"""Executors: where work runs. ``SerialExecutor`` (in-process, for debugging) and
``RayExecutor`` (a local Ray instance or an existing cluster).

Both speak the same small protocol, which the run and tuning drivers use:
``share(obj)`` (put a large object once; runs receive it by reference), ``submit(job)``,
``wait()`` → finished :class:`Outcome` s, ``capacity`` (how many jobs to keep in flight) and
``close()``. The driver keeps at most ``capacity`` jobs in flight, so a job's submission time
is (nearly) its start time and the per-run timeout can be measured from it.

Failures: an exception inside a job is the job's business (``worker.execute_run`` turns it into a
row). What reaches the executor is infrastructure: a worker process that died (retried by Ray
``max_retries`` times, then ``Outcome.failure = "worker died: ..."``), or a job past its
deadline (force-cancelled, ``Outcome.timed_out``, unless its result has already come: that one
counts). Exceptions are never retried.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_RETRIES = 1


@dataclass
class Job:
    """``fn(*args)`` to run remotely. ``fn`` must be importable (module-level)."""

    key: Any
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: hard deadline in seconds from submission (None = none); enforced by RayExecutor only
    timeout: float | None = None
    payload: Any = None  # the driver's own bookkeeping (not sent to the worker)


@dataclass
class Outcome:
    job: Job
    value: Any = None
    failure: str | None = None
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.timed_out


class SerialExecutor:
    """Runs each job in this process when ``wait`` is called. No hard timeouts: a hung run
    hangs the driver (use the Ray executor for that), and a run that kills its process
    (``os._exit``) takes the driver with it."""

    name = "serial"

    def __init__(self, **_: Any) -> None:
        self._pending: list[Job] = []
        self.capacity = 1

    def share(self, obj: Any) -> Any:
        return obj

    def submit(self, job: Job) -> None:
        self._pending.append(job)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        if not self._pending:
            return []
        job = self._pending.pop(0)
        start = time.perf_counter()
        try:
            value = job.fn(*job.args, **job.kwargs)
        except Exception as exc:  # noqa: BLE001 - reported like an infrastructure failure
            return [Outcome(job, failure=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)]
        return [Outcome(job, value=value, seconds=time.perf_counter() - start)]

    def close(self) -> None:
        self._pending.clear()


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The body of every Ray task (object refs among ``args`` arrive resolved)."""
    return fn(*args, **kwargs)


def warm_worker() -> int:
    """Import what every run needs (torch, the metrics, the methods' modules)."""
    import torch._dynamo  # noqa: F401  (the first optimiser step imports it: ~1.3 s, profiled by `perf`)

    import harness.worker  # noqa: F401
    import tasks.metrics  # noqa: F401
    from baselines.registry import list_methods
    from ebm import inference  # noqa: F401

    list_methods()
    import sklearn.metrics  # noqa: F401

    return os.getpid()


def project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RayExecutor:
    """Ray tasks with ``num_cpus`` / ``num_gpus`` per run (fractions allowed).

    ``address``: an existing cluster (``ray://`` or ``host:port``; ``RAY_ADDRESS`` is honoured
    when None); otherwise a local instance with ``num_cpus`` CPUs (default: all). If Ray is
    already initialised in this process (tests, notebooks) it is reused and left running.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float = 0.0, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_in_flight: int | None = None, on_phase: Callable[[str], None] | None = None) -> None:
        import logging

        local = not (address or os.environ.get("RAY_ADDRESS"))
        if local:
            _loopback_only()
        import ray

        self._ray = ray
        self._owns_ray = False
        _token_warning_once()
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address:
                kwargs["address"] = address
                # ship the project's packages to the cluster's workers (no shared filesystem needed)
                kwargs["runtime_env"] = {"py_modules": _project_packages()}
                connect_to_cluster(ray, address, kwargs)
            else:
                # local workers inherit the driver's environment: let them import the project
                # from this checkout (a runtime_env would cost seconds per worker start)
                os.environ["PYTHONPATH"] = project_pythonpath()
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
                _init_local_ray(ray, kwargs)  # on the loopback interface only (see _loopback_only)
            self._owns_ray = True
        self.cpus_per_run, self.gpus_per_run = float(cpus_per_run), float(gpus_per_run)
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // self.cpus_per_run) if self.cpus_per_run > 0 else 1 << 30
        if self.gpus_per_run > 0:
            gpus = resources.get("GPU", 0)
            if gpus <= 0:
                raise RuntimeError("--gpus-per-run > 0 but the Ray cluster has no GPU")
            slots = min(slots, int(gpus // self.gpus_per_run))
        self.capacity = max(1, min(slots, max_in_flight or slots))
        self._remote = ray.remote(_call).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                                 max_retries=int(max_retries), retry_exceptions=False)
        self._running: dict[Any, tuple[Job, float]] = {}
        if on_phase is not None:
            on_phase(f"warming {self.capacity} Ray worker(s) (importing torch and the project)")
        try:
            self._warm_up()
        except BaseException:  # Ctrl-C or SIGTERM while the workers start: nobody else holds this executor
            self.close()
            raise

    def _warm_up(self) -> None:
        """Start ``capacity`` workers and import the project in each before any run, so a
        run's clock (and its hard timeout) does not include a worker's cold start."""
        self._ray.get([self._remote.remote(warm_worker) for _ in range(self.capacity)])

    def share(self, obj: Any) -> Any:
        return self._ray.put(obj)

    def submit(self, job: Job) -> None:
        ref = self._remote.remote(job.fn, *job.args, **job.kwargs)
        self._running[ref] = (job, time.monotonic())

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def _expired(self) -> list[Outcome]:
        """Cancel the jobs past their deadline and report them timed out; a job whose result is
        already there is left for ``wait`` to collect (it finished: its result counts)."""
        now, out = time.monotonic(), []
        for ref, (job, started) in list(self._running.items()):
            if job.timeout is not None and now - started > job.timeout:
                if self._ray.wait([ref], timeout=0)[0]:
                    continue
                self._ray.cancel(ref, force=True)
                del self._running[ref]
                out.append(Outcome(job, timed_out=True, seconds=now - started,
                                   failure=f"killed after {job.timeout:.0f} s (hard per-run timeout)"))
        return out

    def _next_deadline(self) -> float | None:
        deadlines = [started + job.timeout for job, started in self._running.values() if job.timeout is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Block until at least one job finishes or a deadline passes; return what finished."""
        from ray.exceptions import RayError, RayTaskError

        while self._running:
            expired = self._expired()
            if expired:
                return expired
            limit = self._next_deadline()
            if timeout is not None:
                limit = timeout if limit is None else min(limit, timeout)
            ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=limit)
            if not ready:
                if timeout is not None:  # the caller's poll interval (or a deadline) passed
                    return self._expired()
                continue
            outcomes = []
            for ref in ready:
                job, started = self._running.pop(ref)
                seconds = time.monotonic() - started
                try:
                    outcomes.append(Outcome(job, value=self._ray.get(ref), seconds=seconds))
                except RayTaskError as exc:  # the job raised although it should not: report it
                    outcomes.append(Outcome(job, failure=f"task error: {_first_line(exc)}", seconds=seconds))
                except RayError as exc:      # worker death, node loss, OOM kill, object lost, ...
                    outcomes.append(Outcome(job, failure=f"worker died: {type(exc).__name__}: {_first_line(exc)}",
                                            seconds=seconds))
            return outcomes
        return []

    def close(self) -> None:
        """Stop the jobs in flight and, for a local instance this executor started, Ray itself.

        An instance of our own is shut down without cancelling its jobs first (shutting down stops
        their workers): a force-cancel racing with a job that is just returning fails a check in
        Ray's core worker (``TaskManager::CompletePendingTask``, ray-project/ray#54785; still seen
        with Ray 2.60 in tests/test_durability.py, where the driver then exits with status 1
        instead of 130 when a SIGTERM comes while runs are in flight). On a cluster the jobs
        are cancelled, since the cluster outlives this driver."""
        running, self._running = list(self._running), {}
        if self._owns_ray:
            self._ray.shutdown()
            return
        for ref in running:
            self._ray.cancel(ref, force=True)


def _init_local_ray(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init(**kwargs)`` for a local instance, keeping the driver's signal handling.

    Starting a local instance replaces the driver's SIGTERM handler twice: ``ray.init`` first
    installs ``sys.exit(15)``, then the head node one that kills the processes it started and calls
    ``sys.exit(1)`` (before, such a SIGTERM ended the driver with status 15 and its invocation
    recorded ``finished``, or, while the workers warmed up, with an abort that left it
    ``running``). A signal inside ``ray.init`` is now the driver's own stop,
    :class:`KeyboardInterrupt` (``ebm-bench run`` then records the invocation ``interrupted`` and
    exits 130, as at any other moment), once ``ray.shutdown`` has taken down what is left (not the
    raylet's two agents when the head node's handler killed the raylet: Ray's own leftover). After
    it, the driver's handlers of SIGINT, SIGTERM and SIGHUP are put back, so a signal while the
    workers warm up (seconds) is one too."""
    import signal
    import threading

    from harness import interrupts

    main_thread = threading.current_thread() is threading.main_thread()
    kept = {sig: signal.getsignal(sig) for sig in interrupts.STOP_SIGNALS} if main_thread else {}
    try:
        ray.init(**kwargs)
    except BaseException as exc:
        ray.shutdown()
        if isinstance(exc, SystemExit):
            raise KeyboardInterrupt(f"signal inside ray.init (Ray's handler exited with {exc.code})") from exc
        raise
    finally:
        interrupts.put_back(kept)


class _FirstOnly:
    """A logging filter that lets the first record through and drops the rest."""

    def __init__(self) -> None:
        self.seen = False

    def filter(self, record) -> bool:
        first, self.seen = not self.seen, True
        return first


def _token_warning_once() -> None:
    """Ray (>= 2.59) logs "Token authentication is enabled for this Ray cluster" at every start of
    a local instance (perf and the tests start several in one process): keep the first line.
    Workers do not repeat it: Ray sets RAY_AUTH_MODE in the driver's environment, which local
    workers inherit."""
    import logging

    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _FirstOnly) for f in logger.filters):
        logger.addFilter(_FirstOnly())


def _loopback_only() -> None:
    """Make a local Ray instance listen on 127.0.0.1 only (GCS, raylet, workers, agents).

    Ray >= 2.59 maps ``_node_ip_address="127.0.0.1"`` to the machine's routable address unless
    multi-node clusters are disabled, which is what its ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    switch does (the default on macOS and Windows, to keep a laptop's Ray off the network). It
    is read when Ray is imported, and inherited by the processes Ray starts; if Ray was already
    imported the constant is set as well. Measured: every listening socket of the instance is
    then on 127.0.0.1 (tests/test_cluster.py)."""
    import sys

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


#: seconds ``--address`` may take to connect before the driver gives up with a message
CONNECT_TIMEOUT = 30.0


class ClusterConnectError(RuntimeError):
    """``--address`` could not be used; the message names the address and what to check."""


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``ray://host:port`` or ``host:port`` (None for ``auto`` and the like)."""
    from urllib.parse import urlsplit

    target = address if "://" in address else f"//{address}"
    try:
        parts = urlsplit(target)
        return (parts.hostname, parts.port or (10001 if address.startswith("ray://") else 6379)) \
            if parts.hostname else None
    except ValueError:
        return None


def _port_answers(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None if a TCP connection to host:port opens, else why not."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def connect_to_cluster(ray, address: str, kwargs: dict[str, Any], *, timeout: float = CONNECT_TIMEOUT) -> None:
    """``ray.init(**kwargs)`` for an existing cluster, bounded in time: the port is probed
    first (a closed port fails at once), then ``ray.init`` gets ``timeout`` seconds. A failure
    is a :class:`ClusterConnectError` naming the address, whether its port answered, and the
    token-authentication setting to check (``RAY_AUTH_MODE``; clusters started by Ray >= 2.59
    use token authentication by default)."""
    import threading

    auth = os.environ.get("RAY_AUTH_MODE")
    auth_hint = (f"RAY_AUTH_MODE={auth} here" if auth else "RAY_AUTH_MODE is not set here") + \
        "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or " \
        "RAY_AUTH_TOKEN_PATH) on this machine too"
    target = _host_port(address)
    if target is not None:
        why = _port_answers(*target)
        if why is not None:
            raise ClusterConnectError(f"cannot reach the Ray cluster at {address}: port {target[1]} on {target[0]} "
                                      f"did not answer ({why}); is the head running (`ray start --head`) and "
                                      "the address right?")
    answered = "its port answered" if target is not None else "address resolved by Ray"
    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - reported below with the address
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ClusterConnectError(f"could not connect to the Ray cluster at {address} within {timeout:.0f} s "
                                  f"({answered}); check {auth_hint}")
    error = outcome.get("error")
    if error is not None:
        raise ClusterConnectError(f"could not connect to the Ray cluster at {address} ({answered}): "
                                  f"{type(error).__name__}: {_first_line(error)}; check {auth_hint}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500]


def project_pythonpath() -> str:
    """PYTHONPATH for local Ray workers: this checkout first, then what was already set."""
    existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([project_root()] + [p for p in existing if p != project_root()])


def _project_packages() -> list:
    import baselines
    import ebm
    import harness
    import tasks

    return [baselines, ebm, harness, tasks]


def make_executor(name: str, **kwargs: Any):
    """``"ray"`` or ``"serial"``; unknown names are an error."""
    if name == "serial":
        return SerialExecutor(**kwargs)
    if name == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"unknown executor {name!r}; choose 'ray' or 'serial'")


def drive(executor, next_job: Callable[[], Job | None], on_done: Callable[[Outcome], None],
          *, on_submit: Callable[[Job], None] | None = None, poll: float | None = None,
          on_idle: Callable[[], None] | None = None) -> None:
    """Keep ``executor.capacity`` jobs in flight until ``next_job`` has nothing more and all
    submitted jobs are done. ``next_job`` may return None while others are running (the
    tuner waits for results before asking again)."""
    while True:
        while executor.in_flight < executor.capacity:
            job = next_job()
            if job is None:
                break
            executor.submit(job)
            if on_submit:
                on_submit(job)
        if executor.in_flight == 0:
            return
        for outcome in executor.wait(timeout=poll):
            on_done(outcome)
        if on_idle:
            on_idle()


class SharedData:
    """Task data loaded once per ``data_key`` in the driver and shared by reference
    (``executor.share``) with every run that needs it; dropped when its last run is done.
    A load error is remembered and re-raised for each run of that key."""

    def __init__(self, executor, load: Callable[[Any], Any], keys: list[Any]) -> None:
        from collections import Counter

        self.executor, self.load = executor, load
        self.uses = Counter(keys)
        self.refs: dict[Any, Any] = {}
        self.errors: dict[Any, Exception] = {}

    def get(self, key: Any) -> Any:
        if key in self.errors:
            raise self.errors[key]
        if key not in self.refs:
            try:
                self.refs[key] = self.executor.share(self.load(key))
            except Exception as exc:  # noqa: BLE001 - becomes a failed row per run
                self.errors[key] = exc
                raise
        return self.refs[key]

    def release(self, key: Any) -> None:
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.refs.pop(key, None)
