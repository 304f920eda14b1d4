"""Environments: one settings file rendered per environment under ``deploy/<NAME>/``, and the
differences between two environments' renders (``appserver diff``).

An environment is the base settings file plus ``environments/NAME.toml`` (see
:mod:`appserver.bundle.layering`); its render has the layout of the base render, moved under
``deploy/NAME/`` so that the relative paths inside (compose's build contexts, the nginx.conf it
mounts) hold there too.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from appserver.bundle.loading import Loaded
from appserver.bundle.settings import SettingsError

DEPLOY_DIR = "deploy"
# The directory both sides of `appserver diff` are rendered for: paths inside the files (compose's
# dockerfile:, the Dockerfiles' COPY) name it, and each environment's own name there would make
# files differ that differ in nothing else.  Uppercase: no environment can be called so.
COMPARED_DIR = "ENV"


def environment_dir(root: Path, name: str) -> Path:
    """Where environment ``name`` is rendered: ``deploy/NAME/`` under the project (or --out)."""
    return root / DEPLOY_DIR / name


def check_name_is_free(name: str, rendered: Mapping[str, str]) -> None:
    """``deploy/kubernetes/`` and ``deploy/systemd/`` belong to the base render: an environment
    of that name would write its files among them."""
    taken = {PurePosixPath(path).parts[1] for path in rendered
             if path.startswith(f"{DEPLOY_DIR}/") and len(PurePosixPath(path).parts) > 2}
    if name in taken:
        raise SettingsError(f"--env {name}: {DEPLOY_DIR}/{name}/ holds files of the base render "
                            f"(`appserver render`); name the environment otherwise (reserved: "
                            f"{', '.join(sorted(taken))})")


def in_environment(name: str | None, message: str) -> str:
    """An error of one environment, named so (others may have rendered fine)."""
    if name is None:
        return message
    return f"environment {name}:\n" + "\n".join(f"  {line}" for line in message.splitlines())


def for_comparison(loaded: Loaded) -> tuple[Loaded, Path]:
    """The settings and the directory to render one side of a diff for: the provenance is taken
    out of the header line and the environment's name out of the paths, which would otherwise
    make every file of two environments differ."""
    return (loaded.model_copy(update={"layers": (), "environment": None}),
            environment_dir(loaded.directory, COMPARED_DIR))


def diff_renders(a_name: str, a_files: Mapping[str, str], b_name: str,
                 b_files: Mapping[str, str]) -> list[str]:
    """Unified diffs of the files both have, and a line per file only one has (as ``diff -r``)."""
    out = []
    for name in sorted(set(a_files) | set(b_files)):
        if name not in b_files:
            out.append(f"Only in {a_name}: {name}\n")
        elif name not in a_files:
            out.append(f"Only in {b_name}: {name}\n")
        elif a_files[name] != b_files[name]:
            out.append("".join(difflib.unified_diff(
                a_files[name].splitlines(keepends=True), b_files[name].splitlines(keepends=True),
                fromfile=f"{a_name}/{name}", tofile=f"{b_name}/{name}")))
    return out
