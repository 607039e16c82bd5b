"""Translate a Polars predicate into a SQL WHERE clause, soundly.

Soundness rule: the SQL filter must be *implied* by the Polars predicate, so the database
returns a superset of the rows and Polars, re-applying the full predicate, keeps exactly
the right ones. Every translation therefore reports whether it is exact or only a
superset:

- AND keeps the terms it can translate (dropping a term only widens);
- OR needs every branch;
- NOT needs an exact operand (the negation of a superset is a subset);
- anything else (when/then, UDFs, casts, unknown functions) is never pushed.

Values become literals that sqlglot escapes for the dialect; identifiers are quoted.
What a dialect's collations, escapes and types allow is in
:class:`~piot_dagster.sql.dialects.Dialect`.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable

import polars as pl
import sqlglot
from sqlglot import exp

from piot_dagster.engine.plan_reader import Binary, Call, Column, Expr, Literal
from piot_dagster.sql.dialects import Dialect

__all__ = ["Pushdown", "embed", "false", "parse_query", "to_sql_filter", "wrap_query"]

Pushdown = tuple[exp.Expression, bool]  # (condition, exact)

_COMPARE: dict[str, Callable[..., exp.Expression]] = {
    "Eq": exp.EQ,
    "NotEq": exp.NEQ,
    "Lt": exp.LT,
    "LtEq": exp.LTE,
    "Gt": exp.GT,
    "GtEq": exp.GTE,
}
_FLIP = {"Lt": "Gt", "LtEq": "GtEq", "Gt": "Lt", "GtEq": "LtEq", "Eq": "Eq", "NotEq": "NotEq"}
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
_ONE_SECOND = dt.timedelta(seconds=1)
# LIKE's escape character: not a backslash, which MySQL's string literals may also take.
_LIKE_ESCAPE = "!"


def to_sql_filter(predicate: Expr, schema: pl.Schema, dialect: Dialect) -> Pushdown | None:
    """The WHERE condition for ``predicate`` and whether it is exact, or None."""
    return _Translator(schema, dialect).translate(predicate)


class _Translator:
    def __init__(self, schema: pl.Schema, dialect: Dialect) -> None:
        self.schema = schema
        self.dialect = dialect

    def translate(self, e: Expr) -> Pushdown | None:
        if isinstance(e, Binary):
            if e.op in ("And", "LogicalAnd"):
                return self.conjunction(e.left, e.right)
            if e.op in ("Or", "LogicalOr"):
                left, right = self.translate(e.left), self.translate(e.right)
                if left is None or right is None:
                    return None
                return exp.or_(left[0], right[0]), left[1] and right[1]
            if e.op in _COMPARE:
                if isinstance(e.left, Column) and isinstance(e.right, Literal):
                    return self.compare(e.left.name, e.op, e.right)
                if isinstance(e.right, Column) and isinstance(e.left, Literal):
                    return self.compare(e.right.name, _FLIP[e.op], e.left)
            return None
        if isinstance(e, Column):
            # A boolean column used as the predicate itself.
            if self.schema.get(e.name) == pl.Boolean and self.dialect.booleans:
                return _col(e.name), True
            return None
        if isinstance(e, Call):
            return self.call(e)
        if isinstance(e, Literal) and e.dtype == pl.Boolean and e.value is not True:
            # Polars folds a contradiction, such as a partition's window that the query's
            # own filter excludes, to false (or null): ask the database for no row, not all.
            return false(self.dialect), True
        return None

    def conjunction(self, left_e: Expr, right_e: Expr) -> Pushdown | None:
        left, right = self.translate(left_e), self.translate(right_e)
        if left is None or right is None:
            kept = left or right
            return None if kept is None else (kept[0], False)
        return exp.and_(left[0], right[0]), left[1] and right[1]

    def call(self, e: Call) -> Pushdown | None:
        if e.function == "Not":
            inner = self.translate(e.args[0])
            if inner is None or not inner[1]:
                return None
            # Parenthesized: under MySQL's HIGH_NOT_PRECEDENCE, NOT a = 1 is (NOT a) = 1.
            return exp.Not(this=exp.Paren(this=inner[0])), True
        if not e.args or not isinstance(e.args[0], Column) or e.args[0].name not in self.schema:
            return None
        name = e.args[0].name
        if e.function in ("IsNull", "IsNotNull"):
            is_null = exp.Is(this=_col(name), expression=exp.Null())
            return (is_null if e.function == "IsNull" else exp.not_(is_null)), True
        if e.function == "IsBetween":
            # Both comparisons, as a conjunction: a side that cannot be pushed leaves the
            # other as a (wider) bound. Polars 2.2 writes `dt.year() >= 2024` with the
            # dtype's last date as the upper end, which the IR view cannot show.
            closed = e.options[0]
            low = Binary("GtEq" if closed in ("both", "left") else "Gt", e.args[0], e.args[1])
            high = Binary("LtEq" if closed in ("both", "right") else "Lt", e.args[0], e.args[2])
            return self.conjunction(low, high)
        if e.function == "IsIn" and isinstance(e.args[1], Literal):
            return self.membership(name, e.args[1], nulls_equal=bool(e.options[0]))
        if e.function == "StartsWith" and isinstance(e.args[1], Literal):
            prefix = e.args[1].value
            if self.schema[name] != pl.String or not isinstance(prefix, str):
                return None
            escaped = "".join(
                _LIKE_ESCAPE + c if c in ("%", "_", _LIKE_ESCAPE) else c for c in prefix
            )
            pattern = self.string(escaped + "%")
            if pattern is None:
                return None
            like = exp.Escape(
                this=exp.Like(this=_col(name), expression=pattern),
                expression=exp.Literal.string(_LIKE_ESCAPE),
            )
            # Under a case- or accent-insensitive collation, LIKE matches more: a superset.
            return like, self.dialect.exact_strings
        return None

    def membership(self, name: str, values: Literal, *, nulls_equal: bool) -> Pushdown | None:
        """``is_in``, with Polars' null rules: a null input gives null, or, with
        ``nulls_equal``, whether the list holds a null (never null)."""
        if not isinstance(values.value, list) or not isinstance(values.dtype, pl.List | pl.Array):
            return None
        items = [v for v in values.value if v is not None]
        dtype = self.schema[name]
        inner = values.dtype.inner
        column = _col(name)
        if dtype.is_temporal() and self.dialect.temporal == "sqlite-text" and items:
            # Dates are text in SQLite: the hull, widened to whole days, is a sound superset.
            low = self.compare(name, "GtEq", Literal(min(items), inner))  # type: ignore[type-var]
            high = self.compare(name, "LtEq", Literal(max(items), inner))  # type: ignore[type-var]
            if low is None or high is None:
                return None
            condition: exp.Expression = exp.and_(low[0], high[0])
            exact = False
        else:
            literals = [self.literal(v, inner, dtype) for v in items]
            if any(lit is None for lit in literals):
                return None
            # An empty list: null for a null input, false otherwise, like Polars.
            condition = (
                exp.In(this=column, expressions=literals)
                if literals
                else exp.NEQ(this=column, expression=column.copy())
            )
            exact = dtype != pl.String or self.dialect.exact_strings
        is_null = exp.Is(this=column.copy(), expression=exp.Null())
        if nulls_equal and len(items) < len(values.value):
            condition = exp.or_(condition, is_null)
        elif nulls_equal:
            condition = exp.and_(exp.not_(is_null), condition)
        return condition, exact

    def compare(self, name: str, op: str, literal: Literal) -> Pushdown | None:
        dtype = self.schema.get(name)
        if dtype is None or literal.value is None:
            return None
        if dtype.is_temporal():
            return self.compare_temporal(name, op, literal, dtype)
        if dtype == pl.String and op not in ("Eq", "NotEq"):
            return None  # string order depends on the database's collation
        if dtype == pl.String and op == "NotEq" and not self.dialect.exact_strings:
            # A case-insensitive or PAD SPACE collation makes 'A' <> 'a' and 'A ' <> 'A'
            # false: a subset, so never pushed.
            return None
        sql_value = self.literal(literal.value, literal.dtype, dtype)
        if sql_value is None:
            return None
        exact = dtype != pl.String or self.dialect.exact_strings
        return _COMPARE[op](this=_col(name), expression=sql_value), exact

    def compare_temporal(
        self, name: str, op: str, literal: Literal, dtype: pl.DataType
    ) -> Pushdown | None:
        value = literal.value
        if op == "NotEq" or not _same_temporal_kind(value, literal.dtype, dtype):
            return None
        if self.dialect.temporal == "none":
            return None
        column = _col(name)
        if self.dialect.temporal == "sqlite-text":
            return _sqlite_text_bound(column, op, literal), False
        # The true literal lies in [low, high]: the IR shows nanosecond literals truncated
        # to microseconds, and a column that drops fractions of a second compares with
        # the literal's whole seconds. Past either, the bound is widened to [low, high].
        low = high = value
        if getattr(literal.dtype, "time_unit", None) == "ns":
            high = value + _ONE_MICROSECOND  # type: ignore[operator]
        if self.dialect.whole_seconds and isinstance(value, dt.datetime):
            low = value.replace(microsecond=0)
            if high.microsecond:  # type: ignore[union-attr]
                high = high.replace(microsecond=0) + _ONE_SECOND  # type: ignore[union-attr]
        if low == high == value:
            return _COMPARE[op](this=column, expression=self.temporal(value)), True
        lower = exp.GTE(this=column, expression=self.temporal(low))
        upper = exp.LTE(this=column.copy(), expression=self.temporal(high))
        return _bounded(op, lower, upper), False

    def temporal(self, value: object) -> exp.Expression:
        """A date or datetime literal, written so the database reads it as that value
        whatever its session's formats (Oracle's casts follow NLS_DATE_FORMAT)."""
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
            if self.dialect.utc_text:
                value = value.replace(tzinfo=None)
        if self.dialect.temporal == "oracle":
            return _oracle_temporal(value)
        if isinstance(value, dt.datetime):
            text = exp.Literal.string(value.isoformat(sep=" "))
            zoned = value.tzinfo is not None
            return exp.cast(text, exp.DataType.build("TIMESTAMPTZ" if zoned else "TIMESTAMP"))
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")  # type: ignore[attr-defined]

    def string(self, value: str) -> exp.Expression | None:
        """``value`` as a string literal, or None where the dialect cannot be trusted to
        read it back as written (a backslash under MySQL's changeable escaping, Oracle's
        empty string, a generic database)."""
        if not self.dialect.strings:
            return None
        if self.dialect.empty_string_is_null and not value:
            return None
        if self.dialect.national_strings and not value.isascii():
            # SQL Server reads a plain literal in the database's code page ('Ω' as '?').
            return exp.National(this=value)
        # sqlglot writes a backslash, a newline, a tab... with a backslash escape, which
        # MySQL's NO_BACKSLASH_ESCAPES would read as written.
        if self.dialect.backslash_escapes and ("\\" in value or not value.isprintable()):
            return None
        return exp.Literal.string(value)

    def literal(
        self, value: object, dtype: pl.DataType, column: pl.DataType
    ) -> exp.Expression | None:
        if column.is_temporal():
            if not _same_temporal_kind(value, dtype, column) or self.dialect.temporal in (
                "sqlite-text",
                "none",
            ):
                return None
            if getattr(dtype, "time_unit", None) == "ns":
                return None
            if self.dialect.whole_seconds and getattr(value, "microsecond", 0):
                return None
            return self.temporal(value)
        if column == pl.Boolean:
            if not self.dialect.booleans or not isinstance(value, bool):
                return None
            return exp.Boolean(this=value)
        if column == pl.String:
            return self.string(value) if isinstance(value, str) else None
        if column.is_integer() or column.is_float():
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return exp.Literal.number(repr(value))
        return None


def _sqlite_text_bound(column: exp.Column, op: str, literal: Literal) -> exp.Expression:
    """The tightest day-granular bound implied by ``column <op> literal`` on SQLite text.

    SQLite keeps dates and datetimes as text in more than one ISO-8601 spelling
    (``2024-01-05``, ``2024-01-05 10:00``, ``2024-01-05T10:00:00.5``). Whatever the
    spelling, the text is below ``'2024-01-05'`` exactly when its day is before the 5th,
    and below ``'2024-01-06'`` exactly when its day is the 5th or before; past the date,
    spellings do not order among themselves. So a bound is pushed as the day strings
    around it (sound, and served by an index), and a bound at midnight is the day string
    itself: ``ts < 2024-02-01 00:00`` is ``"ts" < '2024-02-01'``, which ``'2024-01-31T23:59'``
    passes and ``'2024-02-01'`` and ``'2024-02-01 00:00:00'`` do not.
    """
    value = literal.value
    day = value.date() if isinstance(value, dt.datetime) else value  # type: ignore[union-attr]
    # A nanosecond literal is shown truncated to microseconds, so it may lie after the
    # midnight it shows; a date is its own midnight.
    midnight = not isinstance(value, dt.datetime) or (
        value.time() == dt.time() and getattr(literal.dtype, "time_unit", None) != "ns"
    )
    this_day = exp.Literal.string(day.isoformat())  # type: ignore[union-attr]
    next_day = exp.Literal.string((day + dt.timedelta(days=1)).isoformat())  # type: ignore[operator]
    from_day, after_day = (
        exp.GTE(this=column, expression=this_day),
        exp.GTE(this=column, expression=next_day),
    )
    before_day, through_day = (
        exp.LT(this=column, expression=this_day),
        exp.LT(this=column, expression=next_day),
    )
    if op == "Lt":
        return before_day if midnight else through_day
    if op == "LtEq":
        return through_day
    if op == "Gt":
        # After a date is from the next day on; after a midnight may still be that day.
        return after_day if not isinstance(value, dt.datetime) else from_day
    if op == "GtEq":
        return from_day
    return exp.and_(from_day, through_day)


def _bounded(op: str, lower: exp.Expression, upper: exp.Expression) -> exp.Expression:
    """The widened form of ``op``: its lower bound, its upper bound, or both for Eq."""
    if op in ("Gt", "GtEq"):
        return lower
    if op in ("Lt", "LtEq"):
        return upper
    return exp.and_(lower, upper)


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _same_temporal_kind(value: object, dtype: pl.DataType, column: pl.DataType) -> bool:
    """Whether the literal compares with the column as the same kind of value."""
    if column == pl.Date:
        return (
            dtype == pl.Date and isinstance(value, dt.date) and not isinstance(value, dt.datetime)
        )
    if not isinstance(column, pl.Datetime) or not isinstance(value, dt.datetime):
        return False
    return (
        isinstance(dtype, pl.Datetime)
        and dtype.time_zone == column.time_zone
        and (value.tzinfo is None) == (column.time_zone is None)
    )


def _oracle_temporal(value: object) -> exp.Expression:
    """Oracle's literal for ``value``, its format spelled out."""
    if not isinstance(value, dt.datetime):
        return exp.Anonymous(
            this="TO_DATE",
            expressions=[exp.Literal.string(value.isoformat()), exp.Literal.string("YYYY-MM-DD")],  # type: ignore[attr-defined]
        )
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    function, form = "TO_TIMESTAMP", "YYYY-MM-DD HH24:MI:SS.FF6"
    if value.tzinfo is not None:
        function, form, text = "TO_TIMESTAMP_TZ", form + " TZH:TZM", text + " +00:00"
    return exp.Anonymous(
        this=function, expressions=[exp.Literal.string(text), exp.Literal.string(form)]
    )


def false(dialect: Dialect) -> exp.Expression:
    """A condition no row meets: ``FALSE``, or ``1 = 0`` where there are no booleans."""
    if dialect.booleans:
        return exp.false()
    return exp.EQ(this=exp.Literal.number(1), expression=exp.Literal.number(0))


def parse_query(query: str, dialect: Dialect) -> str:
    """The user's query, checked to be one SELECT statement in ``dialect``, without its
    closing semicolon. A syntax error names the query.

    The query is sent to the database as written (see :func:`embed`): parsing only checks
    it, since sqlglot's rewrite of a query may differ from what its author meant.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty SQL string, not {query!r}")
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect.sqlglot) if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise ValueError(f"query {query!r} is not valid {dialect.name} SQL: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ValueError(f"query {query!r} must be exactly one SELECT statement")
    return query.strip().rstrip(";").rstrip()


def embed(select: exp.Select, query: str, dialect: Dialect) -> str:
    """``select``, whose source is ``(<query>) AS q``, as SQL, with ``query`` as written.

    The query goes in on lines of its own, so a trailing ``--`` comment ends with it.
    """
    placeholder = f"piot_query_{uuid.uuid4().hex}"
    source = exp.alias_(exp.to_table(placeholder), "q", table=True)
    sql = select.from_(source).sql(dialect=dialect.sqlglot)
    return sql.replace(placeholder, f"(\n{query}\n)", 1)


def wrap_query(
    query: str,
    columns: list[str],
    where: exp.Expression | None,
    limit: int | None,
    dialect: Dialect,
) -> str:
    """``SELECT <columns> FROM (<query>) AS q [WHERE <where>] [LIMIT <limit>]``: the LIMIT
    only where the dialect has one (the reader stops after ``limit`` rows anyway)."""
    select = exp.select(*[_col(c) for c in columns])
    if where is not None:
        select = select.where(where)
    if limit is not None and dialect.limit:
        select = select.limit(limit)
    return embed(select, query, dialect)
