"""A reading task's rows travel back in chunks, so that neither its worker nor the
driver ever holds a whole period.

The worker runs its query on Polars' streaming engine and sends the rows as they come, in
chunks of about :data:`CHUNK_BYTES`, from a Ray streaming generator. Ray pauses the
generator while :data:`UNREAD_CHUNKS` of its chunks wait unread (back-pressure), and the
driver reads only the earliest period's: with ``max_concurrency`` tasks in flight, at most
``max_concurrency * UNREAD_CHUNKS`` chunks wait in the object store.

Ray would retry a generator by replaying it and dropping the objects already taken,
which is right only if the replay gives the same rows in the same order; a database
gives no order without ORDER BY. So the driver retries a reading task itself
(:class:`Handed`): the retry's first rows must be the very rows already handed on
(compared by a fingerprint of the multiset), and only the rows after them go on.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from piot_dagster.errors import ReplayMismatch

__all__ = ["CHUNK_BYTES", "UNREAD_CHUNKS", "Handed", "ReplayMismatch", "chunks", "plain_rows"]

# Large enough that a chunk's fixed cost (an object in Ray's store, a decode: about a
# millisecond) is small against its rows; small enough that the chunks a streaming task
# holds stay far below a 1 GiB node's cap, and that the object-store pages a driver maps
# reading them stay small (16 MiB chunks: 133 MB over a year of 12M rows; 8 MiB: 104 MB).
CHUNK_BYTES = 8 * 2**20
UNREAD_CHUNKS = 2


def plain_rows(schema: pl.Schema) -> int:
    """How many rows of ``schema`` a plain task sends in one piece: about a chunk's worth,
    counting a string, binary or nested value as 32 bytes (its view and some more), and
    between 10,000 and 1,000,000 rows."""
    fixed = pl.DataFrame(schema=schema).clear(1024).estimated_size() / 1024
    varied = 32 * sum(
        not (dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean)
        for dtype in schema.dtypes()
    )
    return int(min(1_000_000, max(10_000, CHUNK_BYTES // max(1.0, fixed + varied))))


def chunks(query: pl.LazyFrame) -> Iterator[tuple[pl.DataFrame, bool]]:
    """``query``'s rows, run on the streaming engine, in frames of about
    :data:`CHUNK_BYTES`, each with whether it is the last; at least one frame (an empty
    one if there are no rows). A full frame goes once the next batch has come, which
    tells that it is not the last.

    Read it to the end: Polars 2.2 cannot stop a query whose batches are left unread,
    which keeps its sources open (a database its cursor, and the cursor's locks) for as
    long as the process lives.
    """
    held: list[pl.DataFrame] = []
    size = 0
    for batch in query.collect_batches(engine="streaming"):
        for piece in _pieces(batch):
            if size >= CHUNK_BYTES:
                yield pl.concat(held, rechunk=False), False
                held, size = [], 0
            held.append(piece)
            size += piece.estimated_size()
    if not held:
        held.append(pl.DataFrame(schema=query.collect_schema()))
    yield pl.concat(held, rechunk=False), True


def _pieces(batch: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """``batch`` in zero-copy slices of at most about :data:`CHUNK_BYTES`: the streaming
    engine passes an in-memory frame that no operation splits as one batch."""
    size = batch.estimated_size()
    if size <= CHUNK_BYTES:
        yield batch
        return
    yield from batch.iter_slices(max(1, batch.height * CHUNK_BYTES // size))


class Handed:
    """The rows of one period handed on so far: how many, and a fingerprint of them (the
    wrapping sum of their row hashes, which ignores their order, as a result may)."""

    def __init__(self) -> None:
        self.rows = 0
        self._print = 0
        self._skip = 0
        self._seen = 0

    def retry(self) -> None:
        """A new attempt starts: its first :attr:`rows` rows replay those handed on."""
        self._skip, self._seen = self.rows, 0

    def onward(self, frame: pl.DataFrame, last: bool) -> pl.DataFrame:
        """What of an attempt's chunk ``frame`` goes on: all of it, or, in a replay, the
        rows after those already handed on, once they proved to be the same rows."""
        if self._skip:
            replayed = frame.head(self._skip)
            self._skip -= replayed.height
            self._seen = _plus(self._seen, _fingerprint(replayed))
            frame = frame.slice(replayed.height)
            if (self._skip == 0 and self._seen != self._print) or (self._skip and last):
                raise ReplayMismatch(
                    f"its failed attempt had handed on {self.rows} rows, and its retry's "
                    f"first rows are not the same ones (the source gives its rows in no "
                    f"fixed order), so it cannot go on without losing or repeating rows; "
                    f"give the query an order within each period (ORDER BY in scan_db's "
                    f"SQL, or a sort before execute_on_ray), or run it again"
                )
        self.rows += frame.height
        if not last:  # after the last chunk nothing is retried
            self._print = _plus(self._print, _fingerprint(frame))
        return frame


def _fingerprint(frame: pl.DataFrame) -> int:
    if frame.width == 0 or frame.height == 0:
        return 0
    total = frame.hash_rows(seed=0x5EED).sum()  # UInt64: the sum wraps
    return int(total) if total is not None else 0


def _plus(a: int, b: int) -> int:
    return (a + b) % 2**64
