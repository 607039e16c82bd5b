"""The Ray side: one task per period, at most ``max_concurrency`` in flight.

The wrapped plan goes into the object store at most once per collect: the reference is
kept while the same Ray session lives, so collecting a query again ships nothing again.
A plan over in-memory frames goes as its recipe and the frames as Arrow
(:mod:`piot_dagster.engine.rebuild`), which workers map zero-copy, instead of pickled
with the frames inside (about a second for a 2M-row frame, and as long again for each
worker to load). Tasks receive the reference nested in a list, which Ray does not
resolve, so each worker process loads a plan once and reuses it for every later period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import polars as pl
import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from piot_dagster.engine.chunks import UNREAD_CHUNKS, Handed, chunks, plain_rows
from piot_dagster.engine.interrupts import POLL_S, Interrupts, deferred_interrupts
from piot_dagster.engine.memory import MemoryEvidence
from piot_dagster.engine.periods import Period
from piot_dagster.engine.rebuild import Detached, detach
from piot_dagster.engine.statements import recorded_statements
from piot_dagster.engine.stop_flag import StopFlag, sweep
from piot_dagster.engine.transport import ReturnAs, decode, encode
from piot_dagster.errors import (
    PeriodExecutionError,
    RayNotInitializedError,
    ReplayMismatch,
    Unschedulable,
    listing,
)

__all__ = [
    "DEFAULT_REMOTE_OPTIONS",
    "Fanout",
    "PeriodResult",
    "PeriodTask",
    "ShippedPlan",
    "Writer",
    "check_remote_options",
    "require_ray",
    "run",
]

logger = logging.getLogger("piot_dagster")

# Ray retries a task whose worker died (a system failure); an exception raised by the
# query itself is not retried unless the caller asks for it in remote_options.
DEFAULT_REMOTE_OPTIONS: Mapping[str, Any] = {"max_retries": 3, "retry_exceptions": False}
# Deserialised plans kept per worker process; a collect uses one, the rest are recent ones.
_PLAN_CACHE_SIZE = 4
_plans: OrderedDict[str, pl.LazyFrame] = OrderedDict()
# How long a stopped fan-out of writing tasks waits for the ones already running.
_STOP_WAIT_S = 60
# How often the driver, waiting for a task, checks that some alive node can run it.
_FEASIBLE_CHECK_S = 2.0


class Writer(Protocol):
    """Where a writing task stores its period's rows (the storage layer's
    ``PartitionWriter``), streaming them from the query; what ``write`` returns travels
    back to the driver. ``sql`` fills with the statements the query's sources send."""

    def write(
        self, query: pl.LazyFrame, sql: Sequence[str], *, proceed: Callable[[], bool]
    ) -> Any | None: ...

    def discard(self) -> None: ...


@dataclass(frozen=True)
class PeriodTask:
    """What one period's task runs: ``plan.filter(where).head(head).select(columns)``,
    shipped back as ``return_as``, or written to ``write`` (then only its stats return)."""

    where: pl.Expr
    head: int | None
    columns: list[str] | None
    return_as: ReturnAs
    write: Writer | None = None


@dataclass(frozen=True)
class Node:
    """The Ray node a task ran on."""

    id: str
    ip: str

    def __str__(self) -> str:
        return f"{self.id[:12]} ({self.ip})"


@dataclass(frozen=True)
class PeriodResult:
    """A finished period (what its writer reported), or a chunk of a reading period's
    rows (``last`` for its final one), with where it ran and its seconds so far."""

    period: Period
    frame: pl.DataFrame | None
    written: Any | None
    seconds: float
    node: Node
    last: bool = True

    @property
    def rows(self) -> int:
        return self.frame.height if self.frame is not None else self.written.rows  # type: ignore[union-attr]


class ShippedPlan:
    """A plan and its reference in the object store of the current Ray session."""

    def __init__(self, plan: pl.LazyFrame) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self._ref: ray.ObjectRef | None = None
        self._session: tuple[str, str] | None = None

    def ref(self) -> ray.ObjectRef:
        context = ray.get_runtime_context()
        session = (context.get_node_id(), context.get_job_id())
        with self._lock:
            if self._ref is None or self._session != session:
                self._ref, self._session = ray.put(detach(self.plan) or self.plan), session
            return self._ref

    def __getstate__(self) -> dict[str, Any]:
        return {"plan": self.plan}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["plan"])  # type: ignore[misc]


def _cached_plan(ref: ray.ObjectRef) -> pl.LazyFrame:
    key = ref.hex()
    plan = _plans.get(key)
    if plan is None:
        shipped = ray.get(ref)
        plan = shipped.plan() if isinstance(shipped, Detached) else shipped
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    else:
        _plans.move_to_end(key)
    return plan


def _query(plan_box: list[ray.ObjectRef], task: PeriodTask) -> pl.LazyFrame:
    query = _cached_plan(plan_box[0]).filter(task.where)
    if task.head is not None:
        query = query.head(task.head)
    return query if task.columns is None else query.select(task.columns)


def _node() -> Node:
    return Node(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())


@ray.remote
def _write_period(
    plan_box: list[ray.ObjectRef], task: PeriodTask, stop: StopFlag
) -> tuple[Any, float, Node] | None:
    """What the period's writer reported, its seconds and node, or None if the fan-out
    was stopped."""
    if stop.is_set():
        return None
    started = time.perf_counter()
    assert task.write is not None
    # The writer streams the rows to storage: the period is never held whole here.
    with recorded_statements() as statements:
        written = task.write.write(
            _query(plan_box, task), statements, proceed=lambda: not stop.is_set(fresh=True)
        )
    return None if written is None else (written, time.perf_counter() - started, _node())


@ray.remote
def _read_period(
    plan_box: list[ray.ObjectRef], task: PeriodTask, stop: StopFlag, rows: int
) -> tuple[Any, float, Node] | str | None:
    """The period's rows, seconds and node if they are at most ``rows`` (about a chunk,
    :func:`~piot_dagster.engine.chunks.plain_rows`); else :data:`_TOO_LARGE`, and the
    period runs again in :func:`_stream_period`; None if the fan-out was stopped. A plain
    task costs less than a streaming one (0.7 ms a period here), which thousands of
    small periods would pay. Its query asks for one row more than ``rows``, so a source
    below stops there (a LIMIT in scan_db's SQL) and the query ends by itself."""
    if stop.is_set():
        return None
    started = time.perf_counter()
    frame = _query(plan_box, task).head(rows + 1).collect(engine="streaming")
    if frame.height > rows:
        return _TOO_LARGE
    if stop.is_set():
        return None
    return encode(frame, task.return_as), time.perf_counter() - started, _node()


@ray.remote
def _stream_period(
    plan_box: list[ray.ObjectRef], task: PeriodTask, stop: StopFlag
) -> Generator[tuple[Any, float, Node, bool], None, None]:
    """The period's rows in chunks (:mod:`~piot_dagster.engine.chunks`), each with the
    seconds so far, the node and whether it is the last. Once the fan-out is stopped it
    sends nothing more (nobody reads it, and it would stay in the object store until the
    driver retires the stop flag, stop_flag.sweep), but reads its query to the end, as a
    plain task finishes its query: only that closes the query's sources."""
    if stop.is_set():
        return
    started = time.perf_counter()
    node = _node()
    sending = True
    for frame, last in chunks(_query(plan_box, task)):
        sending = sending and not stop.is_set()
        if sending:
            yield encode(frame, task.return_as), time.perf_counter() - started, node, last


# What a plain reading task returns for a period larger than it sends.
_TOO_LARGE = "too large for a plain task"
# Reading tasks stream, paused while UNREAD_CHUNKS chunks wait, and are retried by the
# driver (chunks.Handed), never replayed by Ray.
_STREAMING_OPTIONS: Mapping[str, Any] = {
    "num_returns": "streaming",
    "_generator_backpressure_num_objects": UNREAD_CHUNKS,
    "max_retries": 0,
    "retry_exceptions": False,
}
# Failures of the worker or node, which Ray retries up to max_retries; a task's own
# exception is retried only as retry_exceptions says.
_SYSTEM_FAILURES = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.OutOfMemoryError,
    ray.exceptions.LocalRayletDiedError,
)

Handle: TypeAlias = "ray.ObjectRef | ray.ObjectRefGenerator"


@dataclass
class _InFlight:
    """A submitted period: its task and the Ray handle of its current attempt."""

    period: Period
    task: PeriodTask
    handle: Handle
    failed: int = 0

    @property
    def streamed(self) -> bool:
        return isinstance(self.handle, ray.ObjectRefGenerator)

    @property
    def done(self) -> ray.ObjectRef:
        """Ready once the attempt has ended."""
        return self.handle.completed() if self.streamed else self.handle  # type: ignore[union-attr]


def require_ray() -> None:
    if not ray.is_initialized():
        raise RayNotInitializedError(
            "Ray is not initialised: call ray.init() (or ray.init(address=...) to join a "
            "cluster) before execute_on_ray and keep it running until the query is collected"
        )


def check_remote_options(remote_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Ray task options: our defaults overridden by the caller's, validated by Ray.

    ``scheduling_strategy`` may also be written ``{"node_id": ..., "soft": ...}``, which
    Dagster config and metadata can hold, for ``NodeAffinitySchedulingStrategy``.
    """
    if remote_options is None:
        remote_options = {}
    if not isinstance(remote_options, Mapping):
        raise TypeError(
            f"remote_options must be a mapping of Ray task options such as "
            f"{{'num_cpus': 2}}, not {type(remote_options).__name__}"
        )
    options = {**DEFAULT_REMOTE_OPTIONS, **remote_options}
    strategy = options.get("scheduling_strategy")
    if isinstance(strategy, Mapping):
        if set(strategy) - {"node_id", "soft"} or not isinstance(strategy.get("node_id"), str):
            raise ValueError(
                f"remote_options['scheduling_strategy'] as a mapping takes 'node_id' (a Ray "
                f"node's id) and 'soft' (True lets Ray run the task elsewhere if that node is "
                f"lost), not {dict(strategy)!r}"
            )
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            strategy["node_id"], soft=bool(strategy.get("soft", False))
        )
    try:
        _write_period.options(**options)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"remote_options is not valid for a Ray task: {exc}") from exc
    return options


def run(
    plan: ShippedPlan,
    work: list[tuple[Period, PeriodTask]],
    *,
    column: str,
    schema: pl.Schema,
    options: Mapping[str, Any],
    max_concurrency: int,
    keep_going: bool = False,
    infeasible_timeout_s: float = 60.0,
) -> Fanout:
    """Run every period's task, giving its result in period order, each logged: iterate the
    :class:`Fanout` in its ``with`` block, whose end ends the run.

    A result is yielded as soon as it and all earlier ones are ready. At most
    ``max_concurrency`` tasks are submitted and not yet consumed, which also bounds the
    results the driver holds. A failed task raises :class:`PeriodExecutionError` at
    once, or, with ``keep_going`` (tasks that write their own files), after every other
    period has run. Any other end (enough rows read, a failure, Ctrl-C, SIGTERM, a
    terminated Dagster run) stops the tasks in flight: those not started skip their work,
    running ones finish their query and replace no file.

    Tasks that no alive node can run (they ask for a resource that only a lost node
    offered) would wait in Ray forever: after ``infeasible_timeout_s`` without such a
    node, every period not yet done fails.
    """
    satisfied = threading.Event()
    results = _results(
        plan,
        work,
        column=column,
        schema=schema,
        options=options,
        max_concurrency=max_concurrency,
        keep_going=keep_going,
        infeasible_timeout_s=infeasible_timeout_s,
        satisfied=satisfied,
    )
    return Fanout(results, satisfied)


class Fanout:
    """The results of :func:`run`, in period order; leaving its ``with`` block ends the run.

    How the block ends says why the tasks still in flight stop, and so how that is
    reported. Normally, or by ``GeneratorExit`` (whoever reads the rows has all it wants:
    a ``head()`` met), they stop quietly. By any other exception (a failure, or Ctrl-C,
    which Polars raises in whatever Python code its source thread runs) the exception goes
    into the run, which stops them and warns. The reason is passed, never guessed from how
    the run's generator is closed: a run whose block never ended (a frame cut short
    before its ``with``) is closed later by the garbage collector, and warned about too.
    """

    def __init__(
        self, results: Generator[PeriodResult, None, None], satisfied: threading.Event
    ) -> None:
        # The flag is shared, not this object, so the generator holds no cycle back to it
        # and is closed the moment its last reference goes.
        self._results = results
        self._satisfied = satisfied

    def __iter__(self) -> Fanout:
        return self

    def __next__(self) -> PeriodResult:
        return next(self._results)

    def __enter__(self) -> Fanout:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, GeneratorExit):
            self._satisfied.set()
            self._results.close()
            return
        if self._results.gi_frame is None:
            return  # the run raised this itself, and stopped its tasks as it did
        try:
            self._results.throw(exc)
        except BaseException as raised:
            if raised is not exc:
                raise
        # The block's own exception goes on from its with statement.


def _results(
    plan: ShippedPlan,
    work: list[tuple[Period, PeriodTask]],
    *,
    column: str,
    schema: pl.Schema,
    options: Mapping[str, Any],
    max_concurrency: int,
    keep_going: bool,
    infeasible_timeout_s: float,
    satisfied: threading.Event,
) -> Generator[PeriodResult, None, None]:
    require_ray()
    sweep()
    writing = _write_period.options(**options)
    reading = _read_period.options(**options)
    streaming = _stream_period.options(**{**options, **_STREAMING_OPTIONS})
    plan_box = [plan.ref()]
    stop = StopFlag()
    queue = iter(work)
    pending: deque[_InFlight] = deque()
    # Once one period is too large for a plain task, the others are likely to be too:
    # they stream from the start instead of starting over.
    large = False
    rows = plain_rows(schema)

    def start(task: PeriodTask, *, stream: bool = False) -> Handle:
        if task.write is not None:
            return writing.remote(plan_box, task, stop)
        if stream or large:
            return streaming.remote(plan_box, task, stop)
        return reading.remote(plan_box, task, stop, rows)

    def submit(period: Period, task: PeriodTask) -> None:
        pending.append(_InFlight(period, task, start(task)))

    def done() -> None:
        # Popped only once done, so a task whose result an interrupt cut short is stopped
        # too; the next one goes in only now: max_concurrency in flight.
        pending.popleft()
        following = next(queue, None)
        if following is not None:
            submit(*following)

    feasibility = _Feasibility(options, column, infeasible_timeout_s)
    failures: list[tuple[Period, BaseException]] = []
    with deferred_interrupts() as interrupts:
        try:
            for item in islice(queue, max_concurrency):
                submit(*item)
            while pending:
                flight = pending[0]
                try:
                    answer = (
                        None if flight.streamed else _result(flight.handle, feasibility, interrupts)
                    )
                    if answer == _TOO_LARGE:
                        large = True
                        flight.handle = start(flight.task, stream=True)
                    if flight.streamed:
                        rows = 0
                        for frame, seconds, node, last in _streamed(
                            flight,
                            partial(start, stream=True),
                            schema,
                            options,
                            feasibility,
                            interrupts,
                        ):
                            rows += frame.height
                            if last:
                                done()
                                _log(flight.period, column, rows, seconds)
                            yield PeriodResult(flight.period, frame, None, seconds, node, last)
                        continue
                except (ray.exceptions.RayError, ReplayMismatch) as exc:
                    failures.append((flight.period, exc))
                    if flight.task.write is None or not keep_going:
                        raise _failure(column, failures) from exc
                    # Every attempt has ended; one killed mid-write left what it wrote.
                    flight.task.write.discard()
                    done()
                    continue
                except Unschedulable as exc:
                    stranded = [f.period for f in pending] + [p for p, _ in queue]
                    failures.extend((p, exc) for p in stranded)
                    raise _failure(column, failures) from None
                done()
                if answer is None:
                    continue
                payload, seconds, node = answer
                if flight.task.write is None:
                    frame = decode(payload, flight.task.return_as, schema)
                    result = PeriodResult(flight.period, frame, None, seconds, node)
                else:
                    result = PeriodResult(flight.period, None, payload, seconds, node)
                _log(flight.period, column, result.rows, seconds)
                yield result
        except BaseException:
            # Ended early (a head() met), a failed period, or an interrupt (Ctrl-C, SIGTERM, a
            # Dagster run terminated): the tasks in flight skip or drop their work. Tasks that
            # no node can run are not waited for.
            _stop(
                pending,
                stop,
                column,
                expected=satisfied.is_set(),
                wait=not feasibility.stranded,
            )
            raise
    if failures:
        raise _failure(column, failures) from failures[0][1]


def _log(period: Period, column: str, rows: int, seconds: float) -> None:
    logger.info(
        "piot_dagster: period %s of %r: %d rows in %.3f s", period.label, column, rows, seconds
    )


def _streamed(
    flight: _InFlight,
    start: Callable[[PeriodTask], Handle],
    schema: pl.Schema,
    options: Mapping[str, Any],
    feasibility: _Feasibility,
    interrupts: Interrupts,
) -> Iterator[tuple[pl.DataFrame, float, Node, bool]]:
    """A reading task's chunks as they come, retried as Ray would retry the task (see
    :mod:`~piot_dagster.engine.chunks`); a retry that cannot go on exactly raises
    :class:`ReplayMismatch`."""
    handed = Handed()
    while True:
        try:
            while True:
                ref = _next_chunk(flight.handle, feasibility, interrupts)
                if ref is None:
                    return
                payload, seconds, node, last = ray.get(ref)
                frame = handed.onward(decode(payload, flight.task.return_as, schema), last)
                yield frame, seconds, node, last
                if last:
                    return
        except ray.exceptions.RayError as exc:
            if not _retried(exc, options, flight.failed):
                raise
            flight.failed += 1
            logger.warning(
                "piot_dagster: retrying the task of period %s after %d of its rows were read: %s",
                flight.period.label,
                handed.rows,
                _cause(exc),
            )
            handed.retry()
            flight.handle = start(flight.task)


def _retried(exc: ray.exceptions.RayError, options: Mapping[str, Any], failed: int) -> bool:
    """Whether Ray, with these task options, would retry a task that failed so after
    ``failed`` earlier failures."""
    budget = options.get("max_retries", DEFAULT_REMOTE_OPTIONS["max_retries"])
    if budget != -1 and failed >= budget:
        return False
    if isinstance(exc, _SYSTEM_FAILURES):
        return True
    if not isinstance(exc, ray.exceptions.RayTaskError):
        return False
    retry = options.get("retry_exceptions", False)
    if isinstance(retry, (list, tuple)):
        return isinstance(exc.cause, tuple(retry))
    return bool(retry)


def _next_chunk(
    handle: ray.ObjectRefGenerator, feasibility: _Feasibility, interrupts: Interrupts
) -> ray.ObjectRef | None:
    """The reference of the generator's next chunk once it is ready, None at its end."""
    _wait(handle, feasibility, interrupts)
    return next(handle, None)


def _stop(
    pending: deque[_InFlight],
    stop: StopFlag,
    column: str,
    *,
    expected: bool,
    wait: bool = True,
) -> None:
    """Stop the tasks in flight; wait for the writing ones, so none is killed mid-write
    when the driver exits, and remove what any of them left behind. Logged as a warning
    unless ``expected``: the consumer had enough rows and nothing was being written."""
    if not pending:
        return
    stop.set()
    refs = [flight.done for flight in pending]
    targets = [flight.task.write for flight in pending if flight.task.write is not None]
    logger.log(
        logging.DEBUG if expected and not targets else logging.WARNING,
        "piot_dagster: stopped the Ray tasks of %d period(s) of %r: %s",
        len(pending),
        column,
        listing([flight.period.label for flight in pending], limit=5),
    )
    try:
        if targets and wait:
            _, running = ray.wait(refs, num_returns=len(refs), timeout=_STOP_WAIT_S)
            if running:
                logger.warning(
                    "piot_dagster: %d stopped task(s) of %r still run after %d s; they "
                    "will not replace any file",
                    len(running),
                    column,
                    _STOP_WAIT_S,
                )
    finally:
        for target in targets:
            target.discard()
        stop.retire(refs)


def _failure(column: str, failures: list[tuple[Period, BaseException]]) -> PeriodExecutionError:
    # A database outage fails every later period alike: each cause is told once.
    by_cause: dict[str, list[str]] = {}
    memory = MemoryEvidence()
    for period, exc in failures:
        by_cause.setdefault(_cause(exc, memory), []).append(period.label)
    which = "; ".join(
        f"period {listing(labels, limit=5)}: {cause}" for cause, labels in by_cause.items()
    )
    return PeriodExecutionError(
        f"the Ray task of {len(failures)} period(s) of {column!r} failed: {which}",
        period=failures[0][0].label,
        periods=tuple(period.label for period, _ in failures),
    )


def _cause(exc: BaseException, memory: MemoryEvidence | None = None) -> str:
    """``exc``'s first line, or its out-of-memory story if ``memory`` tells one."""
    if memory is not None and (oom := memory.explain(exc)):
        return oom
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _result(ref: ray.ObjectRef, feasibility: _Feasibility, interrupts: Interrupts) -> Any:
    """A plain task's result, once it is ready."""
    _wait(ref, feasibility, interrupts)
    return ray.get(ref)


def _wait(handle: Handle, feasibility: _Feasibility, interrupts: Interrupts) -> None:
    """Return once ``handle`` (a plain task's result, or a streaming task's next chunk) is
    ready, raising meanwhile an interrupt, and watching that some alive node can run the
    task."""
    while True:
        interrupts.check()
        if ray.wait([handle], timeout=POLL_S)[0]:
            return
        feasibility.check()


class _Feasibility:
    """Whether some alive node offers the resources a fan-out's tasks ask for.

    Ray keeps a task that no node can run pending until one joins (an autoscaler may add
    it); when a node that offered a custom resource dies, its tasks' retries wait like
    that forever. This waits ``timeout_s`` for such a node, then gives up.
    """

    def __init__(self, options: Mapping[str, Any], column: str, timeout_s: float) -> None:
        self.demand = _demand(options)
        self.column = column
        self.timeout_s = timeout_s
        self.since: float | None = None
        self.checked = time.monotonic()

    @property
    def stranded(self) -> bool:
        return self.since is not None

    def check(self) -> None:
        now = time.monotonic()
        if self.demand is None or now - self.checked < _FEASIBLE_CHECK_S:
            return
        self.checked = now
        if _some_node_offers(self.demand):
            self.since = None
            return
        if self.since is None:
            self.since = now
            logger.warning(
                "piot_dagster: no alive Ray node offers %s, which the tasks of %r ask for; "
                "waiting %.0f s for one to join",
                self.demand,
                self.column,
                self.timeout_s,
            )
        if now - self.since >= self.timeout_s:
            raise Unschedulable(
                f"no alive Ray node offers {self.demand}, which its task asks for (a node "
                f"that did may have died); none joined within {self.timeout_s:.0f} s. Start "
                f"a node with those resources, or change remote_options, and run it again"
            )


def _demand(options: Mapping[str, Any]) -> dict[str, float] | None:
    """The resources one task needs from a single node, or None when a placement group
    decides (its bundles were reserved already)."""
    strategy = options.get("scheduling_strategy")
    if strategy is not None and not (
        isinstance(strategy, NodeAffinitySchedulingStrategy) or strategy in ("DEFAULT", "SPREAD")
    ):
        return None
    wanted = {
        "CPU": options.get("num_cpus", 1),
        "GPU": options.get("num_gpus"),
        "memory": options.get("memory"),
        **(options.get("resources") or {}),
    }
    return {name: float(amount) for name, amount in wanted.items() if amount}


def _some_node_offers(demand: Mapping[str, float]) -> bool:
    return any(
        node["Alive"]
        and all(node["Resources"].get(name, 0.0) >= amount for name, amount in demand.items())
        for node in ray.nodes()
    )
