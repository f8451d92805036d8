"""The unit of work the simulator serves: one request, as the workload describes it, and
a run's requests as columns (:class:`RequestTable`)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request: when it arrives and how much context and output it has.

    ``corpus`` names the shared corpus the request reads (0 when the workload has one);
    ``shared_tokens`` is how many of that corpus's tokens it reads, or None for the whole
    corpus as configured. Of its ``unique_tokens`` (its own context), ``prefill_tokens``
    are new prompt tokens to prefill and the rest is already resident (cached history or
    system prompt); None: the workload's ``prefill_tokens`` law decides (default: all new).
    Times are integer nanoseconds from the start of the run.
    """

    id: int
    arrival_ns: int
    unique_tokens: int
    output_tokens: int
    corpus: int = 0
    shared_tokens: int | None = None
    prefill_tokens: int | None = None


_NONE = -1  # the sentinel for None in RequestTable's optional columns
_ITER_BLOCK = 4096  # rows converted to Python at a time when iterating


class RequestTable(Sequence[RequestSpec]):
    """A run's requests as numpy columns (int64, read-only): a sequence of
    :class:`RequestSpec` that holds ~32-48 bytes per request instead of a Python object
    each (~190 bytes). Indexing gives a ``RequestSpec`` (made on the fly), slicing a
    ``RequestTable`` (views), iterating yields ``RequestSpec`` in order. It compares equal
    to any sequence of the same ``RequestSpec``. ``shared_tokens``/``prefill_tokens`` are
    None when no request sets them, else a column with -1 for None; ``ids`` is None when
    the ids are 0..n-1 (every plan the workloads make)."""

    __slots__ = ("arrival_ns", "corpus", "ids", "output_tokens", "prefill_tokens",
                 "shared_tokens", "unique_tokens")

    def __init__(self, arrival_ns: Any, unique_tokens: Any, output_tokens: Any,
                 corpus: Any = None, shared_tokens: Any = None, prefill_tokens: Any = None,
                 ids: Any = None) -> None:
        arr = _column(arrival_ns, "arrival_ns")
        n = len(arr)

        def col(values: Any, name: str, *, fill: int | None = None) -> np.ndarray | None:
            if values is None:
                return None if fill is None else _readonly(np.full(n, fill, dtype=np.int64))
            c = _column(values, name)
            if len(c) != n:
                raise ValueError(f"RequestTable: column {name} has {len(c)} values; "
                                 f"arrival_ns has {n}")
            return c

        self.arrival_ns = arr
        self.unique_tokens = col(unique_tokens, "unique_tokens")
        self.output_tokens = col(output_tokens, "output_tokens")
        self.corpus = col(corpus, "corpus", fill=0)
        self.shared_tokens = col(shared_tokens, "shared_tokens")
        self.prefill_tokens = col(prefill_tokens, "prefill_tokens")
        ids_col = col(ids, "ids")
        if ids_col is not None and np.array_equal(ids_col, np.arange(n)):
            ids_col = None
        self.ids = ids_col

    # -- construction ------------------------------------------------------------------
    @classmethod
    def empty(cls) -> RequestTable:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z)

    @classmethod
    def of(cls, requests: Iterable[RequestSpec]) -> RequestTable:
        """``requests`` as a table (itself when it is one)."""
        if isinstance(requests, RequestTable):
            return requests
        specs = requests if isinstance(requests, (list, tuple)) else list(requests)
        if not specs:
            return cls.empty()
        ids, arr, uniq, out, corpus, shared, prefill = (list(c) for c in zip(*(
            (r.id, r.arrival_ns, r.unique_tokens, r.output_tokens, r.corpus, r.shared_tokens,
             r.prefill_tokens) for r in specs)))

        def opt(values: list) -> list | None:
            if all(v is None for v in values):
                return None
            if any(v is not None and v < 0 for v in values):
                raise ValueError("RequestTable: a negative shared_tokens or prefill_tokens")
            return [_NONE if v is None else v for v in values]

        return cls(arr, uniq, out, corpus, opt(shared), opt(prefill), ids)

    # -- the sequence ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.arrival_ns)

    def _spec(self, i: int) -> RequestSpec:
        s = None if self.shared_tokens is None else int(self.shared_tokens[i])
        p = None if self.prefill_tokens is None else int(self.prefill_tokens[i])
        return RequestSpec(i if self.ids is None else int(self.ids[i]), int(self.arrival_ns[i]),
                           int(self.unique_tokens[i]), int(self.output_tokens[i]),
                           int(self.corpus[i]), None if s == _NONE else s,
                           None if p == _NONE else p)

    @overload
    def __getitem__(self, i: int) -> RequestSpec: ...

    @overload
    def __getitem__(self, i: slice) -> RequestTable: ...

    def __getitem__(self, i: int | slice) -> RequestSpec | RequestTable:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            ids = self.ids[i] if self.ids is not None else (
                np.arange(start, stop, step, dtype=np.int64) if (start, step) != (0, 1) else None)
            return RequestTable(self.arrival_ns[i], self.unique_tokens[i], self.output_tokens[i],
                                self.corpus[i], _sliced(self.shared_tokens, i),
                                _sliced(self.prefill_tokens, i), ids)
        n = len(self)
        j = operator.index(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"request {i} out of range (the table has {n})")
        return self._spec(j)

    def __iter__(self) -> Iterator[RequestSpec]:
        n = len(self)
        for a in range(0, n, _ITER_BLOCK):
            b = min(n, a + _ITER_BLOCK)
            ids = range(a, b) if self.ids is None else self.ids[a:b].tolist()
            shared = (itertools.repeat(None) if self.shared_tokens is None
                      else [None if v == _NONE else v for v in self.shared_tokens[a:b].tolist()])
            prefill = (itertools.repeat(None) if self.prefill_tokens is None
                       else [None if v == _NONE else v for v in self.prefill_tokens[a:b].tolist()])
            yield from map(RequestSpec, ids, self.arrival_ns[a:b].tolist(),
                           self.unique_tokens[a:b].tolist(), self.output_tokens[a:b].tolist(),
                           self.corpus[a:b].tolist(), shared, prefill)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RequestTable):
            n = len(self)
            return n == len(other) and all(
                _same(getattr(self, k), getattr(other, k),
                      np.arange(n) if k == "ids" else np.full(n, _NONE))
                for k in self.__slots__)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((len(self),) + tuple(
            None if (c := getattr(self, k)) is None else c.tobytes() for k in self.__slots__))

    def __repr__(self) -> str:
        return f"RequestTable({len(self)} requests)"

    def with_prefill_tokens(self, prefill_tokens: np.ndarray) -> RequestTable:
        """The same requests with this ``prefill_tokens`` column (-1: None)."""
        return RequestTable(self.arrival_ns, self.unique_tokens, self.output_tokens, self.corpus,
                            self.shared_tokens, prefill_tokens, self.ids)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for k in self.__slots__ if (c := getattr(self, k)) is not None)


def _column(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"RequestTable: column {name}: expected one dimension, got {a.ndim}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"RequestTable: column {name}: expected integers, got {a.dtype}")
    return _readonly(a.astype(np.int64, copy=False))


def _readonly(a: np.ndarray) -> np.ndarray:
    """``a`` read-only: a frozen copy when it is writeable (the caller's array stays as it
    is), itself when it is read-only already (a view of another table's column)."""
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


def _sliced(c: np.ndarray | None, i: slice) -> np.ndarray | None:
    if c is None:
        return None
    s = c[i]
    return None if bool((s == _NONE).all()) else s


def _same(a: np.ndarray | None, b: np.ndarray | None, default: np.ndarray) -> bool:
    """Two optional columns hold the same values (None: ``default``)."""
    if a is None and b is None:
        return True
    return bool(np.array_equal(a if a is not None else default,
                               b if b is not None else default))


__all__ = ["RequestSpec", "RequestTable"]
