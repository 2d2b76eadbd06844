"""Validates the YAML files `dynabed k8s render` wrote (tests/k8s.rs runs it).

  validate.py CRD_DIR FILE...
Kubernetes objects go through `kubernetes-validate --strict` (each must pass a known schema); Chaos Mesh objects
through the openAPIV3Schema of their CRD in CRD_DIR, strictly: a field the schema does not name is an error, as the
API server would prune it. Prints every object as one JSON list on success; exits 1 with the reasons otherwise.
"""
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

CHAOS_GROUP = "chaos-mesh.org/"


def crd_schemas(crd_dir):
    schemas = {}
    for path in sorted(crd_dir.glob("*.crd.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def strict(schema):
    """The schema with every object that lists its properties closed to others."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def main():
    crd_dir, files = Path(sys.argv[1]), sys.argv[2:]
    schemas = crd_schemas(crd_dir)
    objects, errors, core = [], [], 0
    for name in files:
        for obj in yaml.safe_load_all(Path(name).read_text()):
            objects.append(obj)
            api, kind = obj.get("apiVersion", ""), obj.get("kind")
            if not api.startswith(CHAOS_GROUP):
                core += 1
                continue
            schema = schemas.get((api, kind))
            if schema is None:
                errors.append(f"{name}: no CRD schema for {api} {kind} in {crd_dir}")
                continue
            for e in jsonschema.Draft7Validator(schema).iter_errors(obj):
                errors.append(f"{name}: {kind} {'/'.join(map(str, e.absolute_path))}: {e.message}")
    run = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *files],
                         capture_output=True, text=True)
    lines = (run.stdout + run.stderr).splitlines()
    passed = sum(" passed for resource " in line for line in lines)
    if run.returncode:
        errors.append(f"kubernetes-validate --strict exited {run.returncode}: " + " | ".join(lines)[:2000])
    if passed != core:
        errors.append(f"kubernetes-validate passed {passed} of {core} Kubernetes objects: " + " | ".join(lines)[:2000])
    if errors:
        sys.exit("\n".join(errors))
    print(json.dumps(objects))


if __name__ == "__main__":
    main()
