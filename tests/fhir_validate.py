#!/usr/bin/env python3
"""Strict FHIR R4 (4.0.1) validation of resources the server emitted.

Reads a JSON array of resources on stdin; validates each with fhir.resources 6.4.0 (the R4
line, pydantic 1), and for Bundles each entry's resource as well. Prints one line per
failure and exits 1 if any failed; prints `ok N` otherwise. scripts/fhir-venv installs it.
"""
import json
import sys

import fhir.resources
from fhir.resources import get_fhir_model_class

assert fhir.resources.__version__ == "6.4.0", f"need fhir.resources 6.4.0 (R4), got {fhir.resources.__version__}"


def validate(obj, where, errors):
    kind = obj.get("resourceType") if isinstance(obj, dict) else None
    if not kind:
        errors.append(f"{where}: no resourceType")
        return 0
    try:
        get_fhir_model_class(kind).parse_obj(obj)
    except Exception as e:  # noqa: BLE001 - every validation failure is reported
        errors.append(f"{where} {kind}: {e}")
        return 1
    n = 1
    if kind == "Bundle":
        for i, entry in enumerate(obj.get("entry", [])):
            n += validate(entry.get("resource"), f"{where}.entry[{i}]", errors)
    return n


def main():
    items = json.load(sys.stdin)
    if not isinstance(items, list):
        items = [items]
    errors = []
    n = sum(validate(obj, f"[{i}]", errors) for i, obj in enumerate(items))
    for e in errors:
        print(e)
    if errors:
        sys.exit(1)
    print(f"ok {n}")


if __name__ == "__main__":
    main()
