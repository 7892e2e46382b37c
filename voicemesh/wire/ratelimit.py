"""A token bucket (sans-IO): the one rate limiter of the edge's admission and the transceiver's event
channels. Time comes in as an argument (seconds on any monotonic clock)."""

from __future__ import annotations


class TokenBucket:
    """A token bucket: ``rate`` tokens per second refill it up to ``burst``; each request takes one.

    Starts full at time ``now`` (seconds).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token at ``now``: 0.0 if it was there, else the seconds until one will be (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = max(self.updated, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
