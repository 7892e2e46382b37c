"""Remembers one-time values (a client token's nonce, a hop signature) until they expire, in bounded memory, so
a second use within their life is refused."""

from __future__ import annotations

import heapq


class ReplayCacheFull(Exception):
    """``capacity`` unexpired values are held: the caller refuses the request (fails closed)."""


class ReplayCache:
    """A set of values, each forgotten at its expiry; at most ``capacity`` held.

    Only values whose MAC verified are added, so only a key holder can fill it;
    a full cache refuses rather than forgets, because forgetting would let a replay in.
    Times are unix seconds, passed in.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, value: bytes, expires_at: float, now: float) -> bool:
        """True if ``value`` is new (it is now held until ``expires_at``), False if it was seen and has
        not expired. Raises ReplayCacheFull if ``capacity`` unexpired values are held."""
        while self._heap and self._heap[0][0] <= now:
            del self._expiry[heapq.heappop(self._heap)[1]]  # one heap entry per held value
        if value in self._expiry:
            return False
        if len(self._expiry) >= self.capacity:
            raise ReplayCacheFull(f"{self.capacity} one-time values are held")
        self._expiry[value] = expires_at
        heapq.heappush(self._heap, (expires_at, value))
        return True
