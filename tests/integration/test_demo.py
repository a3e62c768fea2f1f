"""``interest-stream demo`` (what ``make demo`` runs) end to end on the real broker, shortened."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from service_harness import CLI, REPO

pytestmark = pytest.mark.integration


def test_demo_runs_clusters_and_stops_cleanly(kafka_bootstrap):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    done = subprocess.run([*CLI, "demo", "--duration", "12", "--users", "40", "--rate", "150"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "/metrics" in out
    consumed = int(re.search(r"records consumed by the service\s*│\s*([\d,]+)", out).group(1).replace(",", ""))
    users = int(re.search(r"│ users\s*│\s*(\d+)", out).group(1))
    assert consumed > 500 and users > 0
    assert re.search(r"dead-lettered: \w+", out), "the broken demo records are dead-lettered"
    assert re.search(r"service exit code\s*│\s*0", out), "the service stopped cleanly (SIGTERM, exit 0)"
