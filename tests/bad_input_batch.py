"""Several `python -m pipelines` command lines in ONE interpreter, for the bad-input corpus
(tests/test_bad_inputs.py), so that each case does not pay for a Python start and the imports
(Great Expectations alone takes seconds) of a process of its own.

    python tests/bad_input_batch.py JOBS.json

JOBS.json is a list of {"argv": [...], "cwd": DIR, "stdout": FILE, "stderr": FILE, "rc": FILE}.
Each job runs `pipelines.__main__.main(argv)`, the function `python -m pipelines` runs, from its
own working directory, with file descriptors 1 and 2 pointed at its own files (so what native
code writes lands there too). It ends as the command would end:

- main's return value is the exit status;
- SystemExit (argparse) gives its code, a message code printed to stderr and status 1;
- any other exception that escapes is printed as Python prints an uncaught one, a traceback,
  with status 1.

The status is written to the job's rc file (temp + rename) once the job is done, so a job that
takes the interpreter down leaves no rc file: the caller sees which job it was and can start
the jobs after it in a fresh batch (`run_batches`).

What a fresh process would not share with the jobs before it: Python's warnings shown "once
per location" are shown again for every job (the filters' cache is reset); the logging
handler is replaced by main itself (progress.setup_cli_logging).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path


def run_job(job: dict) -> int:
    from pipelines.__main__ import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    here = os.getcwd()
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    try:
        mutated = getattr(warnings, "_filters_mutated", None)  # "once" warnings show again
        if mutated is not None:
            mutated()
        try:
            os.chdir(job["cwd"])
            rc = main(list(job["argv"]))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                rc = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                rc = 1
        except BaseException:  # noqa: BLE001 - what the interpreter would print, and its status
            traceback.print_exc()
            rc = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        os.chdir(here)
    tmp = Path(str(job["rc"]) + ".tmp")
    tmp.write_text(str(rc))
    tmp.replace(job["rc"])
    return rc


def run_batches(jobs: list[dict], jobs_file: Path, timeout: float = 3600) -> dict[str, str]:
    """Runs `jobs` in one interpreter (a subprocess of this one); when it ends before the last
    job (a crash, a kill), the job it was running is given up with a note in its stderr and the
    rest run in a fresh interpreter. Returns, for each job given up, why."""
    given_up: dict[str, str] = {}
    todo = list(jobs)
    while todo:
        jobs_file.write_text(json.dumps(todo))
        try:
            proc = subprocess.run([sys.executable, __file__, str(jobs_file)], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            ended = f"the batch interpreter ended with status {proc.returncode}: {proc.stderr[-2000:]}"
        except subprocess.TimeoutExpired:
            ended = f"the batch interpreter was stopped after {timeout} s"
        left = [j for j in todo if not Path(j["rc"]).exists()]
        if left:
            lost = left[0]
            given_up[lost["rc"]] = f"{ended} (while running this job)"
            with open(lost["stderr"], "a") as fh:
                fh.write(f"\n[bad_input_batch] {ended} (while running this job)\n")
            left = left[1:]
        todo = left
    return given_up


if __name__ == "__main__":
    for job in json.loads(Path(sys.argv[1]).read_text()):
        run_job(job)
