"""The ``[kubernetes]`` table read into :class:`KubernetesSettings`.

Quantities are read as Kubernetes reads them (``500m`` CPU; ``G`` is 10^9 bytes and
``Gi`` 2^30, unlike the batch ``memory`` key, which follows SLURM), so what a pod
asks for is what the profile says; tolerations are written as ``kubectl taint``
writes taints. Every error names the source, the key and an example.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import ProfileValidationError
from .schema import parse_walltime
from .settings import KubernetesSettings, Toleration

__all__ = ["kubernetes_settings", "parse_cpu", "parse_quantity", "EFFECTS"]

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_CPU_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<milli>m?)$")
_QUANTITY_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_UNITS = {
    "": 1,
    **{u: 1000**i for i, u in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    **{u: 1024**i for i, u in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
}
_TOLERATION_RE = re.compile(r"^(?P<key>[^=:\s]+)(?:=(?P<value>[^:\s]*))?(?::(?P<effect>\w+))?$")


def parse_cpu(text: str, source: str, where: str) -> int:
    """'500m', '2', '0.5' to millicores."""
    match = _CPU_RE.match(text.strip())
    if not match or float(match["n"]) <= 0:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read CPU {text!r}; write cores or millicores, e.g. '2' or '500m'",
        )
    number = float(match["n"])
    return round(number if match["milli"] else number * 1000)


def parse_quantity(text: str, source: str, where: str) -> int:
    """'1Gi', '512Mi', '2G' to bytes, as Kubernetes reads memory."""
    match = _QUANTITY_RE.match(text.strip())
    if not match or float(match["n"]) <= 0:
        raise ProfileValidationError(
            source,
            where,
            f"cannot read memory {text!r}; write a Kubernetes quantity, e.g. '512Mi' or '4Gi'",
        )
    return int(float(match["n"]) * _UNITS[match["unit"] or ""])


def parse_toleration(text: str, source: str, where: str) -> Toleration:
    """``key``, ``key:Effect``, ``key=value`` or ``key=value:Effect``."""
    match = _TOLERATION_RE.match(text.strip())
    effect = (match["effect"] or "") if match else ""
    if not match or (effect and effect not in EFFECTS):
        raise ProfileValidationError(
            source,
            where,
            f"cannot read toleration {text!r}; write 'key=value:Effect' or 'key:Effect' "
            f"(Effect one of {', '.join(EFFECTS)}), e.g. 'nvidia.com/gpu:NoSchedule'",
        )
    if match["value"] is None:
        return Toleration(match["key"], "Exists", "", effect)
    return Toleration(match["key"], "Equal", match["value"], effect)


def kubernetes_settings(values: dict[str, Any], origins: Mapping[str, str]) -> KubernetesSettings:
    """Checked values of the ``[kubernetes]`` table (types already checked by the schema)."""

    def where(key: str) -> tuple[str, str]:
        return origins.get(key, "(defaults)"), f"kubernetes.{key}"

    found = dict(values)
    found["cpu_millis"] = parse_cpu(found.get("cpu", "1"), *where("cpu"))
    if found.get("cpu_limit"):
        found["cpu_limit_millis"] = parse_cpu(found["cpu_limit"], *where("cpu_limit"))
    found["memory_bytes"] = parse_quantity(found.get("memory", "1Gi"), *where("memory"))
    if found.get("memory_limit"):
        found["memory_limit_bytes"] = parse_quantity(found["memory_limit"], *where("memory_limit"))
        if found["memory_limit_bytes"] < found["memory_bytes"]:
            raise ProfileValidationError(
                *where("memory_limit"),
                f"{found['memory_limit']!r} is below the request memory = "
                f"{found.get('memory', '1Gi')!r}; Kubernetes refuses such a pod. Raise it or "
                "leave it empty (the limit is then the request)",
            )
    if found.get("walltime"):
        found["walltime_seconds"] = parse_walltime(found["walltime"], *where("walltime"))
    if "tolerations" in found:
        source, key = where("tolerations")
        found["tolerations"] = tuple(
            parse_toleration(text, source, f"{key}[{i}]")
            for i, text in enumerate(found["tolerations"])
        )
    if "node_selector" in found:
        found["node_selector"] = MappingProxyType(dict(found["node_selector"]))
    return KubernetesSettings(**found)
