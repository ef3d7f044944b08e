"""Worker names are unique (issue 29, item 16d): ``hostname:pid`` repeats for workers in
containers or PID namespaces on one host, so an outcome could be put down to the wrong
worker. Two processes with the same host and pid must still be told apart."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.queues import Queue

import pytest

from cscs.archiver.worker import SensorOutcome
from cscs.cluster.identity import worker_name

_SAME_PID = 4242


def _report_names(names: Queue[tuple[str, str, str]]) -> None:
    """In a worker process whose pid is the other's (as in two PID namespaces): the
    names an archiving outcome and an OCS Batch result carry."""
    real, os.getpid = os.getpid, lambda: _SAME_PID  # the child's alone
    try:
        reported = (SensorOutcome(None).worker, SensorOutcome(None).worker, worker_name())
    finally:
        os.getpid = real  # the queue's own machinery must know its process
    names.put(reported)


@pytest.mark.broker  # two worker processes
def test_two_workers_with_the_same_host_and_pid_have_different_names() -> None:
    context = multiprocessing.get_context("spawn")
    names: Queue[tuple[str, str, str]] = context.Queue()
    workers = [context.Process(target=_report_names, args=(names,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    (first, again, batch), (other, _, _) = names.get(timeout=60), names.get(timeout=60)
    for worker in workers:
        worker.join(60)
    assert first.startswith(f"{os.uname().nodename}:{_SAME_PID}")  # still says where
    assert first == again == batch  # one name for every task of a worker
    assert first != other
