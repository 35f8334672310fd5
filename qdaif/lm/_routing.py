"""Which server a request goes to: least-loaded routing, health, failover, per-server counts.

The HTTP backend asks a :class:`Router` for a server before every attempt and tells it
how the attempt went. The router knows nothing about HTTP: it keeps, per server, the
requests in flight, whether the server is up, and counters that a run writes to
``metrics.jsonl``.

A server that fails with a connection error, a timeout or an HTTP 5xx is marked down
for ``down_for`` seconds (doubled at each further failure, up to ``down_max``); no
request is routed to it meanwhile while another server is up. When its time is over,
one request is let through to it as a probe: the caller runs a health check first
(:meth:`Router.acquire` says so), and the server is up again after a healthy answer
and a successful request. When every server is down, requests go to the one that comes
back first, so the caller's own retries and backoff decide when to give up.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["Router", "COUNTERS"]

#: Per-server counters: requests sent, failed attempts, requests moved to another
#: server after a failure, times marked down, health checks run.
COUNTERS = ("requests", "errors", "failovers", "downs", "health_checks")


@dataclasses.dataclass
class _State:
    in_flight: int = 0
    down_until: float = 0.0  # monotonic time; 0 = up
    down_for: float = 0.0  # length of the current down period (0 = up)
    probing: bool = False  # a probe request is on its way to this down server


class Router:
    """Picks a server for each attempt and tracks the servers' health.

    Args:
        servers: Names of the servers (their base URLs), in configuration order.
        max_in_flight: Requests in flight per server at most; ``None`` = no limit
            (the caller's own pool bounds the total).
        down_for: Seconds a failed server is left alone before it is probed again.
        down_max: Longest such period; it doubles at each failure until this.
        clock: Monotonic clock (tests pass a fake one).

    Raises:
        ValueError: No servers, or ``max_in_flight`` < 1.
    """

    def __init__(
        self,
        *,
        servers: Sequence[str],
        max_in_flight: int | None = None,
        down_for: float = 5.0,
        down_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("a router needs at least one server")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.servers = list(servers)
        self.max_in_flight = max_in_flight
        self.down_for = float(down_for)
        self.down_max = float(down_max)
        self._clock = clock
        self._state = [_State() for _ in self.servers]
        self._turn = 0
        self._cond = threading.Condition()
        self.counts: dict[str, collections.Counter[str]] = {s: collections.Counter() for s in self.servers}

    # ------------------------------------------------------------- routing
    def acquire(self, *, failed: int | None = None, prefer: int | None = None) -> tuple[int, bool]:
        """Reserves a slot on a server for one attempt.

        Args:
            failed: The server the previous attempt of this request failed on, if any:
                another server is preferred, and a move counts as a failover of it.
            prefer: A server to use if it is up, has room and is not ``failed`` (the
                one whose prompt cache holds this request's start); else the usual pick.

        Returns:
            ``(k, probe)``: the server's index, and whether it is a down server whose
            time is over, to be health-checked before the attempt (then call
            :meth:`probed`).
        """
        with self._cond:
            while True:
                k, probe = self._pick(failed, prefer)
                if k is not None:
                    break
                self._cond.wait(0.05)  # every usable server is at max_in_flight
            st = self._state[k]
            st.in_flight += 1
            st.probing = st.probing or probe
            if failed is not None and k != failed:
                self.counts[self.servers[failed]]["failovers"] += 1
            self.counts[self.servers[k]]["requests"] += 1
            return k, probe

    def _pick(self, failed: int | None, prefer: int | None = None) -> tuple[int | None, bool]:
        now, n = self._clock(), len(self.servers)
        self._turn += 1
        order = [(self._turn + i) % n for i in range(n)]  # rotating tie-break among equals
        full = (lambda k: self.max_in_flight is not None and self._state[k].in_flight >= self.max_in_flight)
        up = [k for k in order if self._state[k].down_for == 0 and not full(k)]
        due = [k for k in order if self._state[k].down_for > 0 and self._state[k].down_until <= now
               and not self._state[k].probing]
        if due:  # a down server whose time is over gets one probe
            return due[0], True
        if prefer is not None and prefer != failed and prefer in up:
            return prefer, False
        preferred = [k for k in up if k != failed] or up
        if preferred:
            return min(preferred, key=lambda k: self._state[k].in_flight), False
        if any(self._state[k].down_for == 0 for k in range(n)):
            return None, False  # servers are up but full: wait for a slot
        # Every server is down: the one that comes back first (the caller backs off).
        return min(order, key=lambda k: self._state[k].down_until), False

    def release(self, k: int, *, ok: bool, down: bool = False) -> None:
        """Ends an attempt on server ``k``.

        Args:
            k: The server.
            ok: The attempt got a usable answer (the server is up).
            down: The attempt failed in a way that says the server is down
                (connection error, timeout, 5xx).
        """
        with self._cond:
            st = self._state[k]
            st.in_flight -= 1
            was_probe, st.probing = st.probing, False
            if not ok:
                self.counts[self.servers[k]]["errors"] += 1
            if down:
                self._mark_down(k, extend=was_probe)
            elif ok:
                st.down_for, st.down_until, st.probing = 0.0, 0.0, False
            self._cond.notify_all()

    def probed(self, k: int, *, healthy: bool) -> None:
        """Records the health check of a probe.

        A healthy server gets the attempt (end it with :meth:`release`). An unhealthy
        one stays down longer and its slot is given back: call :meth:`acquire` again.
        """
        with self._cond:
            self.counts[self.servers[k]]["health_checks"] += 1
            if not healthy:
                st = self._state[k]
                st.in_flight -= 1
                self.counts[self.servers[k]]["requests"] -= 1
                self._mark_down(k, extend=True)
                self._cond.notify_all()

    def _mark_down(self, k: int, *, extend: bool) -> None:
        """Marks server ``k`` down; a failed probe (``extend``) doubles its period.

        Other requests that were in flight when the server went down fail too; they
        neither extend the period nor count as another down.
        """
        st = self._state[k]
        if st.down_for == 0:
            self.counts[self.servers[k]]["downs"] += 1
            st.down_for = self.down_for
        elif extend:
            st.down_for = min(self.down_max, 2 * st.down_for)
        else:
            return
        st.down_until = self._clock() + st.down_for
        st.probing = False

    # ----------------------------------------------------------- reporting
    def is_up(self, k: int) -> bool:
        """Whether server ``k`` is currently taken as up."""
        with self._cond:
            return self._state[k].down_for == 0

    def any_other_up(self, k: int) -> bool:
        """Whether some server other than ``k`` is up."""
        with self._cond:
            return any(st.down_for == 0 for j, st in enumerate(self._state) if j != k)

    def snapshot(self) -> dict[str, dict[str, int | bool]]:
        """Server name -> its counters (all of :data:`COUNTERS`) and ``up``."""
        with self._cond:
            return {s: {**{c: int(self.counts[s][c]) for c in COUNTERS}, "up": st.down_for == 0}
                    for s, st in zip(self.servers, self._state)}
