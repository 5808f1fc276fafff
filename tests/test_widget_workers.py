"""Background jobs of the panels run at a lower scheduling priority than the UI thread."""

from __future__ import annotations

import os
import sys
import threading

import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _run_in_new_thread(func):
    out = {}

    def target():
        out["first"] = func()
        out["second"] = func()  # a pool thread reused for the next job: no further down

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    return out


def test_a_job_runs_nicer_than_the_ui_thread_and_leaves_it_alone():
    from napari_synthseg.widgets._common import WORKER_NICENESS, _in_background

    main = os.getpriority(os.PRIO_PROCESS, os.getpid())
    if main + WORKER_NICENESS > 19:
        pytest.skip(f"the tests already run at niceness {main}: no room to go lower")

    @_in_background
    def own_niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    out = _run_in_new_thread(own_niceness)
    expected = min(main + WORKER_NICENESS, 19)
    assert out == {"first": expected, "second": expected}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main  # the calling thread keeps its own
    assert own_niceness.__name__ == "own_niceness"  # the job's name and signature stay (progress/cancel wiring)
