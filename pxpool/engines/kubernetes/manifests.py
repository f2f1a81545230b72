"""The objects pxpool creates in a cluster: one Secret per pool, one Indexed Job per
engine set. Plain dicts (what the API server and ``kubectl apply`` read), built from
the profile alone, so they are golden-tested and validated against the Kubernetes
OpenAPI schema without a cluster.

A Job runs ``pods`` pods; pod ``JOB_COMPLETION_INDEX`` (the rank) starts the engines
``ids[rank * engines_per_pod : (rank + 1) * engines_per_pod]``, under the shell below,
which passes SIGTERM on to them: on eviction or preemption the kubelet sends SIGTERM,
the engines drain (:mod:`pxpool._reliability.walltime`) and
``terminationGracePeriodSeconds`` (the profile's ``drain_time``) later it kills
what is left. ``backoffLimit: 0``: pxpool, not Kubernetes, replaces engines.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..._profile.settings import KubernetesSettings

__all__ = [
    "MOUNT_PATH",
    "CONNECTION_KEY",
    "LABEL_POOL",
    "LABEL_SET",
    "Owner",
    "JobRequest",
    "dns_name",
    "label_value",
    "pool_labels",
    "secret_name",
    "secret_manifest",
    "job_manifest",
    "pod_script",
    "cpu_text",
    "memory_text",
]

MOUNT_PATH = "/var/run/pxpool"  # the Secret's files in every engine container
CONNECTION_KEY = "engine.json"  # the controller's connection file for engines
CONTAINER = "engines"
LABEL_POOL = "pxpool.io/pool"
LABEL_SET = "pxpool.io/engine-set"
FINISHED_TTL = 600  # seconds a Job whose pods all ended stays (for a look), then goes
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Owner:
    """The notebook's pod: the Jobs and the Secret go when it goes."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": self.name,
            "uid": self.uid,
            "blockOwnerDeletion": False,
        }


@dataclass(frozen=True)
class JobRequest:
    """What differs between the Jobs of one pool."""

    pool: str
    set_id: str
    namespace: str
    image: str
    python: str
    engine_ids: tuple[int, ...]
    engine_args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    owner: Owner | None = None

    @property
    def name(self) -> str:
        return dns_name(f"pxpool-{self.pool}-{self.set_id}", room=6)  # pod names add -rank-


def dns_name(text: str, room: int = 0) -> str:
    """``text`` as a DNS-1123 label (lower case, digits, '-'), at most 63 - ``room``
    characters; a cut name keeps a hash of the whole one, so two pools stay apart."""
    limit = 63 - room
    name = _NOT_DNS.sub("-", text.lower()).strip("-") or "pxpool"
    if len(name) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[: limit - 9].rstrip('-')}-{digest}"
    return name


def label_value(text: str) -> str:
    value = _NOT_LABEL.sub("-", text).strip("-_.")
    return value[:63].rstrip("-_.") or "pxpool"


def pool_labels(pool: str, set_id: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": "pxpool", LABEL_POOL: label_value(pool)}
    if set_id is not None:
        labels[LABEL_SET] = label_value(set_id)
    return labels


def secret_name(pool: str) -> str:
    return dns_name(f"pxpool-{pool}-connection")


def _metadata(name: str, namespace: str, labels: dict[str, str], owner: Owner | None) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [owner.reference()]
    return metadata


def secret_manifest(pool: str, namespace: str, connection: str, owner: Owner | None) -> Any:
    """The connection file engines read; never part of a Job's manifest."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(secret_name(pool), namespace, pool_labels(pool), owner),
        "type": "Opaque",
        "stringData": {CONNECTION_KEY: connection},
    }


def cpu_text(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_text(size: int) -> str:
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _resources(settings: KubernetesSettings) -> dict[str, Any]:
    """Per engine in the profile, per pod here."""
    n = settings.engines_per_pod
    requests = {"cpu": cpu_text(settings.cpu_millis * n)}
    requests["memory"] = memory_text(settings.memory_bytes * n)
    limit = settings.memory_limit_bytes or settings.memory_bytes
    limits = {"memory": memory_text(limit * n)}
    if settings.cpu_limit_millis is not None:
        limits["cpu"] = cpu_text(settings.cpu_limit_millis * n)
    if settings.gpus:  # an extended resource: requests, if given, equal limits
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(settings.gpus * n)
    return {"requests": requests, "limits": limits}


def pod_script(python: str, engine_args: Sequence[str]) -> str:
    """The container's shell: pick this rank's engine ids, start them, pass SIGTERM on,
    wait for all of them, exit with the last failure's code."""
    engine = " ".join(
        shlex.quote(part)
        for part in (
            python,
            "-m",
            "pxpool._entry.engine_main",
            f"--IPEngine.url_file={MOUNT_PATH}/{CONNECTION_KEY}",
            *engine_args,
        )
    )
    return "\n".join(
        [
            'rank="${JOB_COMPLETION_INDEX:-0}"; i=0; pids=""; status=0',
            "trap 'kill -TERM $pids 2>/dev/null' TERM",
            "for id in $PXPOOL_ENGINE_IDS; do",
            '  if [ $((i / PXPOOL_ENGINES_PER_POD)) -eq "$rank" ]; then',
            f'    {engine} "--IPEngine.id=$id" &',
            '    pids="$pids $!"',
            "  fi",
            "  i=$((i + 1))",
            "done",
            "for pid in $pids; do",
            '  while :; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done',
            '  [ "$code" -eq 0 ] || status=$code',
            "done",
            'exit "$status"',
        ]
    )


def _pod_spec(request: JobRequest, settings: KubernetesSettings) -> dict[str, Any]:
    env = {
        "PXPOOL_ENGINE_IDS": " ".join(map(str, request.engine_ids)),
        "PXPOOL_ENGINES_PER_POD": str(settings.engines_per_pod),
        "IPYTHONDIR": "/tmp/pxpool-ipython",  # a home the image's user may not write
        **dict(request.env or {}),
    }
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": request.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["/bin/sh", "-c", pod_script(request.python, request.engine_args)],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": _resources(settings),
        "volumeMounts": [{"name": "connection", "mountPath": MOUNT_PATH, "readOnly": True}],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": settings.drain_time,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [  # readable by the image's user (not root in Jupyter images)
            {
                "name": "connection",
                "secret": {"secretName": secret_name(request.pool), "defaultMode": 0o444},
            }
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    else:  # the namespace's default account: engines need no API access
        spec["automountServiceAccountToken"] = False
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [
            {
                k: v
                for k, v in (
                    ("key", t.key),
                    ("operator", t.operator),
                    ("value", t.value),
                    ("effect", t.effect),
                )
                if v
            }
            for t in settings.tolerations
        ]
    return spec


def job_manifest(request: JobRequest, settings: KubernetesSettings) -> Any:
    """One Indexed Job: a pod per ``engines_per_pod`` engines of ``request.engine_ids``."""
    pods = -(-len(request.engine_ids) // settings.engines_per_pod)
    labels = pool_labels(request.pool, request.set_id)
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": pods,
        "parallelism": pods,
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": FINISHED_TTL,
        "template": {"metadata": {"labels": dict(labels)}, "spec": _pod_spec(request, settings)},
    }
    if settings.walltime_seconds:
        spec["activeDeadlineSeconds"] = settings.walltime_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(request.name, request.namespace, labels, request.owner),
        "spec": spec,
    }
