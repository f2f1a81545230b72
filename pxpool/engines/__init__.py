"""Where engines run (providers) and how they start inside an allocation (launchers).

``provider_for(profile)`` picks the provider class named by ``profile.provider``;
``controller_alive(name)`` tells whether a pool's controller still runs, also in a
batch job; ``reach``/``reach_url`` say where this process connects to an agent on an
engine (through a local forward for a tunnelled SSH engine on another host).
"""

from __future__ import annotations

from ..errors import ProfileError
from ..profile import Profile
from ._ssh_reach import reach, reach_url
from .base import Provider
from .htcondor import HTCondorProvider
from .kubernetes import KubernetesProvider
from .liveness import controller_alive
from .local import LocalProvider
from .lsf import LSFProvider
from .mpi import MPIProvider
from .pbs import PBSProvider
from .sge import SGEProvider
from .slurm import SlurmProvider
from .ssh import SSHProvider

__all__ = [
    "Provider",
    "LocalProvider",
    "SSHProvider",
    "MPIProvider",
    "provider_for",
    "controller_alive",
    "reach",
    "reach_url",
    "PROVIDER_CLASSES",
]

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    LocalProvider.name: LocalProvider,
    SlurmProvider.name: SlurmProvider,
    LSFProvider.name: LSFProvider,
    HTCondorProvider.name: HTCondorProvider,
    PBSProvider.name: PBSProvider,
    SGEProvider.name: SGEProvider,
    SSHProvider.name: SSHProvider,
    MPIProvider.name: MPIProvider,
    KubernetesProvider.name: KubernetesProvider,
}


def provider_for(profile: Profile) -> Provider:
    try:
        cls = PROVIDER_CLASSES[profile.provider]
    except KeyError:
        raise ProfileError(
            f"Profile {profile.name!r} uses provider {profile.provider!r}, which this pxpool "
            f"version cannot start yet; available: {', '.join(sorted(PROVIDER_CLASSES))}."
        ) from None
    return cls(profile)
