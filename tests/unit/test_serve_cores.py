"""serve/cores.py: requests' CPU work gets the cores first come, first served, one per request, and
a request alone on the machine gets them all."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from serve.cores import Cores


def start_in_order(cores: Cores, count: int, body) -> list[threading.Thread]:
    """count threads, each started once the one before holds a core or waits for one."""
    threads = []
    for i in range(count):
        threads.append(threading.Thread(target=body, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while (cores.count - cores._free) + len(cores._waiting) <= i:
            assert time.monotonic() < deadline, f"request {i} never reached the cores"
            time.sleep(0.001)
    return threads


@pytest.mark.parametrize("count", [1, 2])
def test_requests_get_a_core_in_arrival_order_and_never_more_than_there_are(count):
    cores = Cores()
    cores.configure(count)
    release = threading.Event()
    holding, most, order, lock = [0], [0], [], threading.Lock()

    def request(i: int):
        with cores.turn():
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
                order.append(i)
            release.wait(10)
            with lock:
                holding[0] -= 1

    threads = start_in_order(cores, 8, request)
    assert len(cores._waiting) == 8 - count  # as many hold as there are cores; the rest wait
    release.set()
    for thread in threads:
        thread.join(10)
    assert most[0] == count and cores._free == count and cores.in_flight() == 0
    if count == 1:  # one at a time: each is handed the core in the order they came
        assert order == list(range(8))
    else:
        assert sorted(order[:2]) == [0, 1] and sorted(order) == list(range(8))


def test_a_lone_request_takes_every_core_and_one_beside_others_keeps_its_own():
    cores = Cores()
    cores.configure(2)
    entered, leave = threading.Event(), threading.Event()

    def other_request():
        with cores.turn():
            entered.set()
            leave.wait(10)

    with cores.turn() as turn:
        assert turn.take_all() and turn.held == 2 and cores._free == 0
        other = threading.Thread(target=other_request)
        other.start()  # arrives while the lone request runs on both cores: it waits
        assert not entered.wait(0.2)
        turn.give_back()  # the network is done: the second core goes to the one waiting
        assert entered.wait(10) and turn.held == 1
        assert not turn.take_all()  # another request is in flight now
        leave.set()
        other.join(10)
    assert cores._free == 2 and cores.in_flight() == 0


def test_the_count_spans_worker_processes_and_a_dead_workers_requests_stop_counting():
    """Worker processes forked from the master share the cells; the master clears a dead one."""
    cores = Cores()
    cores.configure(2)
    started, release = multiprocessing.Event(), multiprocessing.Event()

    def worker(cell: int, stop):
        cores.use_cell(cell)
        with cores.turn():
            started.set()
            stop()

    child = multiprocessing.get_context("fork").Process(target=worker,
                                                        args=(7, lambda: release.wait(30)))
    child.start()
    assert started.wait(30)
    with cores.turn() as turn:
        assert not turn.take_all()  # a request of another worker is in flight
    release.set()
    child.join(30)
    with cores.turn() as turn:
        assert turn.take_all()
        turn.give_back()

    started.clear()
    child = multiprocessing.get_context("fork").Process(target=worker,
                                                        args=(8, lambda: time.sleep(60)))
    child.start()
    assert started.wait(30)
    child.kill()  # killed mid-request (a timed-out worker)
    child.join(30)
    with cores.turn() as turn:
        assert not turn.take_all()
    cores.clear(8)  # what the master does when a worker exits (serve/server.py child_exit)
    with cores.turn() as turn:
        assert turn.take_all()


def test_a_failing_request_hands_its_core_on():
    cores = Cores()
    cores.configure(1)
    with pytest.raises(RuntimeError):
        with cores.turn():
            raise RuntimeError("bad image")
    with cores.turn() as turn:
        assert cores._free == 0 and turn.take_all()
    assert cores._free == 1 and cores.in_flight() == 0
