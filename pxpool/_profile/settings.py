"""What a validated profile holds: frozen dataclasses, one per profile section.

Kept apart from :mod:`pxpool.profile`, which reads, layers and validates the TOML
into these; everything else in pxpool only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "Profile",
    "ControllerSettings",
    "EngineSettings",
    "Timeouts",
    "SSHHost",
    "SSHSettings",
    "BatchSettings",
    "MPISettings",
    "KubernetesSettings",
    "Toleration",
    "ProfileInfo",
]


@dataclass(frozen=True)
class ControllerSettings:
    ip: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    location: str = "local"  # batch providers: "job" runs the controller inside a job
    heartbeat_ms: int = 500  # engines join at once either way; short notices silent ones sooner
    encrypt: bool = False  # CurveZMQ on every controller socket (ipyparallel's enable_curve)
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineSettings:
    python: str = ""  # "": the interpreter running pxpool
    work_dir: str = ""  # "": the current directory
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prologue: tuple[str, ...] = ()  # shell lines run before the engine (batch and ssh)
    args: tuple[str, ...] = ()  # extra ipengine arguments
    memory_limit: str = ""  # per engine, e.g. "512M": a cgroup locally, else RLIMIT_AS
    memory_limit_bytes: int | None = None
    max_result_size: str = "1G"  # largest apply result an engine sends; "0": no limit
    max_result_bytes: int = 1024**3
    # engines forked from one preloaded process per host (Linux); False: each engine
    # runs the engine command and imports everything itself
    fork_server: bool = True
    preload: tuple[str, ...] = ()  # modules imported once, before engines are forked


@dataclass(frozen=True)
class Timeouts:
    start: float = 60.0  # controller up and all engines registered
    stop: float = 15.0
    submit: float = 30.0  # one batch submit command


@dataclass(frozen=True)
class SSHHost:
    host: str
    port: int = 22
    user: str = ""
    engines: int = 1
    python: str = ""
    work_dir: str = ""
    activate: tuple[str, ...] = ()


@dataclass(frozen=True)
class SSHSettings:
    hosts: tuple[SSHHost, ...] = ()
    identity_file: str = ""
    options: tuple[str, ...] = ()
    command: str = "ssh"
    tunnel: bool = True  # engines reach the controller through reverse SSH tunnels


@dataclass(frozen=True)
class BatchSettings:
    queue: str = ""  # SLURM partition, or SGE/PBS/LSF queue
    account: str = ""
    walltime: str = ""
    walltime_seconds: int | None = None
    memory: str = ""
    memory_bytes: int | None = None
    cores_per_engine: int = 1
    engines_per_job: int = 1
    directives: tuple[str, ...] = ()
    launcher: str = "plain"
    pe: str = ""  # SGE parallel environment
    walltime_signal: int = 60  # seconds before the walltime engines are told to drain; 0: off
    replace_on_walltime: bool = False  # submit a replacement job when engines start draining


@dataclass(frozen=True)
class MPISettings:
    mpiexec: str = "mpiexec"
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Toleration:
    """One pod toleration, read from ``key[=value][:Effect]`` (kubectl taint's syntax)."""

    key: str
    operator: str = "Exists"  # "Equal" when a value is given
    value: str = ""
    effect: str = ""  # "": every effect


@dataclass(frozen=True)
class KubernetesSettings:
    """Engine pods: resources are per engine, a pod asks for ``engines_per_pod`` times them."""

    namespace: str = ""  # "": the notebook pod's namespace
    image: str = ""  # "": the notebook pod's own image
    image_pull_policy: str = "IfNotPresent"
    cpu: str = "1"  # request per engine, Kubernetes quantity ("500m", "2")
    cpu_limit: str = ""  # "": no CPU limit (no throttling)
    memory: str = "1Gi"  # request per engine
    memory_limit: str = ""  # "": the request (the engine is OOM-killed above it)
    cpu_millis: int = 1000
    cpu_limit_millis: int | None = None
    memory_bytes: int = 2**30
    memory_limit_bytes: int | None = None
    gpus: int = 0  # nvidia.com/gpu per engine
    node_selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tolerations: tuple[Toleration, ...] = ()
    service_account: str = ""  # "": the namespace's default service account
    image_pull_secrets: tuple[str, ...] = ()
    walltime: str = ""  # the Job's activeDeadlineSeconds; "": none
    walltime_seconds: int | None = None
    engines_per_pod: int = 1
    pods_per_job: int = 1  # a failed pod ends its whole Job (backoffLimit 0)
    drain_time: int = 30  # terminationGracePeriodSeconds: SIGTERM, drain, then SIGKILL
    unschedulable_wait: int = 0  # seconds an Unschedulable pod may wait (an autoscaler)


@dataclass(frozen=True)
class Profile:
    """A validated profile; build one with :func:`load_profile`."""

    name: str
    provider: str = "local"
    engines: int = 0  # 0: one per CPU core (local); batch and ssh need a number
    description: str = ""
    source: str = "(defaults)"
    restart: str = "never"  # "on-failure": a dead engine is replaced under the same id
    # a crash loop: max_restarts replacements of one engine id that failed to come up
    # within restart_window seconds; pxpool then stops replacing it
    max_restarts: int = 5
    restart_window: float = 60.0
    restart_backoff: float = 0.1  # seconds before a replacement, doubling per failed one
    idle_timeout: float = 0.0  # seconds without work before the engines are released; 0: never
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    ssh: SSHSettings = field(default_factory=SSHSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    mpi: MPISettings = field(default_factory=MPISettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    origin: str  # "built-in", "user" or "user over built-in"
    path: str
    description: str
