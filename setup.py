"""Build hook for setuptools: compile the request hot path with mypyc (appserver/_build.py).

Everything else about the package is in pyproject.toml.  ``pip install .`` (and ``pip install -e
.``) compiles the modules of ``HOT_PATH`` when a C compiler and Python's headers are at hand and
installs pure Python otherwise (the extensions are optional: a failed compile is a warning).
``APPSERVER_COMPILE=0`` asks for the pure build; ``APPSERVER_COMPILE=1`` makes a failed compile
an error (CI, and anyone who must not fall back silently).
"""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
# Read without importing the package (its __init__ would look for compiled modules).
BUILD = runpy.run_path(str(ROOT / "appserver" / "_build.py"))
COMPILE_ENV = BUILD["COMPILE_ENV"]


def hot_path_extensions() -> list[Extension]:
    choice = os.environ.get(COMPILE_ENV, "auto")
    if choice not in ("auto", "0", "1"):
        raise SystemExit(f"{COMPILE_ENV}={choice!r}: use 0 (pure Python), 1 (compile, or fail) "
                         "or leave it unset (compile when a C compiler is at hand)")
    hot_path = BUILD["HOT_PATH"]
    # An editable install compiles in place: the last build's modules go first, so that a pure
    # build (APPSERVER_COMPILE=0) or a compile that fails now leaves pure Python, never old
    # compiled code beside new sources.
    for path in hot_path:
        old = BUILD["compiled_file"](ROOT / path)
        if old is not None:
            old.unlink()
    for old in ROOT.glob("appserver__mypyc.*"):
        old.unlink()
    for path in BUILD["C_EXTENSIONS"].values():
        old = BUILD["compiled_file"]((ROOT / path).with_suffix(".py"))
        if old is not None:
            old.unlink()
    if choice == "0":
        (ROOT / "appserver" / BUILD["DIGESTS"]).unlink(missing_ok=True)
        return []
    # What is compiled, by digest: the installed package runs it only while its sources match.
    digests = {BUILD["module_name"](path): BUILD["source_digest"](ROOT / path) for path in hot_path}
    digests |= {name: BUILD["source_digest"](ROOT / path)
                for name, path in BUILD["C_EXTENSIONS"].items()}
    (ROOT / "appserver" / BUILD["DIGESTS"]).write_text(json.dumps(digests, indent=1) + "\n")
    from mypyc.build import mypycify

    # Third-party packages are not installed in pip's isolated build environment: the compiled
    # code treats them as Any (--ignore-missing-imports).  The project's strict mypy settings
    # (pyproject.toml) are for the lint, which sees those packages' types; here no config file
    # is read, and the modules imported but not compiled are analysed without their errors.
    extensions: list[Extension] = mypycify(
        ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent", *hot_path],
        opt_level="3", group_name="appserver")
    # The hand-written ones (C_EXTENSIONS: each has a pure-Python twin).
    extensions += [Extension(name, [path], extra_compile_args=["-O2"])
                   for name, path in BUILD["C_EXTENSIONS"].items()]
    for extension in extensions:
        extension.optional = choice != "1"
    return extensions


setup(ext_modules=hot_path_extensions())
