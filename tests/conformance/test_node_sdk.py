"""The official `openai` Node SDK (pinned in tests/node/package.json) against the real binary:
responses.create, retrieve and a streamed response with gapless sequence numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import MASTER_KEY, ROOT, standard_config

NODE_DIR = ROOT / "tests" / "node"


@pytest.fixture(scope="module")
def node_ready():
    node = shutil.which("node")
    if node is None:
        pytest.skip("!!! SKIPPED: node is not installed; the Node SDK conformance test needs Node 18+")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        # scripts/test.sh runs `npm ci` first; this covers a bare pytest run.
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)
    return node


def test_node_sdk_create_and_stream(node_ready, gateway_factory, mock_upstream):
    gw = gateway_factory(standard_config(mock_upstream.url))
    out = subprocess.run(
        [node_ready, "responses.mjs"],
        cwd=NODE_DIR,
        env={**os.environ, "SWITCHYARD_URL": gw.url, "SWITCHYARD_KEY": MASTER_KEY, "MODEL": "gpt-mock"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["events"] > 5 and result["text"]
