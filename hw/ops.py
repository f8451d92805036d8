"""Operation descriptors: what is asked of a chip or link, with no notion of how long it takes.

Each op validates its own arguments so a bad shape fails where it is built, with the field
named. ``flops`` and ``min_bytes`` are the op's intrinsic work: what the roofline prices.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.errors import HardwareError
from hw.specs import dtype_bytes

ACT_BYTES = 2.0  # activations, queries and partial outputs travel and live in bf16
STAT_BYTES = 4.0  # log-sum-exp statistics and split-KV partials are fp32


def _positive_int(op: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HardwareError(f"{op}: {name}: expected a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n]; B is the weight read from HBM, A and C activations."""

    m: int
    n: int
    k: int
    dtype: str = "bf16"

    kind = "gemm"

    def __post_init__(self) -> None:
        for f in ("m", "n", "k"):
            _positive_int("gemm", f, getattr(self, f))
        dtype_bytes(self.dtype, "gemm: dtype")

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    @property
    def min_bytes(self) -> float:
        b = dtype_bytes(self.dtype)
        return self.k * self.n * b + self.m * self.k * ACT_BYTES + self.m * self.n * ACT_BYTES


@dataclass(frozen=True)
class _AttentionShape:
    q_heads: int
    kv_heads: int
    head_dim: int
    dtype: str

    def _check_heads(self, op: str) -> None:
        for f in ("q_heads", "kv_heads", "head_dim"):
            _positive_int(op, f, getattr(self, f))
        if self.q_heads % self.kv_heads:
            raise HardwareError(
                f"{op}: q_heads: expected a multiple of kv_heads={self.kv_heads}, "
                f"got {self.q_heads}"
            )
        dtype_bytes(self.dtype, f"{op}: dtype")

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA group size)."""
        return self.q_heads // self.kv_heads

    @property
    def kv_bytes_per_token(self) -> float:
        return 2.0 * self.kv_heads * self.head_dim * dtype_bytes(self.dtype)


@dataclass(frozen=True)
class DecodeAttention(_AttentionShape):
    """Decode attention of ``batch`` requests, each over its own private KV of ``kv_tokens``."""

    batch: int = 1
    kv_tokens: int = 1

    kind = "decode-attention"

    def __post_init__(self) -> None:
        _positive_int("decode-attention", "batch", self.batch)
        _positive_int("decode-attention", "kv_tokens", self.kv_tokens)
        self._check_heads("decode-attention")

    @property
    def flops(self) -> float:
        return 4.0 * self.batch * self.q_heads * self.kv_tokens * self.head_dim

    @property
    def min_bytes(self) -> float:
        kv = self.batch * self.kv_tokens * self.kv_bytes_per_token
        io = 2 * self.batch * self.q_heads * self.head_dim * ACT_BYTES
        return kv + io


@dataclass(frozen=True)
class SharedAttention(_AttentionShape):
    """``batch`` requests' queries attending to ONE shared KV of ``kv_tokens`` (read once).

    Returns partial outputs and log-sum-exp per request and head, for the merge.
    """

    batch: int = 1
    kv_tokens: int = 1

    kind = "shared-attention"

    def __post_init__(self) -> None:
        _positive_int("shared-attention", "batch", self.batch)
        _positive_int("shared-attention", "kv_tokens", self.kv_tokens)
        self._check_heads("shared-attention")

    @property
    def flops(self) -> float:
        return 4.0 * self.batch * self.q_heads * self.kv_tokens * self.head_dim

    @property
    def min_bytes(self) -> float:
        kv = self.kv_tokens * self.kv_bytes_per_token
        io = self.batch * self.q_heads * (2 * self.head_dim * ACT_BYTES + STAT_BYTES)
        return kv + io


@dataclass(frozen=True)
class GroupedSharedAttention(_AttentionShape):
    """One launch over many routed chunks of a shared KV, MoE-style (grouped GEMM).

    ``chunk_batches`` is a histogram: pairs (queries, chunks) meaning ``chunks`` chunks of
    ``chunk_tokens`` tokens were each selected by ``queries`` requests. Each chunk is read
    once for all its queries. ``requests`` is how many distinct requests own those queries
    (each gets one merged partial back).
    """

    chunk_batches: tuple[tuple[int, int], ...] = ()
    chunk_tokens: int = 1
    requests: int = 1

    kind = "grouped-shared-attention"

    def __post_init__(self) -> None:
        name = "grouped-shared-attention"
        _positive_int(name, "chunk_tokens", self.chunk_tokens)
        _positive_int(name, "requests", self.requests)
        if not self.chunk_batches:
            raise HardwareError(f"{name}: chunk_batches: expected at least one (queries, chunks)")
        for pair in self.chunk_batches:
            if len(pair) != 2:
                raise HardwareError(f"{name}: chunk_batches: expected (queries, chunks) pairs")
            _positive_int(name, "chunk_batches queries", pair[0])
            _positive_int(name, "chunk_batches chunks", pair[1])
        self._check_heads(name)

    @property
    def chunks(self) -> int:
        return sum(n for _, n in self.chunk_batches)

    @property
    def query_chunk_pairs(self) -> int:
        return sum(b * n for b, n in self.chunk_batches)

    @property
    def flops(self) -> float:
        return 4.0 * self.query_chunk_pairs * self.group * self.kv_heads * self.chunk_tokens * (
            self.head_dim
        )

    @property
    def min_bytes(self) -> float:
        kv = self.chunks * self.chunk_tokens * self.kv_bytes_per_token
        io = self.requests * self.q_heads * (2 * self.head_dim * ACT_BYTES + STAT_BYTES)
        return kv + io


@dataclass(frozen=True)
class LseMerge:
    """Log-sum-exp merge of ``partials`` partial outputs per (request, query head).

    ``partial_dtype`` is how the partial outputs are stored (bf16 by default; the project's
    Triton kernels write fp32 partials).
    """

    batch: int
    q_heads: int
    head_dim: int
    partials: int = 2
    partial_dtype: str = "bf16"

    kind = "merge"

    def __post_init__(self) -> None:
        for f in ("batch", "q_heads", "head_dim", "partials"):
            _positive_int("merge", f, getattr(self, f))
        dtype_bytes(self.partial_dtype, "merge: partial_dtype")

    @property
    def rows(self) -> int:
        return self.batch * self.q_heads

    @property
    def flops(self) -> float:
        return 4.0 * self.rows * self.partials * self.head_dim

    @property
    def min_bytes(self) -> float:
        read = self.rows * self.partials * (self.head_dim * dtype_bytes(self.partial_dtype) + STAT_BYTES)
        return read + self.rows * self.head_dim * ACT_BYTES


@dataclass(frozen=True)
class Copy:
    """A device-to-device copy of ``nbytes`` (read once, written once): the streaming ceiling."""

    nbytes: int

    kind = "copy"

    def __post_init__(self) -> None:
        _positive_int("copy", "nbytes", self.nbytes)

    flops = 0.0

    @property
    def min_bytes(self) -> float:
        return 2.0 * self.nbytes


@dataclass(frozen=True)
class Transfer:
    """``nbytes`` sent over one link (serialisation + latency)."""

    nbytes: int

    kind = "transfer"

    def __post_init__(self) -> None:
        if isinstance(self.nbytes, bool) or not isinstance(self.nbytes, int) or self.nbytes < 0:
            raise HardwareError(f"transfer: bytes: expected a whole number >= 0, got {self.nbytes!r}")

    flops = 0.0

    @property
    def min_bytes(self) -> float:
        return float(self.nbytes)


ComputeOp = Gemm | DecodeAttention | SharedAttention | GroupedSharedAttention | LseMerge | Copy
Op = ComputeOp | Transfer
