"""Stand-ins for LSF (bsub, bjobs, bkill) and HTCondor (condor_submit, condor_q,
condor_rm), which cannot be installed on the test machine.

They run the submitted job script on this machine, in the background and in its own
process group, and print what the real commands print, so the pxpool providers are
tested through the same parsing and the same job scripts they use on a real cluster.
State lives in ``$PXPOOL_STANDIN_DIR`` (one folder per job: script, pid, exit code).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("PXPOOL_STANDIN_DIR", "/tmp/pxpool-standins"))


def new_job(script: str, output: str) -> str:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "lock", "a+") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = STATE / "counter"
        job_id = str(int(counter.read_text()) + 1 if counter.exists() else 1000)
        counter.write_text(job_id)
    folder = STATE / job_id
    folder.mkdir()
    (folder / "script.sh").write_text(script)
    (folder / "output").write_text(output)
    subprocess.Popen(
        [sys.executable, __file__, "_run", job_id],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=os.getcwd(),
    )
    return job_id


def run(job_id: str) -> None:
    """The job itself: the script under bash, with the variables the system sets."""
    folder = STATE / job_id
    (folder / "pid").write_text(str(os.getpid()))
    env = dict(os.environ, LSB_JOBID=job_id, _CONDOR_JOB_AD=str(folder / "ad"))
    output = (folder / "output").read_text() or os.devnull
    with open(output, "ab") as sink:
        code = subprocess.call(
            ["bash", str(folder / "script.sh")], stdout=sink, stderr=sink, env=env
        )
    if not (folder / "exit").exists():
        (folder / "exit").write_text(str(code))


def state(job_id: str) -> tuple[str, int | None] | None:
    """('run' | 'done' | 'cancelled', exit code) or None for an unknown job."""
    folder = STATE / job_id
    if not job_id.isdigit() or not folder.is_dir():
        return None
    if (folder / "exit").exists():
        code = int((folder / "exit").read_text())
        return ("cancelled" if code < 0 else "done", code)
    return ("run", None)


def cancel(job_id: str) -> bool:
    folder = STATE / job_id
    if state(job_id) in (None,) or state(job_id)[0] != "run":  # type: ignore[index]
        return False
    (folder / "exit").write_text("-15")
    deadline = time.monotonic() + 10
    while not (folder / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int((folder / "pid").read_text())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
    return True


def directive(script: str, prefix: str, option: str) -> str:
    match = re.search(rf"^{re.escape(prefix)}\s+{re.escape(option)}\s+(\S+)", script, re.M)
    return match[1] if match else ""


# ------------------------------------------------------------------ LSF


def bsub(args: list[str]) -> int:
    script = sys.stdin.read()  # `bsub < script`: options come from the #BSUB lines
    job_id = new_job(script, directive(script, "#BSUB", "-o"))
    queue = directive(script, "#BSUB", "-q") or "normal"
    print(
        f"Job <{job_id}> is submitted to {'default ' if queue == 'normal' else ''}queue <{queue}>."
    )
    return 0


def bjobs(args: list[str]) -> int:
    job_id = args[-1]
    found = state(job_id)
    if found is None:
        print(f"Job <{job_id}> is not found", file=sys.stderr)
        return 255
    word, code = found
    stat = {"run": "RUN", "done": "DONE" if code == 0 else "EXIT", "cancelled": "EXIT"}[word]
    exit_code = "-" if code is None or code == 0 else str(130 if code < 0 else code)
    print(f"{stat}|{exit_code}|-")  # -o "stat exit_code pend_reason delimiter='|'"
    return 0


def bkill(args: list[str]) -> int:
    job_id = args[-1]
    if state(job_id) is None:
        print(f"Job <{job_id}>: No matching job found", file=sys.stderr)
        return 255
    if not cancel(job_id):
        print(f"Job <{job_id}>: Job has already finished", file=sys.stderr)
        return 255
    print(f"Job <{job_id}> is being terminated")
    return 0


# ------------------------------------------------------------------ HTCondor


def condor_submit(args: list[str]) -> int:
    description = Path(args[-1]).read_text()
    values = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.partition("=") for line in description.splitlines())
        if _ and not k.strip().startswith("#")
    )
    executable = values.get("executable", "")
    if not os.access(executable, os.X_OK):
        print(f"\nERROR: Executable file {executable} does not exist", file=sys.stderr)
        return 1
    job_id = new_job(Path(executable).read_text(), values.get("output", ""))
    print("Submitting job(s).")
    print(f"1 job(s) submitted to cluster {job_id}.")
    return 0


def condor_q(args: list[str]) -> int:
    """`condor_q ID -af JobStatus`: running jobs print 2; finished jobs have left."""
    job_id = args[0].split(".")[0]
    found = state(job_id)
    if found is not None and found[0] == "run":
        print("2")
    return 0


def condor_rm(args: list[str]) -> int:
    job_id = args[-1].split(".")[0]
    if not cancel(job_id):
        print(f"Couldn't find/remove all jobs in cluster {job_id}", file=sys.stderr)
        return 1
    print(f"All jobs in cluster {job_id} have been marked for removal")
    return 0


COMMANDS = {f.__name__: f for f in (bsub, bjobs, bkill, condor_submit, condor_q, condor_rm)}

if __name__ == "__main__":
    if sys.argv[1] == "_run":
        run(sys.argv[2])
    else:
        sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
