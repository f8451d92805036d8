"""A dedicated prefill node (``batching.prefill_placement: dedicated``, Splitwise /
DistServe style): it prefills prompts in chunks (its own step loop, with no decode batch),
sends each prompt's corpus attention to the shared nodes like a unique node does, makes the
first token, and then moves the prompt's new KV over the fabric to the unique node the
driver picks; that node admits the request with its context resident and decodes from
the second token."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.engine.nodes.base import NodeStats
from sim.engine.nodes.unique import ID, UniqueNode


class PrefillNode(UniqueNode):
    """The unique node's step loop with an empty decode batch: admission bounded by its
    HBM, prompts prefilled FIFO in chunks of ``prefill_chunk_tokens``; a finished prompt
    frees its KV here once its transfer has left."""

    kind = "prefill"

    def __init__(self, *args, kv_bytes_per_token: float,  # noqa: ANN002
                 **kwargs) -> None:  # noqa: ANN003
        super().__init__(*args, **kwargs)
        self.kv_bytes_per_token = kv_bytes_per_token
        # set by whoever wires the run: (request id, prefill node) -> KV on its way out
        self.hand_over: Callable[[int, PrefillNode, int], None] = lambda _rid, _node, _b: None
        self.handed_over = 0
        self.kv_bytes_sent = 0

    def _join(self, rows: np.ndarray, fresh: int = 0) -> None:
        """Prompts that finished here: their first token is made; move their new KV to a
        unique node instead of decoding."""
        log = self.log
        for rid in rows[:, ID].tolist():
            nbytes = int(np.ceil(int(log.prefill_tokens[rid]) * self.kv_bytes_per_token))
            self.kv_used -= int(log.kv_bytes[rid])
            self.handed_over += 1
            self.kv_bytes_sent += nbytes
            self.hand_over(rid, self, nbytes)

    def stats(self, t_end: int) -> NodeStats:
        return NodeStats(self.name, self.busy_within(t_end), {
            "steps": self.steps, "prefill_tokens": self.prefill_tokens_done,
            "handed_over": self.handed_over, "kv_bytes_sent": self.kv_bytes_sent,
            "peak_kv_gib": self.max_kv_used / 2**30})


__all__ = ["PrefillNode"]
