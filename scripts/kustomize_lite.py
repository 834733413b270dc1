#!/usr/bin/env python3
"""A small kustomize renderer for machines without kubectl/kustomize.

    python scripts/kustomize_lite.py deploy/overlays/dev > dev.yaml

It understands exactly what deploy/ uses, and refuses anything else (so it never renders
something different from `kubectl kustomize` without saying so):

  resources   files (multi-document YAML) and folders holding a kustomization.yaml
  patches     `- path: FILE` or `- patch: |-` strategic-merge patches that name their target
              by apiVersion/kind/metadata.name; `$patch: delete` on a whole object; `null`
              deletes a field; lists with a Kubernetes merge key (containers, env, volumes,
              volumeMounts, ports, ...) merge by that key, other lists replace
  namespace   set on every namespaced object
  images      name -> newName / newTag / digest in pod templates
  replicas    name -> count on Deployments / StatefulSets / ReplicaSets

scripts/validate-deploy renders with kubectl when it exists and, then, also with this
renderer and compares the two, so the fallback is tested wherever kubectl is present.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches", "namespace", "images", "replicas"}

CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService",
    "RuntimeClass", "CSIDriver", "VolumeAttachment",
}

# list field name -> merge key (from the Kubernetes API's x-kubernetes-patch-merge-key)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}


class RenderError(Exception):
    pass


def _load_yaml_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def _kustomization_file(folder: str) -> str:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    raise RenderError(f"{folder}: no kustomization.yaml")


def _key(obj: dict) -> tuple[str, str]:
    return obj.get("kind", ""), (obj.get("metadata") or {}).get("name", "")


def _list_merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        if "containerPort" in sample:
            return "containerPort"
        if "port" in sample:
            return "port"
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Merge `patch` into `base` (both parsed YAML) the way a strategic-merge patch does for
    the cases deploy/ uses. Returns the merged value; `base` is not modified."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise RenderError(f"unsupported patch directive {k!r}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = _strip_nulls(copy.deepcopy(v))
        return out
    if isinstance(patch, list) and isinstance(base, list):
        key = _list_merge_key(field, base + patch)
        if key is None:
            return _strip_nulls(copy.deepcopy(patch))
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(f"list {field!r}: patch item without merge key {key!r}")
            idx = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    out.pop(idx)
            elif idx is None:
                out.append(_strip_nulls(copy.deepcopy(item)))
            else:
                out[idx] = strategic_merge(out[idx], item, field)
        return out
    return _strip_nulls(copy.deepcopy(patch))


def _strip_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_nulls(x) for x in v]
    return v


def _apply_patch(objs: list[dict], patch: dict, where: str) -> list[dict]:
    kind, name = _key(patch)
    matches = [i for i, o in enumerate(objs) if _key(o) == (kind, name)]
    if not matches:
        raise RenderError(f"{where}: patch target {kind}/{name} not found")
    if len(matches) > 1:
        raise RenderError(f"{where}: patch target {kind}/{name} is ambiguous")
    i = matches[0]
    if patch.get("$patch") == "delete":
        return objs[:i] + objs[i + 1:]
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    merged = strategic_merge(objs[i], body)
    return objs[:i] + [merged] + objs[i + 1:]


def _split_image(image: str) -> tuple[str, str, str]:
    """-> (name, tag, digest); a registry port ('host:5000/x') is not a tag."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def _pod_specs(obj: dict) -> list[dict]:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in POD_TEMPLATE_KINDS:
        return [((spec.get("template") or {}).get("spec") or {})]
    if kind == "CronJob":
        return [(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}]
    if kind == "Pod":
        return [spec]
    return []


def _apply_images(objs: list[dict], images: list[dict]) -> None:
    for rule in images:
        for obj in objs:
            for pod in _pod_specs(obj):
                for field in ("initContainers", "containers"):
                    for c in pod.get(field) or []:
                        name, tag, digest = _split_image(c.get("image", ""))
                        if name != rule["name"]:
                            continue
                        new_name = rule.get("newName", name)
                        if "digest" in rule:
                            c["image"] = f"{new_name}@{rule['digest']}"
                        elif "newTag" in rule:
                            c["image"] = f"{new_name}:{rule['newTag']}"
                        elif digest:
                            c["image"] = f"{new_name}@{digest}"
                        elif tag:
                            c["image"] = f"{new_name}:{tag}"
                        else:
                            c["image"] = new_name


def render(folder: str) -> list[dict]:
    kfile = _kustomization_file(folder)
    k = yaml.safe_load(open(kfile, encoding="utf-8")) or {}
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{kfile}: fields {sorted(unknown)} are not supported by kustomize_lite; use kubectl kustomize")

    objs: list[dict] = []
    for res in k.get("resources") or []:
        path = os.path.normpath(os.path.join(folder, res))
        if os.path.isdir(path):
            objs.extend(render(path))
        elif os.path.isfile(path):
            objs.extend(_load_yaml_docs(path))
        else:
            raise RenderError(f"{kfile}: resource {res} not found")
    seen = set()
    for o in objs:
        if _key(o) in seen:
            raise RenderError(f"{kfile}: duplicate resource {_key(o)}")
        seen.add(_key(o))

    for p in k.get("patches") or []:
        if set(p) - {"path", "patch"}:
            raise RenderError(f"{kfile}: patch options {sorted(set(p) - {'path', 'patch'})} not supported (target/options)")
        if "path" in p:
            where = os.path.join(folder, p["path"])
            docs = _load_yaml_docs(where)
        else:
            where = f"{kfile} (inline patch)"
            docs = [d for d in yaml.safe_load_all(p["patch"]) if d is not None]
        for d in docs:
            objs = _apply_patch(objs, d, where)

    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns

    _apply_images(objs, k.get("images") or [])

    for r in k.get("replicas") or []:
        hit = False
        for o in objs:
            if o.get("kind") in SCALABLE_KINDS and _key(o)[1] == r["name"]:
                o.setdefault("spec", {})["replicas"] = int(r["count"])
                hit = True
        if not hit:
            raise RenderError(f"{kfile}: replicas target {r['name']} not found")
    return objs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        objs = render(argv[1])
    except (RenderError, OSError, yaml.YAMLError) as exc:
        print(f"kustomize_lite: {exc}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objs, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
