"""A small kustomize, for rendering deploy/kubernetes without kubectl.

kubectl (which embeds kustomize) is not on every machine that runs ``make test``, and no Python
package implements kustomize, so this renders the subset of it the manifests use, and refuses
anything else: a field it does not know would otherwise be ignored where kustomize would apply it.
Where kubectl is installed, tests/deploy/test_kubernetes.py checks that both render the same.

Supported: ``Kustomization`` and ``Component`` files with ``resources`` (files and folders),
``components``, ``namespace``, ``images`` (newName, newTag, digest), ``replicas`` and ``patches``
given as JSON patches (RFC 6902: add, replace, remove), inline or from a file, selected by group,
version, kind, name and an equality ``labelSelector``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FILE = "kustomization.yaml"

_FIELDS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "replicas", "patches"}

# Kinds without a namespace, among those the manifests could hold (kustomize knows them from the
# cluster's schema; any other kind, cert-manager's included, is namespaced).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ClusterIssuer",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
    }
)

_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
_SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})


class KustomizeError(Exception):
    """A kustomization this renderer cannot render (or that kustomize would reject)."""


def build(folder: Path) -> list[Resource]:
    """The resources that ``kubectl kustomize folder`` prints, in the order they were declared."""
    return _build(folder.resolve(), expect="Kustomization", resources=[])


def _load_kustomization(folder: Path, expect: str) -> dict[str, Any]:
    path = folder / KUSTOMIZATION_FILE
    if not path.is_file():
        raise KustomizeError(f"{folder}: no {KUSTOMIZATION_FILE}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if data.get("kind", "Kustomization") != expect:
        raise KustomizeError(f"{path}: kind {data.get('kind')!r}, expected {expect}")
    unknown = set(data) - _FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not implement: {', '.join(sorted(unknown))}")
    return data


def _build(folder: Path, expect: str, resources: list[Resource]) -> list[Resource]:
    """Render ``folder``; a Component's transformations also apply to ``resources`` (those it is added to)."""
    data = _load_kustomization(folder, expect)
    accumulated = list(resources)
    for entry in data.get("resources") or []:
        target = (folder / entry).resolve()
        if target.is_dir():
            accumulated += _build(target, expect="Kustomization", resources=[])
        else:
            accumulated += _read_resources(target)
    for entry in data.get("components") or []:
        accumulated = _build((folder / entry).resolve(), expect="Component", resources=accumulated)
    for patch in data.get("patches") or []:
        _apply_patch(folder, patch, accumulated)
    if "namespace" in data:
        for resource in accumulated:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = data["namespace"]
    for image in data.get("images") or []:
        for resource in accumulated:
            _set_image(resource, image)
    for replicas in data.get("replicas") or []:
        matched = [r for r in accumulated if r["kind"] in _SCALABLE_KINDS and r["metadata"]["name"] == replicas["name"]]
        if not matched:
            raise KustomizeError(f"{folder}: replicas names {replicas['name']!r}, which is no workload")
        for resource in matched:
            resource["spec"]["replicas"] = replicas["count"]
    _check_unique(folder, accumulated)
    return accumulated


def _read_resources(path: Path) -> list[Resource]:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document or "metadata" not in document:
            raise KustomizeError(f"{path}: every document must be an object with kind and metadata")
    return documents


def identity(resource: Resource) -> tuple[str, str, str, str]:
    """(apiVersion's group, kind, namespace, name): what kustomize keeps unique."""
    group = resource["apiVersion"].rpartition("/")[0]
    metadata = resource["metadata"]
    return group, resource["kind"], metadata.get("namespace", ""), metadata["name"]


def _check_unique(folder: Path, resources: list[Resource]) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for resource in resources:
        key = identity(resource)
        if key in seen:
            raise KustomizeError(f"{folder}: {key} is declared twice")
        seen.add(key)


# -- patches -----------------------------------------------------------------------------------


def _selected(resource: Resource, target: dict[str, Any]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    wanted = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "namespace": resource["metadata"].get("namespace", ""),
    }
    unknown = set(target) - {*wanted, "labelSelector"}
    if unknown:
        raise KustomizeError(f"patch target fields not implemented: {', '.join(sorted(unknown))}")
    if any(resource_value != target[field] for field, resource_value in wanted.items() if field in target):
        return False
    labels = resource["metadata"].get("labels") or {}
    for requirement in filter(None, (target.get("labelSelector") or "").split(",")):
        key, equals, value = requirement.partition("=")
        if not equals or key.endswith("!"):
            raise KustomizeError(f"labelSelector {requirement!r}: only key=value requirements are implemented")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _apply_patch(folder: Path, patch: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(patch) - {"target", "patch", "path"}
    if unknown or ("patch" in patch) == ("path" in patch):
        raise KustomizeError(f"{folder}: a patch has a target and either patch or path (got {sorted(patch)})")
    text = patch["patch"] if "patch" in patch else (folder / patch["path"]).read_text(encoding="utf-8")
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{folder}: only JSON patches (a list of operations) are implemented")
    matched = [r for r in resources if _selected(r, patch.get("target") or {})]
    if not matched:
        # kustomize accepts a patch that selects nothing; a typo here would silently do nothing.
        raise KustomizeError(f"{folder}: the patch for {patch.get('target')} selects no resource")
    for resource in matched:
        for operation in operations:
            _json_patch(resource, operation)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _json_patch(document: Resource, operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove), in place."""
    op, parts = operation.get("op"), _pointer(operation.get("path", ""))
    if op not in ("add", "replace", "remove"):
        raise KustomizeError(f"JSON patch op {op!r} is not implemented")
    node: Any = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    leaf = parts[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(node, list):
        index = len(node) if leaf == "-" else int(leaf)
        if op == "add":
            node.insert(index, value)
        elif op == "replace":
            node[index] = value
        else:
            del node[index]
        return
    if op in ("replace", "remove") and leaf not in node:
        raise KustomizeError(f"JSON patch {op} {operation['path']}: no such member")
    if op == "remove":
        del node[leaf]
    else:
        node[leaf] = value


# -- images ------------------------------------------------------------------------------------


def _containers(resource: Resource) -> list[dict[str, Any]]:
    if resource["kind"] not in _POD_TEMPLATE_KINDS:
        return []
    pod = resource["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference (a registry's port is part of the name)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(resource: Resource, image: dict[str, Any]) -> None:
    for container in _containers(resource):
        name, tag, digest = split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{name}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{name}:{image['newTag']}"
        else:
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
