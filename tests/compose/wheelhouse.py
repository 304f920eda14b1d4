"""The wheelhouse the app image installs from: ``python -m tests.compose.wheelhouse``.

HTTPS from containers fails here, so the Dockerfile installs Python packages from ./wheelhouse
in the build context when it holds wheels (see templates/app.Dockerfile.j2).  This downloads, on
the host, wheels of the project's dependencies and of its build backend (pip builds the project
itself from source in the image) for the image's Python: Debian 12's python3, CPython 3.11 on
glibc 2.36.  A stamp file records what was downloaded; nothing is fetched while it matches.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAMP = ".requirements"
IMAGE_PYTHON = "3.11"  # Debian 12 (bookworm)
IMAGE_GLIBC = 36  # glibc 2.36


def platforms(machine: str) -> list[str]:
    """Every manylinux tag the image's glibc accepts (pip 23 does not expand one tag itself)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(IMAGE_GLIBC, 4, -1)]
    return tags + [f"{legacy}_{machine}" for legacy in ("manylinux2014", "manylinux2010",
                                                          "manylinux1")]


# Extras that a settings file's app.packages may install (settings.asgi.toml: ".[asgi]").
IMAGE_EXTRAS = ("asgi", "redis")  # redis: what the image installs when [redis] is on
# Requirements that hold for the image's Python only: pip download evaluates markers with the
# Python that runs it, but Debian 12's is 3.11.2, for which redis-py also needs async-timeout
# (its marker: python_full_version < "3.11.3").
IMAGE_MARKER_REQUIREMENTS = ("async-timeout>=4.0.3",)


def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's dependencies, those of IMAGE_EXTRAS, its build requirements, and wheel."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    build = data.get("build-system", {}).get("requires", [])
    extras = data["project"].get("optional-dependencies", {})
    wanted = [req for extra in IMAGE_EXTRAS for req in extras.get(extra, [])]
    return sorted({*data["project"].get("dependencies", []), *wanted, *build, "wheel",
                   *IMAGE_MARKER_REQUIREMENTS})


def ensure_wheelhouse(directory: Path = REPO / "wheelhouse", python: str = sys.executable,
                      timeout: float = 600) -> bool:
    """Download the wheels unless the stamp matches; return whether anything was fetched."""
    wanted = requirements()
    machine = platform.machine()
    stamp_text = "\n".join([f"cp{IMAGE_PYTHON} glibc 2.{IMAGE_GLIBC} {machine}", *wanted]) + "\n"
    stamp = directory / STAMP
    if stamp.is_file() and stamp.read_text() == stamp_text and any(directory.glob("*.whl")):
        return False
    if stamp.is_file():  # ours, and stale: start over rather than pile up versions
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--dest", str(directory), "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
         "--implementation", "cp", "--abi", f"cp{IMAGE_PYTHON.replace('.', '')}",
         "--abi", "abi3", "--abi", "none",
         *(arg for tag in platforms(machine) for arg in ("--platform", tag)), *wanted],
        capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download for the wheelhouse failed:\n{proc.stdout}{proc.stderr}")
    stamp.write_text(stamp_text)
    return True


if __name__ == "__main__":
    fetched = ensure_wheelhouse()
    if fetched:
        print(f"run-tests: wheelhouse ready ({len(list((REPO / 'wheelhouse').glob('*.whl')))} "
              "wheels)")
