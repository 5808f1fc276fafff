"""Run many ``synthseg`` command lines, each in its own forked process, from one import.

Used by the bad-input corpus: starting a fresh interpreter and importing the CLI costs ~1 s a
case (far more on a loaded machine), so this process imports ``napari_synthseg.cli`` once and
forks a child per case. Each child is a separate process as far as the checks are concerned:
its own address-space limit (``RLIMIT_AS``), its own stdout/stderr files (file descriptors 1
and 2, so C libraries' output lands there too), its own exit status, killed on timeout. The
child runs exactly what ``python -m napari_synthseg.cli`` runs: ``sys.exit(main(argv))``, with
an uncaught exception printing its traceback and exiting 1.

Protocol: one JSON job per stdin line ``{"id", "argv", "cwd", "stdout", "stderr", "timeout",
"memory"}``; one JSON result per stdout line ``{"id", "rc", "seconds", "timed_out"}``; at most
``--workers`` children at a time.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback


def _child(job: dict) -> None:
    try:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
        os.chdir(job["cwd"])
        out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        sys.argv = ["synthseg", *job["argv"]]
        try:
            code = main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(int(code or 0))


def serve(workers: int) -> None:
    running: dict[int, tuple[dict, float]] = {}
    jobs = [json.loads(line) for line in sys.stdin if line.strip()]
    jobs.reverse()
    while jobs or running:
        while jobs and len(running) < workers:
            job = jobs.pop()
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(job)
            running[pid] = (job, time.perf_counter())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.perf_counter()
            for child, (job, started) in list(running.items()):
                if now - started > job["timeout"]:
                    try:
                        os.killpg(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(child, 0)
                    del running[child]
                    print(json.dumps({"id": job["id"], "rc": None, "seconds": now - started, "timed_out": True}),
                          flush=True)
            time.sleep(0.01)
            continue
        if pid in running:
            job, started = running.pop(pid)
            rc = os.waitstatus_to_exitcode(status)
            print(json.dumps({"id": job["id"], "rc": rc, "seconds": time.perf_counter() - started,
                              "timed_out": False}), flush=True)


#: Imported once before forking, so children do not each pay for them (the commands import
#: them lazily; a forked child finds them in ``sys.modules``). torch starts no threads at import.
PRELOAD = ("torch", "nibabel", "pydicom", "napari_synthseg.render", "napari_synthseg.workflow.edit",
           "napari_synthseg.workflow.inpaint", "napari_synthseg.inpaint", "napari_synthseg.qa",
           "napari_synthseg.export", "napari_synthseg.lesions", "napari_synthseg.constraints")

if __name__ == "__main__":
    import importlib

    from napari_synthseg.cli import main

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
