"""A profile sent to the nodes of a Ray cluster that do not have it at the driver's path.

Every actor reads the profile itself. Where some node lacks it (no shared storage, no copy), the driver puts the
profile's files into the cluster's object store, once each; the first actor of such a node writes them into one
local directory (written aside and renamed into place, so the node's other actors find it whole or not at all),
and the driver removes the copies when the replay ends. Nodes that have the profile read their own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ShippedProfile:
    """The profile's files in the object store: (path inside the profile, object reference) each."""

    token: str
    files: list[tuple[str, Any]]

    @property
    def local_path(self) -> Path:
        """Where a node keeps its copy."""
        return Path(tempfile.gettempdir()) / f"membench-profile-{self.token}"


def ship_where_missing(ray: Any, profile: Path, node_ids: list[str]) -> ShippedProfile | None:
    """Puts the profile's files into the object store if a node in `node_ids` lacks `profile`; None if none does."""
    found = ray.get([_on_node(ray, _has_profile, node).remote(str(profile)) for node in node_ids])
    if all(found):
        return None
    files = sorted(path for path in profile.rglob("*") if path.is_file())  # a profile is a directory
    return ShippedProfile(token=uuid.uuid4().hex, files=[
        (str(path.relative_to(profile)), ray.put(path.read_bytes())) for path in files])


def materialize(ray: Any, shipped: ShippedProfile) -> Path:
    """This node's copy of the shipped profile, made by the first actor that needs it."""
    target = shipped.local_path
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-"))
        for relative, reference in shipped.files:
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(ray.get(reference))
        try:
            staging.rename(target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another actor of this node was first
    return target


def remove_copies(ray: Any, shipped: ShippedProfile, node_ids: list[str]) -> None:
    ray.get([_on_node(ray, _remove, node).remote(str(shipped.local_path)) for node in node_ids])


def _on_node(ray: Any, function: Any, node: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(num_cpus=0)(function).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))


def _has_profile(path: str) -> bool:
    return Path(path).exists()


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
