"""The router's choices: least-loaded, failover, down periods, probes (a fake clock, no HTTP)."""

from __future__ import annotations

import threading

import pytest

from qdaif.lm._routing import Router


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_requests_go_to_the_least_loaded_server():
    r = Router(servers=["a", "b", "c"])
    picks = [r.acquire()[0] for _ in range(6)]  # none released: loads stay
    assert sorted(picks) == [0, 0, 1, 1, 2, 2]
    r.release(1, ok=True)
    r.release(1, ok=True)
    assert r.acquire() == (1, False)  # b now has the fewest in flight


def test_equal_loads_rotate():
    r = Router(servers=["a", "b"])
    picks = []
    for _ in range(6):
        k, _ = r.acquire()
        r.release(k, ok=True)
        picks.append(k)
    assert picks.count(0) == 3 and picks.count(1) == 3


def test_a_failed_server_is_avoided_until_its_time_is_over_then_probed():
    clock = Clock()
    r = Router(servers=["a", "b"], down_for=5.0, clock=clock)
    k, _ = r.acquire()
    r.release(k, ok=False, down=True)
    other = 1 - k
    assert not r.is_up(k) and r.any_other_up(k)
    nxt, probe = r.acquire(failed=k)
    assert (nxt, probe) == (other, False)
    assert r.snapshot()[r.servers[k]]["failovers"] == 1 and r.snapshot()[r.servers[k]]["downs"] == 1
    r.release(nxt, ok=True)
    for _ in range(5):  # still down: everything goes to the other server
        j, probe = r.acquire()
        assert j == other and not probe
        r.release(j, ok=True)
    clock.t += 5.0
    j, probe = r.acquire()
    assert (j, probe) == (k, True)  # one probe once its time is over
    assert r.acquire() == (other, False)  # while it is being probed, others go elsewhere
    r.probed(k, healthy=True)
    r.release(k, ok=True)
    assert r.is_up(k)
    assert r.snapshot()[r.servers[k]]["health_checks"] == 1


def test_a_failed_probe_doubles_the_down_period_and_frees_the_slot():
    clock = Clock()
    r = Router(servers=["a", "b"], down_for=5.0, clock=clock)
    k, _ = r.acquire()
    r.release(k, ok=False, down=True)
    clock.t += 5.0
    assert r.acquire() == (k, True)
    r.probed(k, healthy=False)  # still dead: 10 s now
    clock.t += 9.0
    assert r.acquire()[0] == 1 - k
    clock.t += 1.0
    assert r.acquire() == (k, True)
    assert r.snapshot()[r.servers[k]]["requests"] == 2  # the refused probe's request was not counted


def test_failures_of_requests_already_in_flight_do_not_extend_the_down_period():
    clock = Clock()
    r = Router(servers=["a", "b"], down_for=5.0, clock=clock)
    ks = [r.acquire()[0] for _ in range(4)]
    assert ks.count(0) == 2
    for _ in range(2):
        r.release(0, ok=False, down=True)
    clock.t += 5.0
    assert r.acquire() == (0, True)
    assert r.snapshot()["a"]["downs"] == 1


def test_when_every_server_is_down_the_first_to_come_back_is_chosen():
    clock = Clock()
    r = Router(servers=["a", "b"], down_for=5.0, clock=clock)
    k, _ = r.acquire()
    r.release(k, ok=False, down=True)
    clock.t += 1.0
    j, _ = r.acquire(failed=k)
    assert j == 1 - k
    r.release(j, ok=False, down=True)
    assert not r.any_other_up(0) and not r.any_other_up(1)
    assert r.acquire(failed=j) == (k, False)  # k comes back first: the caller backs off and tries it


def test_max_in_flight_per_server_waits_for_a_slot():
    r = Router(servers=["a"], max_in_flight=2)
    r.acquire()
    r.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(r.acquire()))
    t.start()
    t.join(0.2)
    assert not got  # blocked: both slots taken
    r.release(0, ok=True)
    t.join(2)
    assert got == [(0, False)]


def test_bad_settings():
    with pytest.raises(ValueError):
        Router(servers=[])
    with pytest.raises(ValueError):
        Router(servers=["a"], max_in_flight=0)
