"""Engines in Kubernetes pods, for notebooks that run inside a cluster.

- :mod:`.manifests`: the Secret and the Indexed Jobs, as plain dicts
- :mod:`.api`: the official Kubernetes Python client, the few calls made
- :mod:`.notebook`: the notebook's own pod (image, owner, IP) and the controller on its IP
- :mod:`.job`: one engine set as one Job, watched for Kubernetes' failure reasons
- :mod:`.reasons`: which pod and Job states are failures, in Kubernetes' words
- :mod:`.rbac`: the Role the notebook's service account needs (``pxpool k8s-rbac``)
- :mod:`.errors`: the provider's errors
- :mod:`.provider`: :class:`KubernetesProvider`, tying them together
"""

from __future__ import annotations

from .provider import KubernetesProvider
from .rbac import k8s_role_yaml, role_yaml

__all__ = ["KubernetesProvider", "k8s_role_yaml", "role_yaml"]
