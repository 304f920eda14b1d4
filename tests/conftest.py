"""Suite-wide set-up, for every test process (./run-tests runs several: pytest-xdist).

Every server the suite starts takes its default control socket from ``$XDG_RUNTIME_DIR``
(``appserver.ctl``, and gunicorn 27's ``gunicorn.ctl``), else from the home directory.  Each test
process gets a directory of its own there, so that servers of concurrent processes never meet
at one default path (the second one would warn that the path is taken, which tests that compare
logs or StatsD counts with gunicorn's then see), and a real server the user runs with its
default control socket is left alone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_RUNTIME_DIR = tempfile.mkdtemp(prefix="appserver-tests-run-")
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME_DIR
atexit.register(shutil.rmtree, _RUNTIME_DIR, ignore_errors=True)
