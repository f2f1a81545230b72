"""The stand-in cluster behind fake_kube_api.py: objects, the scheduler, the kubelet
(pods as local processes) and the Job controller. See fake_kube_api.py."""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

NAMESPACE = "jupyter"
NOTEBOOK = "notebook-0"
NOTEBOOK_IMAGE = "standin.local/pxpool-notebook:py3.11"
SERVICE_ACCOUNT = "jupyter"
NODE_LABELS = {"kubernetes.io/hostname": "standin-node", "kubernetes.io/os": "linux"}
NODE_CPU_MILLIS = 64_000
NODE_MEMORY = 256 * 2**30
NODE_GPUS = 0
BACKOFF_AFTER = 1.0  # seconds from ErrImagePull to ImagePullBackOff
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
GROUPS = {"pods": "", "secrets": "", "jobs": "batch"}


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def quantity(text: str) -> float:
    text = str(text)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def validate(body: Any) -> str | None:
    """The schema's complaint about ``body`` (strict, Kubernetes 1.33), or None."""
    try:
        import kubernetes_validate
    except ImportError:
        return None
    try:
        kubernetes_validate.validate(body, "1.33", strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc).splitlines()[0]
    return None


class Pod:
    """One pod: its object as the API shows it, and its container as a local process."""

    def __init__(self, manifest: dict[str, Any], folder: Path) -> None:
        self.manifest = manifest
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.deleting_since: float | None = None
        self.oom = False
        self.waiting_since = 0.0

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]  # type: ignore[no-any-return]

    @property
    def status(self) -> dict[str, Any]:
        return self.manifest["status"]  # type: ignore[no-any-return]

    @property
    def ended(self) -> bool:
        return self.status.get("phase") in ("Succeeded", "Failed")

    def processes(self) -> list[psutil.Process]:
        """The container's processes: the tree under its shell, and any that left it."""
        found: dict[int, psutil.Process] = {}
        if self.process is not None:
            try:
                shell = psutil.Process(self.process.pid)
                found.update({p.pid: p for p in [shell, *shell.children(recursive=True)]})
            except psutil.Error:
                pass
        uid = self.manifest["metadata"]["uid"]
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("PXPOOL_STANDIN_POD") == uid:
                    found[process.pid] = process
            except psutil.Error:
                continue
        return list(found.values())

    def kill(self, sig: int) -> None:
        if sig != signal.SIGKILL:  # the kubelet signals PID 1 only
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(sig)
            return
        for process in self.processes():
            try:
                process.send_signal(sig)
            except psutil.Error:
                pass


class Cluster:
    """Objects by kind and (namespace, name); pods with their processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.requests: list[dict[str, Any]] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.image_faults: dict[str, tuple[str, str]] = {}
        self.running = True
        notebook = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": NOTEBOOK, "namespace": NAMESPACE, "uid": str(uuid.uuid4())},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "containers": [{"name": "notebook", "image": NOTEBOOK_IMAGE}],
            },
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
        self.pods[(NAMESPACE, NOTEBOOK)] = Pod(notebook, root / "notebook")

    # ------------------------------------------------------------ requests

    def record(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
        with self.lock:
            self.requests.append({"method": method, "path": path, "query": query, "body": body})

    def answer(
        self, method: str, route: dict[str, Any], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        kind, ns, name = route["kind"], route["ns"], route["name"]
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update"}.get(
            method, "delete"
        )
        if (verb, kind) in self.forbidden:
            group = GROUPS[kind]
            return 403, status(
                403,
                "Forbidden",
                f"{kind}{'.' + group if group else ''} is forbidden: User "
                f'"system:serviceaccount:{ns}:{SERVICE_ACCOUNT}" cannot {verb} resource '
                f'"{kind}" in API group "{group}" in the namespace "{ns}"',
            )
        with self.lock:
            if route["log"]:
                return self._log(ns, name, int(query.get("tailLines", 100)))
            table = self._table(kind)
            if verb == "list":
                selector = dict(
                    p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p
                )
                items = [o for o in table.values() if _matches(o, ns, selector)]
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
            if verb == "get":
                found = table.get((ns, name))
                return (
                    (200, found)
                    if found
                    else (404, status(404, "NotFound", f'{kind} "{name}" not found'))
                )
            if verb == "delete":
                return self._delete(kind, ns, name)
            return self._create(kind, ns, body, replace=verb == "update")

    def _table(self, kind: str) -> dict[tuple[str, str], Any]:
        if kind == "pods":
            return {key: pod.manifest for key, pod in self.pods.items()}
        return self.secrets if kind == "secrets" else self.jobs

    def _log(self, ns: str, name: str, lines: int) -> tuple[int, Any]:
        pod = self.pods.get((ns, name))
        if pod is None or pod.process is None:
            return 400, status(
                400, "BadRequest", f'container "engines" in pod "{name}" is waiting to start'
            )
        text = (pod.folder / "log").read_text(errors="replace")
        return 200, "\n".join(text.splitlines()[-lines:]) + "\n"

    def _create(self, kind: str, ns: str, body: Any, replace: bool) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        problem = validate(body)
        if problem:
            return 422, status(422, "Invalid", f'{body.get("kind")} "{name}" is invalid: {problem}')
        table = self._table(kind)
        if (ns, name) in table and not replace:
            return 409, status(409, "AlreadyExists", f'{kind} "{name}" already exists')
        body = copy.deepcopy(body)
        body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind == "secrets":
            data = {
                k: base64.b64encode(v.encode()).decode()
                for k, v in body.pop("stringData", {}).items()
            }
            body["data"] = {**body.get("data", {}), **data}
            self.secrets[(ns, name)] = body
        else:
            body["status"] = {"startTime": now(), "active": 0, "started": time.time()}
            self.jobs[(ns, name)] = body
            for index in range(body["spec"].get("completions") or 1):
                self._new_pod(body, index)
        return (200 if replace else 201), body

    def _delete(self, kind: str, ns: str, name: str) -> tuple[int, Any]:
        table = self.secrets if kind == "secrets" else self.jobs
        if kind == "pods" or (ns, name) not in table:
            return 404, status(404, "NotFound", f'{kind} "{name}" not found')
        gone = table.pop((ns, name))
        if kind == "jobs":  # background propagation: the pods go after the Job
            for pod in self._pods_of(gone):
                self._begin_delete(pod)
        return 200, status(200, "Success", "") | {"status": "Success"}

    # ------------------------------------------------------------ pods

    def _pods_of(self, job: dict[str, Any]) -> list[Pod]:
        uid = job["metadata"]["uid"]
        return [
            p
            for p in self.pods.values()
            if p.manifest["metadata"].get("labels", {}).get("controller-uid") == uid
        ]

    def _new_pod(self, job: dict[str, Any], index: int) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        meta, job_name = job["metadata"], job["metadata"]["name"]
        name = f"{job_name}-{index}-{uuid.uuid4().hex[:5]}"
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            "job-name": job_name,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": meta["uid"]}
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": []},
        }
        pod = Pod(manifest, self.root / "pods" / name)
        self.pods[(meta["namespace"], name)] = pod
        unschedulable = self._schedule(pod)
        if unschedulable:
            manifest["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                }
            ]
            return
        manifest["spec"]["nodeName"] = NODE_LABELS["kubernetes.io/hostname"]
        manifest["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        self._start(pod)

    def _schedule(self, pod: Pod) -> str:
        """kube-scheduler's message when the one node cannot take ``pod``, else ''."""
        spec, why = pod.spec, []
        if any(NODE_LABELS.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            why.append("1 node(s) didn't match Pod's node affinity/selector")
        requests: dict[str, float] = {}
        for container in spec["containers"]:
            for key, value in (container.get("resources", {}).get("requests") or {}).items():
                requests[key] = requests.get(key, 0) + quantity(value)
        room = {"cpu": NODE_CPU_MILLIS / 1000, "memory": NODE_MEMORY, "nvidia.com/gpu": NODE_GPUS}
        why += [f"1 Insufficient {k}" for k, v in requests.items() if v > room.get(k, 0)]
        if not why:
            return ""
        return (
            f"0/1 nodes are available: {', '.join(why)}. preemption: 0/1 nodes are available: "
            "1 No preemption victims found for incoming pod."
        )

    def _start(self, pod: Pod) -> None:
        """The kubelet: pull (or fail to), mount the Secrets, run the container."""
        container = pod.spec["containers"][0]
        fault = self.image_faults.get(container["image"])
        if fault is not None:
            self._wait(pod, *fault)
            return
        mounts = {}
        for volume in pod.spec.get("volumes") or []:
            secret = self.secrets.get(
                (pod.manifest["metadata"]["namespace"], volume.get("secret", {}).get("secretName"))
            )
            if secret is None:  # the kubelet retries the mount (FailedMount events)
                self._wait(pod, "ContainerCreating", "")
                return
            mounts[volume["name"]] = secret
        pod.folder.mkdir(parents=True, exist_ok=True)
        (pod.folder / "tmp").mkdir(exist_ok=True)
        paths = {}
        for mount in container.get("volumeMounts") or []:
            target = pod.folder / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for key, value in mounts[mount["name"]].get("data", {}).items():
                (target / key).write_bytes(base64.b64decode(value))
                (target / key).chmod(0o400)
            paths[mount["mountPath"]] = str(target)
        paths["/tmp/"] = f"{pod.folder}/tmp/"

        pattern = re.compile("|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True)))

        def local(text: str) -> str:
            return pattern.sub(lambda m: paths[m[0]], text)

        index = pod.manifest["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        env = dict(os.environ, JOB_COMPLETION_INDEX=index, HOSTNAME=pod.name)
        env.update({e["name"]: local(e.get("value", "")) for e in container.get("env") or []})
        env["PXPOOL_STANDIN_POD"] = pod.manifest["metadata"]["uid"]
        pool = pod.manifest["metadata"]["labels"].get("pxpool.io/pool", "")
        if os.environ.get("PXPOOL_RUNTIME_DIR") and pool:  # for the tests' leak check only
            env["PXPOOL_STANDIN_POOL_DIR"] = os.path.join(os.environ["PXPOOL_RUNTIME_DIR"], pool)
        with open(pod.folder / "log", "wb") as log:
            pod.process = subprocess.Popen(
                [local(part) for part in container["command"]],
                cwd=pod.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pod.status.update(
            phase="Running",
            podIP="127.0.0.1",
            startTime=now(),
            containerStatuses=[_container(container, {"running": {"startedAt": now()}})],
        )

    def _wait(self, pod: Pod, reason: str, message: str) -> None:
        container = pod.spec["containers"][0]
        waiting = {"reason": reason, "message": message} if message else {"reason": reason}
        pod.status["containerStatuses"] = [_container(container, {"waiting": waiting})]
        pod.waiting_since = time.monotonic()

    def _begin_delete(self, pod: Pod) -> None:
        if pod.deleting_since is None:
            pod.deleting_since = time.monotonic()
            pod.manifest["metadata"]["deletionTimestamp"] = now()
            pod.kill(signal.SIGTERM)

    # ------------------------------------------------------------ controllers

    def run_controllers(self) -> None:
        while self.running:
            time.sleep(0.1)
            with self.lock:
                for key, pod in list(self.pods.items()):
                    if key[1] != NOTEBOOK:
                        self._kubelet(key, pod)
                for job in self.jobs.values():
                    self._job_controller(job)

    def _kubelet(self, key: tuple[str, str], pod: Pod) -> None:
        statuses = pod.status.get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {}).get("reason")
        if waiting == "ErrImagePull" and time.monotonic() - pod.waiting_since > BACKOFF_AFTER:
            image = pod.spec["containers"][0]["image"]
            self._wait(pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')
        elif waiting == "ContainerCreating" and pod.deleting_since is None:
            self._start(pod)
        if pod.process is not None and not pod.ended and pod.process.poll() is not None:
            self._exited(pod, pod.process.returncode)
        if pod.deleting_since is not None:
            grace = pod.spec.get("terminationGracePeriodSeconds", 30)
            if pod.process is None or pod.ended or pod.process.poll() is not None:
                pod.kill(signal.SIGKILL)  # what is left in the container's cgroup
                shutil.rmtree(pod.folder, ignore_errors=True)
                del self.pods[key]
            elif time.monotonic() - pod.deleting_since > grace:
                pod.kill(signal.SIGKILL)

    def _exited(self, pod: Pod, code: int) -> None:
        code = 128 - code if code < 0 else code
        reason = "OOMKilled" if pod.oom else ("Completed" if code == 0 else "Error")
        pod.kill(signal.SIGKILL)  # the container's cgroup goes with its PID 1
        container = pod.spec["containers"][0]
        ended = {"exitCode": code, "reason": reason, "finishedAt": now()}
        pod.status.update(
            phase="Succeeded" if code == 0 else "Failed",
            containerStatuses=[_container(container, {"terminated": ended})],
        )

    def _job_controller(self, job: dict[str, Any]) -> None:
        state = job["status"]
        if any(c.get("status") == "True" for c in state.get("conditions", [])):
            return
        pods = self._pods_of(job)
        failed = [p for p in pods if p.status.get("phase") == "Failed"]
        state.update(
            active=sum(not p.ended for p in pods),
            failed=len(failed),
            succeeded=sum(p.status.get("phase") == "Succeeded" for p in pods),
        )
        deadline = job["spec"].get("activeDeadlineSeconds")
        if len(failed) > job["spec"].get("backoffLimit", 6):
            self._fail(
                job, pods, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        elif deadline and time.time() - state["started"] > deadline:
            self._fail(
                job, pods, "DeadlineExceeded", "Job was active longer than specified deadline"
            )
        elif pods and state["succeeded"] == len(pods):
            state["conditions"] = [{"type": "Complete", "status": "True"}]

    def _fail(self, job: dict[str, Any], pods: list[Pod], reason: str, message: str) -> None:
        condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
        job["status"]["conditions"] = [condition]
        for pod in pods:
            if not pod.ended:
                self._begin_delete(pod)

    # ------------------------------------------------------------ the tests' controls

    def control(self, what: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            if what == "requests":  # all, or those of one method: {"method": "POST"}
                wanted = (body or {}).get("method")
                return 200, [r for r in self.requests if wanted in (None, r["method"])]
            if what == "objects":
                return 200, {
                    "secrets": [n for _, n in self.secrets],
                    "jobs": [n for _, n in self.jobs],
                    "pods": [n for _, n in self.pods if n != NOTEBOOK],
                }
            if what == "forbid":
                self.forbidden = {(r["verb"], r["resource"]) for r in body or []}
            elif what == "image-fault":
                self.image_faults[body["image"]] = (body["reason"], body.get("message", ""))
            elif what == "oom":
                for pod in self.pods.values():
                    if pod.manifest["metadata"].get("labels", {}).get("job-name") == body["job"]:
                        pod.oom = True
                        pod.kill(signal.SIGKILL)
            else:
                return 404, status(404, "NotFound", what)
        return 200, {}

    def close(self) -> None:
        self.running = False
        with self.lock:
            for pod in self.pods.values():
                pod.kill(signal.SIGKILL)
        shutil.rmtree(self.root / "pods", ignore_errors=True)


def _container(container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": "running" in state,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _matches(item: dict[str, Any], ns: str, selector: dict[str, str]) -> bool:
    metadata = item["metadata"]
    labels = metadata.get("labels") or {}
    return metadata.get("namespace") == ns and all(labels.get(k) == v for k, v in selector.items())
