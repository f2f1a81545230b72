"""The shared provider suite on SLURM across two lab nodes (pxlab2 and pxlab3, partition
``lab``: ``infra/slurm.sh`` runs a slurmd in each lab host's namespaces). One job of two
engines, one per node (srun), reaching the controller on the lab bridge (198.18.0.1);
and engines as MPI ranks of one mpiexec across both nodes, with mpi4py's allreduce.

The lab hosts have a /tmp of their own, so the pool's runtime directory (connection
files, job scripts, job output) lives in the lab's shared directory, as a cluster's would
on a shared home. Beyond the generic checks: engines on both nodes with the right host
names in health, a DataFrame map, a 50 MB push/pull over the network, an engine killed on
its node and its job replaced, doctor, a post-mortem on a remote engine, no job left."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pxpool
from pxpool._data import placement

from .batch_helpers import BatchSuite, need, slurm_jobs
from .debug_helpers import fails_with_local
from .test_lab_ssh import PUSH_BYTES, array_sum, shm_maps, where
from .waits import wait_until

pytestmark = pytest.mark.integration
NODES = ["pxlab2", "pxlab3"]
REPLACE_WAIT = 120.0


def lab_nodes_idle() -> bool:
    done = subprocess.run(
        ["sinfo", "-h", "-p", "lab", "-o", "%n %t"], capture_output=True, text=True, timeout=20
    )
    states = dict(line.split() for line in done.stdout.splitlines() if line.strip())
    return all(states.get(node, "").startswith(("idle", "mix", "alloc")) for node in NODES)


@pytest.fixture(scope="module")
def shared_runtime() -> Iterator[str]:
    """A runtime directory every lab node sees (the session's own is in a private /tmp)."""
    shared = os.environ.get("PXPOOL_LAB_SHARED_DIR", "")
    if not shared or not os.path.isdir(shared):
        pytest.skip("the lab is not running (no PXPOOL_LAB_SHARED_DIR); run `bash infra/up.sh`")
    need("sbatch", "run `bash infra/up.sh` first")
    if not lab_nodes_idle():
        pytest.skip(f"SLURM partition lab has no usable nodes {NODES}; run `bash infra/up.sh`")
    folder = os.path.join(shared, f"runtime-{os.getpid()}")
    os.makedirs(folder, mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PXPOOL_RUNTIME_DIR", folder)
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


class TestLabSlurm(BatchSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self, shared_runtime: str) -> tuple[str, dict[str, Any]]:
        return (
            "slurm",
            {
                "partition": "lab",
                "controller_ip": os.environ.get("PXPOOL_LAB_CLIENT_ADDR", "198.18.0.1"),
                "engines_per_job": 2,
                "directives": ["--nodes=2", "--ntasks-per-node=1"],
                "restart": "on-failure",
                "start_timeout": 90,
            },
        )

    def queue(self, pool: pxpool.Pool) -> list[str]:
        return slurm_jobs(pool.name)

    def test_scale_up_then_down(self, pool: pxpool.Pool) -> None:
        """(Scaling adds a job of two engines here; the generic check expects one.)"""
        assert pool.scale_sync(4) == [0, 1, 2, 3]
        assert pool.scale_sync(2) == [0, 1]

    def test_one_engine_on_each_node_and_health_names_them(self, pool: pxpool.Pool) -> None:
        assert sorted(host for host, _ in pool.view().apply_sync(where)) == NODES
        frame = pool.health()
        frame = frame[frame["engine_id"].isin(pool.ids)]
        assert sorted(frame["host"]) == NODES
        assert socket.gethostname() not in set(frame["host"])

    def test_a_dataframe_map_and_a_50mb_push_over_the_network(self, pool: pxpool.Pool) -> None:
        n = 20_000
        df = pd.DataFrame({"x": np.arange(n), "s": [f"row{i}" for i in range(n)]})
        out = pool.map(lambda part: part.assign(n=part.s.str.len() + part.x), df, chunksize=2_000)
        pd.testing.assert_frame_equal(out, df.assign(n=df.s.str.len() + df.x))
        assert placement.local_engines(pool.core, pool.ids) == set()
        big = np.arange(PUSH_BYTES // 8, dtype=np.float64)
        pool.push({"big": big})
        assert pool.view().apply_sync(array_sum) == [float(big.sum())] * 2
        assert pool.view().apply_sync(shm_maps) == [[], []]
        for pulled in pool.pull("big"):
            np.testing.assert_array_equal(pulled, big)
        pool.execute("del big")

    def test_doctor_and_a_remote_post_mortem(self, pool: pxpool.Pool) -> None:
        frame = pool.doctor(show=False)
        assert not len(frame[frame["check"] == "python"]), frame
        with pytest.raises(Exception, match="bad input 3"):
            pool.view(0).apply_sync(fails_with_local, 3)
        with pool.debug(0) as session:
            assert session.kind == "postmortem"
            assert session.send("p secret").strip() == "21"
            assert session.send("p __import__('socket').gethostname()").strip() in {
                f"'{node}'" for node in NODES
            }
        assert session.ended

    def test_an_engine_killed_on_its_node_comes_back(self, pool: pxpool.Pool) -> None:
        """Its job's engines go down with it and the job is replaced (same ids)."""
        old_job = pool.provider.job_id_of(1)
        pool.view(1).execute(f"print('engine 1 of job {old_job} before os._exit')")
        pool.view(1).apply_async(os._exit, 9)
        wait_until(
            lambda: pool.ids == [0, 1] and pool.provider.job_id_of(1) != old_job,
            REPLACE_WAIT,
            "engine 1's job replaced",
        )
        wait_until(
            lambda: sorted(h for h, _ in pool.view().apply_sync(where)) == NODES,
            REPLACE_WAIT,
            "both engines answering from their nodes",
        )
        assert 1 in pool.engine_deaths()  # (its job ran on: no exit status to report)
        assert f"\nengine 1 of job {old_job} before os._exit\n" in pool.logs(1)


def _host_size_rank_sum() -> tuple[str, int, int]:
    import socket

    from mpi4py import MPI

    world = MPI.COMM_WORLD
    return socket.gethostname(), world.Get_size(), world.allreduce(world.Get_rank())


def test_mpi_ranks_on_the_two_lab_nodes_allreduce(shared_runtime: str) -> None:
    """Engines as the ranks of one mpiexec inside a 2-node job: mpi4py's allreduce runs
    across the lab's network (Open MPI told to use the lab's subnet, as a cluster's
    profile names its interconnect; infra/mpi.sh's settings keep local runs on lo)."""
    lab_net = "198.18.0.0/24"
    overrides = {
        "partition": "lab",
        "controller_ip": os.environ.get("PXPOOL_LAB_CLIENT_ADDR", "198.18.0.1"),
        "engines_per_job": 2,
        "launcher": "mpiexec",
        "directives": ["--nodes=2", "--ntasks-per-node=1"],
        "prologue": [
            f"export OMPI_MCA_oob_tcp_if_include={lab_net} OMPI_MCA_btl_tcp_if_include={lab_net}"
        ],
        "start_timeout": 90,
    }
    with pxpool.Pool.from_profile("slurm", engines=2, **overrides) as pool:
        ranks = sorted(pool.view().apply_sync(_host_size_rank_sum))
        assert ranks == [("pxlab2", 2, 1), ("pxlab3", 2, 1)]
    assert slurm_jobs(pool.name) == []
