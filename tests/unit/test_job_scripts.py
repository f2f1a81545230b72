"""Generated job scripts are checked by running them (``bash -n``, then for real with
``echo`` as the engine's python), not only by reading them."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

import pxpool
from pxpool.engines import provider_for
from pxpool.engines.batch import BatchProvider
from pxpool.engines.launchers import MpiexecLauncher, SrunLauncher

BATCH = ["slurm", "sge", "pbs", "lsf", "htcondor"]


def batch_provider(name: str, **overrides: object) -> BatchProvider:
    if name not in __import__("pxpool.engines", fromlist=["x"]).PROVIDER_CLASSES:
        pytest.skip(f"provider {name} is not available in this version")
    provider = provider_for(pxpool.load_profile(name, **overrides))  # type: ignore[arg-type]
    assert isinstance(provider, BatchProvider)
    return provider


@pytest.mark.parametrize("name", BATCH)
@pytest.mark.parametrize("launcher", ["plain", "mpiexec", "srun"])
def test_every_script_is_valid_bash(name: str, launcher: str) -> None:
    if launcher == "srun" and name != "slurm":
        with pytest.raises(pxpool.ProfileError, match=r"does not work in .* jobs; use one of"):
            batch_provider(name, launcher=launcher)
        return
    script = batch_provider(name, launcher=launcher, prologue=["module load python"]).job_script()
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", BATCH)
def test_plain_script_starts_every_engine_with_its_id(name: str, tmp_path: Path) -> None:
    provider = batch_provider(
        name, python="/bin/echo", engines=3, engines_per_job=3, launcher="plain"
    )
    spec = provider.job_spec(str(tmp_path), "pool-x", [4, 5, 6])
    os.makedirs(os.path.dirname(spec.output_file))
    script = tmp_path / "job.sh"
    script.write_text(provider.render(spec))
    output = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    if provider.output_in_script:  # PBS emulation and HTCondor: the script redirects itself
        output = Path(spec.output_file).read_text()
    for engine_id in (4, 5, 6):
        assert f"-m pxpool._entry.engine_main --IPEngine.id={engine_id}" in output
    assert "pxpool: job script exited with status 0" in output


@pytest.mark.parametrize(
    ("launcher", "variable"),
    [
        (SrunLauncher, "SLURM_PROCID"),
        (MpiexecLauncher, "OMPI_COMM_WORLD_RANK"),
        (MpiexecLauncher, "PMI_RANK"),
    ],
)
def test_task_launchers_pick_the_engine_id_from_the_rank(launcher: type, variable: str) -> None:
    text = launcher().ranked_command(["/bin/echo", "engine"], [7, 9, 12])
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_RANK", "PROCID"))}
    output = subprocess.run(
        shlex.split(text), env={**env, variable: "2"}, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "engine --IPEngine.id=12"


def test_slurm_directives_follow_the_profile() -> None:
    script = batch_provider(
        "slurm",
        partition="short",
        account="proj1",
        walltime="1-02:03:04",
        memory="1.5G",
        cores_per_engine=2,
        engines_per_job=3,
        engines=6,
        directives=["--constraint=avx2"],
    ).job_script(pool_name="p1")
    for line in [
        "#SBATCH --job-name=pxpool-p1-0",
        "#SBATCH --ntasks=3",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=short",
        "#SBATCH --account=proj1",
        "#SBATCH --time=26:03:04",
        "#SBATCH --mem=1536M",
        "#SBATCH --constraint=avx2",
    ]:
        assert line in script.splitlines()
    assert "srun --ntasks=3 --cpus-per-task=2" in script
    assert "ids=(0 1 2)" in script


def test_lsf_and_htcondor_directives() -> None:
    lsf = batch_provider("lsf", queue="normal", walltime="01:30:00", memory="2G").job_script()
    assert {"#BSUB -q normal", "#BSUB -W 1:30", "#BSUB -M 2048MB"} <= set(lsf.splitlines())
    condor = batch_provider("htcondor", memory="2G", cores_per_engine=2).job_script()
    assert {"request_memory = 2048MB", "request_cpus = 2", "queue 1"} <= set(condor.splitlines())


def test_direct_providers_have_no_job_script() -> None:
    with pytest.raises(pxpool.PxpoolError, match="submits no job script"):
        provider_for(pxpool.load_profile("local")).job_script()


def test_sge_script_uses_sge_directives_not_pbs_ones() -> None:
    script = batch_provider("sge", engines_per_job=2, engines=2, queue="all.q").job_script()
    lines = script.splitlines()
    assert {"#$ -pe smp 2", "#$ -q all.q", "#$ -j y", "#$ -cwd"} <= set(lines)
    assert not any(line.startswith("#PBS") for line in lines)


@pytest.mark.parametrize(
    ("name", "code", "stdout", "stderr", "expected"),
    [
        (
            "slurm",
            0,
            "JobId=7 JobState=PENDING Reason=Resources Dependency=(null)",
            "",
            ("PENDING", "pending", "Resources"),
        ),
        (
            "slurm",
            0,
            "JobId=7 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0",
            "",
            ("FAILED", "finished", "NonZeroExitCode, exit code 3:0"),
        ),
        ("slurm", 1, "", "slurm_load_jobs error: Invalid job id specified", ("gone", "gone", "")),
        (
            "sge",
            0,
            "job-ID prior name user state\n----\n 7 0.5 pxpool-a root qw 01/01/2024 1",
            "",
            ("qw", "pending", ""),
        ),
        ("sge", 0, " 8 0.5 pxpool-a root r 01/01/2024 all.q@h 1", "", ("gone", "gone", "")),
        ("pbs", 0, "Job Id: 7\n\tjob_state = R\n", "", ("R", "running", "")),
        ("pbs", 153, "", "", ("gone", "gone", "")),
        ("lsf", 0, "EXIT|3|-\n", "", ("EXIT", "finished", "exit code 3")),
        ("lsf", 255, "", "Job <7> is not found", ("gone", "gone", "")),
        ("htcondor", 0, "1 undefined\n", "", ("Idle", "pending", "")),
        ("htcondor", 0, "", "", ("gone", "gone", "")),
    ],
)
def test_status_parsing_reads_each_schedulers_words(
    name: str, code: int, stdout: str, stderr: str, expected: tuple[str, str, str]
) -> None:
    from pxpool.engines import PROVIDER_CLASSES

    status = PROVIDER_CLASSES[name].parse_status("7", code, stdout, stderr)  # type: ignore[attr-defined]
    assert (status.state, status.kind, status.reason) == expected


# what asks for one slot/core and no more in each system's controller job
CONTROLLER_DIRECTIVES = {
    "slurm": ["#SBATCH --job-name=pxpool-pool-x-controller", "#SBATCH --ntasks=1"],
    "sge": ["#$ -N pxpool-pool-x-controller", "#$ -j y"],
    "pbs": ["#PBS -N pxpool-pool-x-controller", "#PBS -l nodes=1:ppn=1"],
    "lsf": ["#BSUB -J pxpool-pool-x-controller", "#BSUB -n 1"],
    "htcondor": ["batch_name = pxpool-pool-x-controller", "request_cpus = 1"],
}


@pytest.mark.parametrize("name", BATCH)
def test_controller_job_script_runs_the_controller_with_the_pools_directory(
    name: str, tmp_path: Path
) -> None:
    provider = batch_provider(
        name,
        python="/bin/echo",
        controller_location="job",
        cores_per_engine=4,
        prologue=["echo prologue ran"],
    )
    assert provider.controller_launcher_class() is not None
    spec = provider.controller_job_spec(str(tmp_path), "pool-x")  # type: ignore[attr-defined]
    argv, stdin = provider.write_controller_files(spec, ["--ip=*"])  # type: ignore[attr-defined]
    assert argv[0] == provider.submit_command
    text = Path(spec.script_file).read_text()
    assert stdin in (None, text)  # LSF's bsub reads the script from stdin
    submitted = provider.show_job(spec, provider.controller_command(spec, ["--ip=*"]))  # type: ignore[attr-defined]
    for line in CONTROLLER_DIRECTIVES[name]:
        assert f"{line}\n" in submitted
    assert "ppn=4" not in submitted and "-pe " not in submitted  # no engines' cores
    assert "# pxpool: the controller of pool pool-x" in text and "IPEngine" not in text
    assert subprocess.run(["bash", "-n", spec.script_file], capture_output=True).returncode == 0
    output = subprocess.run(
        ["bash", spec.script_file], capture_output=True, text=True, timeout=20, check=True
    ).stdout
    if provider.output_in_script:  # HTCondor: the script redirects itself
        output = Path(spec.output_file).read_text()
    assert output.splitlines() == [
        "prologue ran",
        f"-m pxpool._entry.controller_main --profile-dir={tmp_path} --cluster-id=pool-x --ip=*",
        "pxpool: job script exited with status 0",
    ]


def test_controller_job_script_shows_the_pools_controller_arguments() -> None:
    provider = batch_provider("slurm", controller_location="job", heartbeat_ms=250)
    script = provider.controller_job_script("pool-y")
    assert "--job-name=pxpool-pool-y-controller" in script
    assert "--cluster-id=pool-y --ip=127.0.0.1 --HeartMonitor.period=250" in script
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
    # a local controller has no job script
    with pytest.raises(pxpool.PxpoolError, match=r"no controller job script"):
        batch_provider("slurm").controller_job_script()


# ------------------------------------------------------------ walltime / preemption signals


def test_each_system_asks_for_a_signal_before_the_walltime() -> None:
    def script(name: str, **overrides: object) -> set[str]:
        provider = batch_provider(name, walltime="00:10:00", **overrides)
        return set(provider.show_job(provider.first_job_spec("p")).splitlines())

    assert "#SBATCH --signal=B:USR1@45" in script("slurm", walltime_signal=45)
    assert {"#$ -notify", "#$ -l s_rt=0:09:15", "#$ -l h_rt=0:10:00"} <= script(
        "sge", walltime_signal=45
    )
    assert {"#BSUB -wa USR1", "#BSUB -wt 2"} <= script("lsf", walltime_signal=90)
    assert {"kill_sig = SIGTERM", "job_max_vacate_time = 45"} <= script(
        "htcondor", walltime_signal=45
    )
    assert "#SBATCH --signal=B:USR1@60" in script("slurm")  # the default lead
    for name in BATCH:  # 0 turns it off: no directive, no trap
        lines = script(name, walltime_signal=0)
        assert not any("signal" in line or "notify" in line or "-wa " in line for line in lines)
        assert not any(line.startswith("trap 'kill") for line in lines)


def test_the_controller_job_is_not_signalled() -> None:
    provider = batch_provider("slurm", controller_location="job", walltime_signal=45)
    assert "--signal" not in provider.controller_job_script("p")


STUB_ENGINE = """#!{python}
import os, signal, sys, time
ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
def say(*words):  # one write per line: both engines share the job's output file
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())
def leave(number, frame):
    say(sys.argv[-1], "got", signal.Signals(number).name, "ignored at start:", ignored)
    time.sleep(0.3)  # finishing a task: the job's shell must wait for it
    say(sys.argv[-1], "left")
    sys.exit(0)
signal.signal(signal.SIGUSR1, leave)
say(sys.argv[-1], "ready")
time.sleep(20)
"""


def test_job_shell_passes_the_signal_to_its_engines_and_waits_for_them(tmp_path: Path) -> None:
    """Run a plain job script whose 'python' is a stub engine, signal the job's shell
    as SLURM's --signal=B: does, and check both engines drain and the job waits."""
    import signal
    import sys
    import time

    stub = tmp_path / "engine"
    stub.write_text(STUB_ENGINE.format(python=sys.executable))
    stub.chmod(0o755)
    provider = batch_provider(
        "slurm", python=str(stub), engines=2, engines_per_job=2, launcher="plain"
    )
    spec = provider.job_spec(str(tmp_path), "pool-x", [0, 1])
    os.makedirs(os.path.dirname(spec.output_file))
    script = tmp_path / "job.sh"
    script.write_text(provider.render(spec))
    output = tmp_path / "out.txt"
    with output.open("w") as sink:
        job = subprocess.Popen(["bash", str(script)], stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while output.read_text().count("ready") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            job.send_signal(signal.SIGUSR1)
            assert job.wait(timeout=15) == 0
        finally:
            job.kill()
    text = output.read_text()
    for engine_id in (0, 1):
        assert f"--IPEngine.id={engine_id} got SIGUSR1 ignored at start: True" in text
        assert f"--IPEngine.id={engine_id} left" in text
    assert text.rstrip().endswith("pxpool: job script exited with status 0")


def test_task_launchers_start_engines_with_the_drain_signals_ignored(tmp_path: Path) -> None:
    import sys

    code = "import signal; print(signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN)"
    probe = [sys.executable, "-c", code]
    text = SrunLauncher().ranked_command(probe, [0])
    output = subprocess.run(
        shlex.split(text), env={**os.environ, "SLURM_PROCID": "0"}, capture_output=True, text=True
    )
    assert output.stdout.strip() == "True", output.stderr
