"""Which build of the package runs: the request hot path compiled by mypyc, or pure Python.

Design notes
------------
``pip install .`` compiles the modules listed in ``HOT_PATH`` with mypyc when a C compiler and
Python's headers are at hand (setup.py), and installs pure Python where they are not: the same
source, the same behaviour, slower.  The compiled modules are C extensions that sit next to their
``.py`` files; Python's import system prefers them.

Two things can make the compiled modules the wrong ones to run, and both select the pure build
here, for every module of ``HOT_PATH`` at once (compiled modules call each other directly, so a
mix of the two builds would run two copies of the same classes):

* ``APPSERVER_PURE=1`` in the environment: the user asks for it (a suspected compiler bug, a
  profile that should show Python frames, the test suite's pure pass);
* a source file that is not the one compiled: in a checkout installed with ``pip install -e``,
  an edited module would otherwise keep running its old compiled code.  setup.py records the
  SHA-256 of every compiled source in ``_compiled_sources.json`` (installed with the package);
  a source whose digest differs selects the pure build, and a warning names the module and the
  fix (install again, which compiles again).  Digests, not modification times: pip installs a
  wheel's files in its own order, so a source can be newer than its compiled module without a
  change.

This module is never compiled itself, and it imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The modules mypyc compiles (paths relative to the project root, as setup.py passes them).
HOT_PATH = (
    "appserver/http/events.py",
    "appserver/http/parser.py",
    "appserver/http/response.py",
    "appserver/forwarded.py",
    "appserver/wsgi.py",
    "appserver/asgi.py",
    "appserver/workers/aio_protocol.py",
    "appserver/workers/aio_asgi.py",
    "appserver/workers/pump.py",
)
# Hand-written C extensions (module name: source), built by setup.py with the mypyc modules and
# trusted on the same terms: compiled build, source unchanged.  Each has a pure-Python twin that
# runs otherwise (appserver/metrics/recorder.py for _fastrecord).
C_EXTENSIONS = {
    "appserver.metrics._fastrecord": "appserver/metrics/_fastrecord.c",
}

PURE_ENV = "APPSERVER_PURE"
DIGESTS = "_compiled_sources.json"  # written by setup.py next to this file
COMPILE_ENV = "APPSERVER_COMPILE"  # read by setup.py when the package is built
PACKAGE_DIR = Path(__file__).resolve().parent


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def compiled_file(source: Path) -> Path | None:
    """The compiled extension module next to ``source``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _sources() -> dict[str, Path]:
    root = PACKAGE_DIR.parent
    return {module_name(path): root / path for path in HOT_PATH}


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the hot-path modules from their ``.py`` files, past their compiled twins."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        loader = importlib.machinery.SourceFileLoader(fullname, str(source))
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stale_modules() -> list[str]:
    """The compiled hot-path modules whose source is not the one compiled (none when the
    package is not compiled)."""
    root = PACKAGE_DIR.parent
    sources = {name: path for name, path in _sources().items() if compiled_file(path)}
    if not sources:
        return []
    sources |= {name: root / path for name, path in C_EXTENSIONS.items()
                if compiled_file((root / path).with_suffix(".py"))}
    try:
        compiled = json.loads((PACKAGE_DIR / DIGESTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        compiled = {}  # compiled modules without their record: none can be trusted
    return sorted(name for name, path in sources.items()
                  if compiled.get(name) != source_digest(path))


def _select() -> tuple[str, str]:
    """(build, why): build is "compiled" or "pure"."""
    sources = _sources()
    if not all(compiled_file(path) for path in sources.values()):
        return "pure", "not compiled (no C compiler when it was installed, or APPSERVER_COMPILE=0)"
    stale = stale_modules()
    if os.environ.get(PURE_ENV) == "1":
        reason = f"{PURE_ENV}=1"
    elif stale:
        reason = (f"{', '.join(stale)} changed since it was compiled; running the pure-Python "
                  f"build (install the package again to compile it: pip install -e .)")
        warnings.warn(f"appserver: {reason}", RuntimeWarning, stacklevel=3)
    else:
        root = PACKAGE_DIR.parent
        in_c = [name for name, path in C_EXTENSIONS.items()
                if compiled_file((root / path).with_suffix(".py"))]
        return "compiled", (f"{len(HOT_PATH)} modules compiled by mypyc, "
                            f"{len(in_c)} of {len(C_EXTENSIONS)} C extensions")
    sys.meta_path.insert(0, _SourceFinder(sources))
    return "pure", reason


BUILD, BUILD_REASON = _select()
