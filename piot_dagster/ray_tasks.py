"""The Ray side: one task per period, at most ``max_concurrency`` in flight.

The wrapped plan goes into the object store at most once per collect: the reference is
kept while the same Ray session lives, so collecting a query again does not pickle it
again (pickling a plan that holds a 2M-row frame takes about a second). Tasks receive the
reference nested in a list, which Ray does not resolve, so each worker process
deserialises a plan once and reuses it for every later period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import polars as pl
import ray
import ray.exceptions

from piot_dagster.errors import PeriodExecutionError, RayNotInitializedError
from piot_dagster.parquet_files import ParquetTarget, WrittenFile, write_atomically
from piot_dagster.periods import Period
from piot_dagster.scan import captured_sql
from piot_dagster.transport import ReturnAs, decode, encode

__all__ = [
    "DEFAULT_REMOTE_OPTIONS",
    "PeriodResult",
    "PeriodTask",
    "ShippedPlan",
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
# How long a stopped fan-out waits for its cancelled tasks' workers to be killed.
_CANCEL_WAIT_S = 10


@dataclass(frozen=True)
class PeriodTask:
    """What one period's task runs: ``plan.filter(where).head(head).select(columns)``,
    shipped back as ``return_as``, or written to ``write`` (then only its stats return)."""

    where: pl.Expr
    head: int | None
    columns: list[str] | None
    return_as: ReturnAs
    write: ParquetTarget | None = None


@dataclass(frozen=True)
class PeriodResult:
    """A finished period: its frame, or the stats of the file it wrote."""

    period: Period
    frame: pl.DataFrame | None
    written: WrittenFile | None
    seconds: float

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
                self._ref, self._session = ray.put(self.plan), session
            return self._ref

    def __getstate__(self) -> dict[str, Any]:
        return {"plan": self.plan}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["plan"])  # type: ignore[misc]


def _cached_plan(ref: ray.ObjectRef) -> pl.LazyFrame:
    key = ref.hex()
    plan = _plans.get(key)
    if plan is None:
        plan = ray.get(ref)
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    else:
        _plans.move_to_end(key)
    return plan


@ray.remote
def _run_period(plan_box: list[ray.ObjectRef], task: PeriodTask) -> tuple[Any, float]:
    started = time.perf_counter()
    query = _cached_plan(plan_box[0]).filter(task.where)
    if task.head is not None:
        query = query.head(task.head)
    if task.columns is not None:
        query = query.select(task.columns)
    if task.write is not None:
        with captured_sql() as statements:
            frame = query.collect()
        written = write_atomically(frame, task.write, statements)
        return written, time.perf_counter() - started
    return encode(query.collect(), task.return_as), time.perf_counter() - started


def require_ray() -> None:
    if not ray.is_initialized():
        raise RayNotInitializedError(
            "Ray is not initialised: call ray.init() (or ray.init(address=...) to join a "
            "cluster) before execute_on_ray and keep it running until the query is collected"
        )


def check_remote_options(remote_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Ray task options: our defaults overridden by the caller's, validated by Ray."""
    if remote_options is None:
        remote_options = {}
    if not isinstance(remote_options, Mapping):
        raise TypeError(
            f"remote_options must be a mapping of Ray task options such as "
            f"{{'num_cpus': 2}}, not {type(remote_options).__name__}"
        )
    options = {**DEFAULT_REMOTE_OPTIONS, **remote_options}
    try:
        _run_period.options(**options)
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
) -> Iterator[PeriodResult]:
    """Run every period's task, yielding its result in period order, each logged.

    A result is yielded as soon as it and all earlier ones are ready. At most
    ``max_concurrency`` tasks are submitted and not yet consumed, which also bounds the
    results the driver holds. Closing the iterator early submits nothing more; reading
    tasks already in flight finish and their results are dropped, writing ones are
    cancelled. A failed task raises :class:`PeriodExecutionError` at once, or, with
    ``keep_going`` (tasks that write their own files), after every other period has run.
    Any exit but the end or an early close (a failure, Ctrl-C, SIGTERM, a terminated
    Dagster run) cancels the tasks in flight and removes their temporary files first.
    """
    require_ray()
    remote = _run_period.options(**options)
    plan_box = [plan.ref()]
    queue = iter(work)
    pending: deque[tuple[Period, PeriodTask, ray.ObjectRef]] = deque()

    def submit(period: Period, task: PeriodTask) -> None:
        pending.append((period, task, remote.remote(plan_box, task)))

    failures: list[tuple[Period, ray.exceptions.RayError]] = []
    try:
        for item in islice(queue, max_concurrency):
            submit(*item)
        while pending:
            period, task, ref = pending[0]
            try:
                payload, seconds = ray.get(ref)
            except ray.exceptions.RayError as exc:
                payload = None
                failures.append((period, exc))
                if task.write is not None:
                    # Every attempt has ended; one killed mid-write left its temporary file.
                    task.write.temporary.unlink(missing_ok=True)
            # Popped only now, so a task whose result an interrupt cut short is cancelled.
            pending.popleft()
            if failures and not keep_going:
                raise _failure(column, failures) from failures[0][1]
            # The next task goes in only once this one is done: max_concurrency in flight.
            following = next(queue, None)
            if following is not None:
                submit(*following)
            if payload is None:
                continue
            result = (
                PeriodResult(period, None, payload, seconds)
                if task.write is not None
                else PeriodResult(period, decode(payload, task.return_as, schema), None, seconds)
            )
            logger.info(
                "piot_dagster: period %s of %r: %d rows in %.3f s",
                period.label,
                column,
                result.rows,
                seconds,
            )
            yield result
    except GeneratorExit:
        # The consumer stopped early (a head() met): nothing more is submitted and reading
        # tasks in flight may finish, which keeps their workers (and cached plans) alive.
        # Writing tasks are stopped, since their files would outlive the consumer.
        if any(task.write is not None for _, task, _ in pending):
            _cancel(pending, column)
        raise
    except BaseException:
        # A failed period, an interrupt (Ctrl-C, SIGTERM, a Dagster run terminated): stop
        # every task in flight before the caller sees the error.
        _cancel(pending, column)
        raise
    if failures:
        raise _failure(column, failures) from failures[0][1]


def _cancel(pending: deque[tuple[Period, PeriodTask, ray.ObjectRef]], column: str) -> None:
    """Cancel the tasks in flight, wait for them to end, and remove what the writing ones
    left behind.

    Cancellation is forced (the worker process is killed): in Ray 2.60 a soft cancel
    racing a task's completion aborts the driver ("Tried to complete task that was not
    pending", ray-project/ray#54846), and a forced one does not.
    """
    if not pending:
        return
    refs = [ref for _, _, ref in pending]
    for ref in refs:
        ray.cancel(ref, force=True)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_WAIT_S)
    for _, task, _ in pending:
        if task.write is not None:
            task.write.temporary.unlink(missing_ok=True)
    labels = [period.label for period, _, _ in pending]
    logger.warning(
        "piot_dagster: cancelled the Ray tasks of %d period(s) of %r: %s%s",
        len(labels),
        column,
        ", ".join(labels[:5]),
        f" and {len(labels) - 5} more" if len(labels) > 5 else "",
    )
    if running:
        logger.warning(
            "piot_dagster: %d cancelled task(s) of %r had not ended after %d s",
            len(running),
            column,
            _CANCEL_WAIT_S,
        )


def _failure(
    column: str, failures: list[tuple[Period, ray.exceptions.RayError]]
) -> PeriodExecutionError:
    which = "; ".join(f"period {period.label}: {_cause(exc)}" for period, exc in failures)
    return PeriodExecutionError(
        f"the Ray task of {len(failures)} period(s) of {column!r} failed: {which}",
        period=failures[0][0].label,
        periods=tuple(period.label for period, _ in failures),
    )


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
