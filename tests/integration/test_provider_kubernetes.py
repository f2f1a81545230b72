"""The kubernetes provider end to end, against a STAND-IN Kubernetes API server.

No Kubernetes control plane can be installed on the test machine (no kube-apiserver in
Debian 12 or in the registries' ordinary packages, and no container image can be
pulled). So the official Kubernetes Python client, as pxpool uses it, talks to
tests/standins/fake_kube_api.py: a small HTTP server that answers the REST calls in
the API's own JSON, validates every object against the Kubernetes OpenAPI schema,
runs each pod's command as a local process with its Secret mounted as files, and
answers with Kubernetes' failure reasons (Unschedulable, ErrImagePull/ImagePullBackOff,
CreateContainerConfigError, OOMKilled, RBAC's 403, a Job's DeadlineExceeded). What is
tested is pxpool's side: the manifests, the API calls, the failure reports, the
cleanup. Scheduling, image pulls, networking between real pods and RBAC themselves
are the stand-in's imitation, not a cluster's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pxpool
from pxpool.engines.errors import KubernetesForbidden, PodFailedError

from .provider_suite import ProviderSuite

pytest.importorskip("kubernetes", reason="the kubernetes provider needs `pip install kubernetes`")
pytestmark = [pytest.mark.integration]

SERVER = Path(__file__).parents[1] / "standins" / "fake_kube_api.py"
NOTEBOOK_IMAGE = "standin.local/pxpool-notebook:py3.11"
FAST_FAILURE = 20.0  # seconds: a failure Kubernetes names is reported well before start_timeout
RUNNING: list[KubeStandin] = []  # the module's stand-in, for the suite's leftovers()
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster: {{server: "http://127.0.0.1:{port}"}}
users:
- name: standin
  user: {{token: standin-token}}
contexts:
- name: standin
  context: {{cluster: standin, user: standin, namespace: jupyter}}
current-context: standin
"""


class KubeStandin:
    """The running stand-in: its address and its test controls."""

    def __init__(self, port: int, state: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.state = state

    def control(self, what: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/standin/{what}", data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def objects(self) -> dict[str, list[str]]:
        return dict(self.control("objects"))

    def leftovers(self) -> list[str]:
        return [f"{kind} {name}" for kind, names in self.objects().items() for name in names]

    def created(self, kind: str) -> list[dict[str, Any]]:
        return [
            r["body"]
            for r in self.control("requests", {"method": "POST"})
            if r["path"].endswith(f"/{kind}")
        ]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    state = tmp_path_factory.mktemp("kube-standin")
    with open(state / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(SERVER), str(state)], stdout=subprocess.DEVNULL, stderr=log
        )
    deadline = time.monotonic() + 30
    while not (state / "port").exists():
        assert server.poll() is None, (state / "server.log").read_text()
        assert time.monotonic() < deadline, "the stand-in API server did not start in 30 s"
        time.sleep(0.05)
    port = int((state / "port").read_text())
    (state / "kubeconfig").write_text(KUBECONFIG.format(port=port))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KUBECONFIG", str(state / "kubeconfig"))
            patch.setenv(
                "PXPOOL_POD_NAME", "notebook-0"
            )  # the notebook's pod, as HOSTNAME names it
            patch.setenv("PXPOOL_POD_IP", "127.0.0.1")
            patch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
            yield KubeStandin(port, state)
    finally:  # the stand-in kills its pods' processes and removes their folders
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert not (state / "pods").exists(), "the stand-in left pod folders (mounted Secrets)"


class TestKubernetes(ProviderSuite):
    @pytest.fixture(scope="class")
    def profile_overrides(self, kube: KubeStandin) -> tuple[str, dict[str, Any]]:
        RUNNING.append(kube)
        # restart on-failure: pxpool, not Kubernetes (backoffLimit 0), replaces engines;
        # encrypt: what the README recommends on a shared pod network
        settings = {"start_timeout": 60, "stop_timeout": 20, "restart": "on-failure"}
        return ("kubernetes", {**settings, "encrypt": True})

    def leftovers(self, pool: pxpool.Pool) -> list[str]:
        """Secrets, Jobs and pods the stand-in still holds after the pool's stop."""
        return RUNNING[-1].leftovers()

    def test_one_indexed_job_per_engine_set_owned_by_the_notebook_pod(
        self, pool: pxpool.Pool, kube: KubeStandin
    ) -> None:
        jobs = [
            j
            for j in kube.created("jobs")
            if j["metadata"]["labels"]["pxpool.io/pool"] == pool.name
        ]
        assert len(jobs) >= self.engines
        spec = jobs[0]["spec"]
        assert (spec["completionMode"], spec["backoffLimit"]) == ("Indexed", 0)
        owner = jobs[0]["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("Pod", "notebook-0")
        container = spec["template"]["spec"]["containers"][0]
        assert container["image"] == NOTEBOOK_IMAGE  # the notebook's own image by default
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30

    def test_connection_info_travels_in_a_secret_never_in_the_job(
        self, pool: pxpool.Pool, kube: KubeStandin
    ) -> None:
        (secret,) = [s for s in kube.created("secrets") if pool.name in s["metadata"]["name"]]
        connection = json.loads(secret["stringData"]["engine.json"])
        jobs = [j for j in kube.created("jobs") if pool.name in j["metadata"]["name"]]
        assert connection["key"] and all(connection["key"] not in json.dumps(j) for j in jobs)
        url_files = pool.view().apply_sync(_url_file)
        assert [json.loads(text)["key"] for _, text in url_files] == [connection["key"]] * 2
        assert all(path.endswith("/var/run/pxpool/engine.json") for path, _ in url_files)

    def test_health_names_each_engine_job(self, pool: pxpool.Pool) -> None:
        jobs = pool.health().set_index("engine_id")["job_id"]
        assert all(str(jobs[i]).startswith(f"pxpool-{pool.name}-pods-{i}-") for i in pool.ids)

    def test_doctor_compares_the_image_python_and_packages_with_the_notebooks(
        self, pool: pxpool.Pool
    ) -> None:
        """The stand-in's pods run this machine's Python: no Python or package row."""
        frame = pool.doctor(packages=["numpy"], env=[], show=False)
        assert not frame[~frame["check"].isin(["cwd", "executable"])].to_dict("records")

    def test_oom_killed_pod_is_reported_as_out_of_memory_and_replaced(
        self, pool: pxpool.Pool, kube: KubeStandin
    ) -> None:
        job = pool.provider.job_id_of(1)
        before = pool.view(1).apply_sync(_url_file)
        kube.control("oom", {"job": job})
        killed = time.monotonic()
        while 1 not in pool.engine_deaths() and time.monotonic() < killed + 20:
            time.sleep(0.05)
        assert pool.engine_deaths()[1].startswith("out of memory: Kubernetes killed pod")
        assert "OOMKilled" in pool.engine_deaths()[1]
        assert 0 not in pool.engine_deaths()  # the positive control: engine 0's pod runs on
        while (1 not in pool.ids or pool.core.replacing) and time.monotonic() < killed + 40:
            time.sleep(0.05)  # pxpool's supervisor starts a new Job for engine 1
        assert pool.ids == [0, 1] and pool.provider.job_id_of(1) not in (None, job)
        assert pool.view(1).apply_sync(_url_file)[0] != before[0]  # another pod's mount


def _url_file_reader() -> Callable[[], tuple[str, str]]:
    """A function for engines: (path, text) of the connection file the engine read. It
    names ``__main__`` as its module: ipyparallel imports a function's module on the
    engine, and this one's would import the Kubernetes client there (seconds)."""

    def url_file() -> tuple[str, str]:
        import sys

        (arg,) = [a for a in sys.argv if a.startswith("--IPEngine.url_file=")]
        path = arg.split("=", 1)[1]
        with open(path) as handle:
            return path, handle.read()

    url_file.__module__ = "__main__"
    return url_file


_url_file = _url_file_reader()


def _start_fails(kube: KubeStandin, error: type[Exception], match: str, **overrides: Any) -> float:
    """Start a one-engine pool that must fail with ``error``; the seconds it took.
    Whatever the start created is gone after its stop."""
    pool = pxpool.Pool.from_profile("kubernetes", engines=1, start_timeout=60, **overrides)
    started = time.monotonic()
    try:
        with pytest.raises(error, match=match):
            pool.start_sync()
        return time.monotonic() - started
    finally:
        pool.stop_sync()
        assert kube.leftovers() == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpus": 1}, r"Unschedulable \(0/1 nodes are available: 1 Insufficient nvidia.com/gpu"),
        (
            {"node_selector": "pool=gpu"},
            r"Unschedulable .*didn't match Pod's node affinity/selector",
        ),
    ],
    ids=["gpus", "node_selector"],
)
def test_unschedulable_pod_fails_fast_with_the_schedulers_message(
    kube: KubeStandin, overrides: dict[str, Any], message: str
) -> None:
    assert _start_fails(kube, PodFailedError, message, **overrides) < FAST_FAILURE


def test_unschedulable_wait_gives_an_autoscaler_time_before_failing(kube: KubeStandin) -> None:
    took = _start_fails(kube, PodFailedError, "Unschedulable", gpus=1, unschedulable_wait=2)
    assert 2 <= took < FAST_FAILURE


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        (
            "ErrImagePull",
            "manifest unknown",
            r"(ErrImagePull|ImagePullBackOff).*image_pull_secrets",
        ),
        (
            "CreateContainerConfigError",
            'secret "db-password" not found',
            r'CreateContainerConfigError \(secret "db-password" not found\)',
        ),
    ],
    ids=["image-pull", "container-config"],
)
def test_container_that_cannot_start_fails_fast_with_its_reason(
    kube: KubeStandin, reason: str, message: str, expected: str
) -> None:
    image = f"registry.invalid/{reason.lower()}:1"
    kube.control("image-fault", {"image": image, "reason": reason, "message": message})
    assert _start_fails(kube, PodFailedError, expected, image=image) < FAST_FAILURE


def test_forbidden_request_names_the_role_the_service_account_needs(kube: KubeStandin) -> None:
    kube.control("forbid", [{"verb": "create", "resource": "jobs"}])
    try:
        _start_fails(
            kube,
            KubernetesForbidden,
            r"(?s)forbids this service account to create jobs in namespace 'jupyter'.*"
            r"cannot create resource \"jobs\".*kind: Role.*- batch",
        )
    finally:
        kube.control("forbid", [])


def test_no_image_and_no_notebook_pod_is_a_clear_profile_error(
    kube: KubeStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PXPOOL_POD_NAME", "not-a-pod")
    _start_fails(
        kube,
        pxpool.ProfileError,
        r"sets no kubernetes.image .*no pod 'not-a-pod' in namespace 'jupyter'.*image=",
    )


def test_walltime_sigterms_the_pods_and_their_engines_drain(kube: KubeStandin) -> None:
    """activeDeadlineSeconds ends the Job: its pods get SIGTERM, as on an eviction, and
    the engines drain (pxpool's walltime drain) within terminationGracePeriodSeconds."""
    with pxpool.Pool.from_profile(
        "kubernetes", engines=1, start_timeout=60, k8s_walltime="0:00:04", drain_time=2
    ) as pool:
        manifest = [j for j in kube.created("jobs") if pool.name in j["metadata"]["name"]][0]
        assert manifest["spec"]["activeDeadlineSeconds"] == 4
        deadline = time.monotonic() + 30
        while 0 not in pool.engine_deaths() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.engine_deaths()[0] == "stopped (walltime): drained on SIGTERM"
    assert kube.leftovers() == []


def test_pool_stopped_by_another_process_leaves_nothing(kube: KubeStandin) -> None:
    """A detached pool (``pxpool start``) stopped through its record, as ``pxpool stop``
    in another process does: the Jobs come from the cluster file, the Secret from the
    pool's name, with a provider that started nothing itself."""
    profile = pxpool.load_profile("kubernetes", engines=1, start_timeout=60)
    started = pxpool.Pool(profile, "k8s-detached", detached=True)
    started.start_sync()
    started.disconnect()
    assert kube.objects()["secrets"] == ["pxpool-k8s-detached-connection"]
    pxpool.Pool.attach("k8s-detached").stop_sync()
    assert kube.leftovers() == []


def test_job_script_shows_the_notebook_pods_image_and_owner(kube: KubeStandin) -> None:
    import yaml

    secret, job = yaml.safe_load_all(pxpool.Pool.from_profile("kubernetes").job_script())
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == NOTEBOOK_IMAGE
    for made in (secret, job):
        assert made["metadata"]["ownerReferences"][0]["name"] == "notebook-0"
    assert kube.leftovers() == []  # only read
