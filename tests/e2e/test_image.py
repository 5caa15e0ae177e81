"""The image (deploy/build-image.sh): built from Debian packages and the pinned wheels, it
runs `idv --version` and `idv doctor` inside with `buildah run`, as UID 1001 (`podman run`
is refused on the development machine). Slow: several minutes, mostly building wheels.
Needs mmdebstrap, podman and buildah (Debian packages)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/idv-test:latest"
TOOLS = ("mmdebstrap", "podman", "buildah")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.subprocess,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason="needs mmdebstrap, podman and buildah (apt-get install mmdebstrap podman buildah)",
    ),
]


def run_inside(container: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", "run", "--isolation", "chroot", container, "--", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_image_runs_idv_as_uid_1001_and_its_doctor_names_what_to_fix():
    built = subprocess.run(
        [str(ROOT / "deploy" / "build-image.sh"), TAG],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    container = subprocess.run(
        ["buildah", "from", TAG], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        version = run_inside(container, "idv", "--version")
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == "idv 0.1.0"
        assert run_inside(container, "id", "-u").stdout.strip() == "1001"
        # Production with no database or key: every failure named with what to fix.
        doctor = subprocess.run(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--env",
                "IDV_ENV=production",
                "--env",
                "IDV_DATABASE_URL=postgresql://idv@127.0.0.1:1/idv",
                container,
                "--",
                "idv",
                "doctor",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert doctor.returncode == 1, doctor.stderr
        report = json.loads(doctor.stdout)
        failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
        assert "settings" in failed and failed["settings"]["fix"]
        assert "database" in failed and failed["database"]["setting"] == "IDV_DATABASE_URL"
        # The install is not the process's to change (the compose file also mounts the root
        # read-only, which `buildah run` cannot).
        wrote = run_inside(container, "sh", "-c", "touch /opt/idv/x 2>/dev/null; echo $?")
        assert wrote.stdout.strip() != "0"
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
