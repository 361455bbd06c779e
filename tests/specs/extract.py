"""Cuts the operations the conformance suite checks (and every schema they reference) out of OpenAI's
OpenAPI document, so the repository carries a small, reviewable slice of it.

    python tests/specs/extract.py ../shared/specs/openai-openapi.yaml > tests/specs/responses-openapi.json
"""

import json
import sys

import yaml

OPERATIONS = [("/responses", "post")]


def refs(node, out):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/components/"):
            out.add(r)
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    paths = {}
    seen, todo = set(), set()
    for path, method in OPERATIONS:
        op = dict(spec["paths"][path][method])
        op.pop("x-oaiMeta", None)
        paths.setdefault(path, {})[method] = op
        refs(op, todo)
    components = {}
    while todo:
        r = todo.pop()
        if r in seen:
            continue
        seen.add(r)
        _, _, kind, name = r.split("/", 3)
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        found = set()
        refs(node, found)
        todo |= found - seen
    components["securitySchemes"] = spec["components"].get("securitySchemes", {})
    out = {
        "openapi": spec["openapi"],
        "info": {**spec["info"], "description": "A slice of OpenAI's OpenAPI document (see openai-openapi.LICENSE)."},
        "servers": [{"url": "http://127.0.0.1/v1"}],
        "security": spec.get("security", []),
        "paths": paths,
        "components": components,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


main()
