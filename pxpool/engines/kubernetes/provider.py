"""Engines in Kubernetes pods: one Indexed Job per engine set, the controller in the
notebook's pod.

On the first engines of a pool the provider finds the notebook's pod (its image is
the engines' default, its uid owns the Jobs and the Secret), then writes the
controller's connection file for engines into a Secret mounted into every engine
pod. Each engine set (``engines_per_pod * pods_per_job`` engines) is one Job
(:class:`~.job.PodJob`). ``release`` deletes the Jobs still known, then any Job of
the pool the API still lists (one started by another process), waits until their
pods are gone, and deletes the Secret.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ..._core.cluster import PxCluster
from ..._core.startup import engine_file
from ...errors import PoolStartError, PxpoolError
from ...profile import Profile
from ..base import Provider
from .api import KubeApi, in_cluster
from .errors import image_unknown
from .job import PodJob
from .manifests import (
    JobRequest,
    job_manifest,
    pool_labels,
    secret_manifest,
    secret_name,
)
from .notebook import NotebookPod, PodIPController, find_notebook_pod
from .rbac import to_yaml

__all__ = ["KubernetesProvider"]

log = logging.getLogger("pxpool.kubernetes")
IMAGE_PLACEHOLDER = "IMAGE-OF-THE-NOTEBOOK-POD"  # job_script() before a start found it


class KubernetesProvider(Provider):
    name = "kubernetes"
    engine_launcher_class = PodJob

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.settings = profile.kubernetes
        self._api: KubeApi | None = None
        self._notebook: NotebookPod | None = None
        self._no_notebook = ""  # why there is no notebook pod, if there is none
        self._namespace = self.settings.namespace
        self._secret: str | None = None
        self._jobs: dict[str, PodJob] = {}

    def startable_here(self) -> bool:
        """A cluster to talk to, and the client to talk with: inside a pod, or a kube
        config file (``KUBECONFIG``'s, else ``~/.kube/config``)."""
        if importlib.util.find_spec("kubernetes") is None:
            return False
        configs = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        return in_cluster() or any(Path(p).is_file() for p in configs.split(os.pathsep) if p)

    def default_engine_count(self) -> int:
        return self.profile.engines or 1

    def controller_launcher_class(self) -> Any:
        return PodIPController

    def python(self) -> str:
        """The engines' interpreter: this one when the pods run the notebook's image."""
        if self.profile.engine.python:
            return self.profile.engine.python
        return sys.executable if not self.settings.image else "python3"

    # -------------------------------------------------- manifests

    def request(
        self, pool: str, set_id: str, ids: list[int], image: str, token: str | None = None
    ) -> JobRequest:
        """A Job for engines ``ids``; its name ends in ``token`` (random: a restarted set's
        new Job never meets its old one, still being deleted, under the same name)."""
        token = secrets.token_hex(2) if token is None else token
        return JobRequest(
            pool=pool,
            set_id=f"{set_id}-{token}" if token else set_id,
            namespace=self._namespace or "default",
            image=image,
            python=self.python(),
            engine_ids=tuple(ids),
            engine_args=tuple(self.engine_args(None)),
            env=dict(self.profile.engine.env),
            owner=self._owner(),
        )

    def _owner(self) -> Any:
        notebook = self._notebook
        if notebook is None or notebook.namespace != (self._namespace or "default"):
            return None  # an owner must live in the same namespace
        return notebook.owner

    def job_script(self, pool_name: str | None = None) -> str:
        """The manifests a start sends, as YAML: the Secret (its content, the controller's
        connection file, is written at start: a placeholder here) and the first Job
        (whose name gets 4 random hex digits at start). In a pod, the notebook's image
        and owner reference are looked up as a start does."""
        if not self.settings.image and (in_cluster() or os.environ.get("PXPOOL_POD_NAME")):
            try:
                self._connect()
            except PxpoolError as exc:  # shown with a placeholder; a start says why
                log.debug("pxpool: no notebook pod for the job script: %s", exc)
        pool = pool_name or f"{self.profile.name}-NAME"
        count = self.settings.engines_per_pod * self.settings.pods_per_job
        ids = list(range(min(count, self.default_engine_count())))
        image = self.settings.image or (self._notebook.image if self._notebook else "")
        request = self.request(pool, "pods-0", ids, image or IMAGE_PLACEHOLDER, token="")
        secret = secret_manifest(pool, request.namespace, "<connection file>", request.owner)
        return to_yaml([secret, job_manifest(request, self.settings)])

    # -------------------------------------------------- the provider interface

    def _connect(self) -> None:
        """The API and the notebook's pod, once (blocking: a start runs it in a thread)."""
        if self._api is not None:
            return
        api = KubeApi()
        self._namespace = self._namespace or api.default_namespace()
        self._notebook, self._no_notebook = find_notebook_pod(api, self._namespace)
        if self._notebook is not None:
            api.service_account = self._notebook.service_account
        elif self.settings.image:
            log.warning("pxpool: %s; engine Jobs get no owner reference", self._no_notebook)
        self._api = api

    async def _prepare(self, cluster: PxCluster) -> tuple[KubeApi, str]:
        """The API, the notebook's pod and the Secret, once per pool; the image."""
        await asyncio.to_thread(self._connect)
        if self._notebook is None and not self.settings.image:
            raise image_unknown(self.profile.name, self._no_notebook)
        api = self._api
        assert api is not None  # _connect made it
        if self._secret is None:
            connection = Path(engine_file(cluster)).read_text()
            body = secret_manifest(cluster.cluster_id, self._namespace, connection, self._owner())
            await asyncio.to_thread(api.create_secret, self._namespace, body)
            self._secret = secret_name(cluster.cluster_id)
        image = self.settings.image or (self._notebook.image if self._notebook else "")
        return api, image

    async def start_engines(
        self, cluster: PxCluster, engine_ids: list[int]
    ) -> dict[str, list[int]]:
        _, image = await self._prepare(cluster)
        per_set = self.settings.engines_per_pod * self.settings.pods_per_job
        started: dict[str, list[int]] = {}
        for first in range(0, len(engine_ids), per_set):
            ids = engine_ids[first : first + per_set]
            set_id = f"pods-{ids[0]}"
            request = self.request(cluster.cluster_id, set_id, ids, image)
            self._jobs[set_id] = await self.start_job_set(
                cluster,
                set_id,
                ids,
                provider_name=self.name,
                profile_name=self.profile.name,
                job_name=request.name,
                namespace=request.namespace,
                manifest=job_manifest(request, self.settings),
                cancel_timeout=self.profile.timeouts.stop,
                unschedulable_wait=float(self.settings.unschedulable_wait),
            )
            started[set_id] = ids
        return started

    async def release(self, cluster: PxCluster | None) -> None:
        """Delete every Job of the pool and the Secret; wait until the pods are gone."""
        jobs = {id(job): job for job in self._jobs.values()}
        if cluster is not None:
            jobs.update({id(j): j for j in cluster.engines.values() if isinstance(j, PodJob)})
        self._jobs.clear()
        timeout = self.profile.timeouts.stop
        try:
            pending = [job.stop() for job in jobs.values() if job.state != "after"]
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), timeout + 5)
            if cluster is not None:  # also a pool started by another process
                await self._sweep(str(cluster.cluster_id), timeout)
        finally:
            self.close_job_client()

    async def _sweep(self, pool: str, timeout: float) -> None:
        """What the API still lists under the pool's label (Jobs ended on their own,
        another process's), then the Secret."""
        try:
            api = self._api if self._api is not None else await asyncio.to_thread(KubeApi)
        except PoolStartError:  # no client or no cluster: this process created nothing there
            return
        namespace = self._namespace or api.default_namespace()
        selector = ",".join(f"{k}={v}" for k, v in pool_labels(pool).items())
        for job in await asyncio.to_thread(api.list_jobs, namespace, selector):
            await asyncio.to_thread(api.delete_job, namespace, job["metadata"]["name"])
        deadline = asyncio.get_running_loop().time() + timeout
        while await asyncio.to_thread(api.list_pods, namespace, selector):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("pxpool: pods of pool %r still there after %gs", pool, timeout)
                break
            await asyncio.sleep(0.2)
        await asyncio.to_thread(api.delete_secret, namespace, secret_name(pool))
        self._secret = None

    def job_id_of(self, engine_id: int) -> str | None:
        for job in self._jobs.values():
            if engine_id in job.engine_ids and job.state == "running":
                return str(job.job_name)
        return None
