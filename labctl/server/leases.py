"""The device lease: which client may change the bench, and until when.

One client at a time holds the lease. Every request from the holder extends it by
its time-to-live, so a client that keeps polling a job keeps its lease, and a client
that dies loses it after ``ttl_s`` without anyone having to clean up.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

from labctl.protocol import BAD_ARGS, LEASE_HELD, LEASE_REQUIRED, WireError

DEFAULT_TTL_S = 30.0
MAX_TTL_S = 3600.0


@dataclass
class Lease:
    lease_id: str
    holder: str
    ttl_s: float
    acquired: float  # wall clock, seconds since the epoch
    expires: float  # monotonic clock

    def describe(self, now: float) -> dict:
        return {
            "lease_id": self.lease_id,
            "holder": self.holder,
            "ttl_s": self.ttl_s,
            "acquired_unix": self.acquired,
            "expires_in_s": round(max(0.0, self.expires - now), 3),
        }


class LeaseTable:
    """The single lease of a bench server (not thread-safe: used by the server loop only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lease: Lease | None = None

    def current(self) -> Lease | None:
        if self._lease is not None and self._clock() >= self._lease.expires:
            self._lease = None
        return self._lease

    def describe(self) -> dict | None:
        lease = self.current()
        return None if lease is None else lease.describe(self._clock())

    @staticmethod
    def _ttl(ttl_s: float) -> float:
        if not isinstance(ttl_s, (int, float)) or isinstance(ttl_s, bool) or not 0 < ttl_s <= MAX_TTL_S:
            raise WireError(BAD_ARGS, f"ttl_s must be a number of seconds in (0, {MAX_TTL_S:g}], got {ttl_s!r:.20}")
        return float(ttl_s)

    def acquire(self, who: str, ttl_s: float = DEFAULT_TTL_S, force: bool = False) -> Lease:
        ttl = self._ttl(ttl_s)
        lease = self.current()
        if lease is not None and lease.holder != who and not force:
            raise WireError(
                LEASE_HELD,
                f"the bench lease is held by {lease.holder} for another {lease.expires - self._clock():.1f} s "
                "(wait, or acquire with force to take it over)",
            )
        if lease is not None and lease.holder == who:
            lease.ttl_s = ttl
            lease.expires = self._clock() + ttl
            return lease
        self._lease = Lease(uuid.uuid4().hex, who, ttl, time.time(), self._clock() + ttl)
        return self._lease

    def renew(self, who: str, ttl_s: float | None = None) -> Lease:
        lease = self.require(who)
        if ttl_s is not None:
            lease.ttl_s = self._ttl(ttl_s)
        lease.expires = self._clock() + lease.ttl_s
        return lease

    def release(self, who: str) -> bool:
        """Drop the caller's lease; False if the caller held none."""
        lease = self.current()
        if lease is None or lease.holder != who:
            return False
        self._lease = None
        return True

    def touch(self, who: str) -> None:
        lease = self.current()
        if lease is not None and lease.holder == who:
            lease.expires = self._clock() + lease.ttl_s

    def require(self, who: str) -> Lease:
        lease = self.current()
        if lease is None:
            raise WireError(LEASE_REQUIRED, "this operation changes the bench: acquire the lease first (lease.acquire)")
        if lease.holder != who:
            raise WireError(LEASE_HELD, f"the bench lease is held by {lease.holder}; only the holder may change devices")
        return lease
