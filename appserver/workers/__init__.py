"""Worker classes, registered by name and imported only when chosen.

gevent, eventlet, tornado and aiohttp are optional dependencies: naming a class whose library is
missing is a start-up error that names the package extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..config import WORKER_CLASSES

# name -> (module, class, extra needed or None)
REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "sync": ("appserver.workers.sync", "SyncWorker", None),
    "gthread": ("appserver.workers.gthread", "ThreadWorker", None),
    "gevent": ("appserver.workers.gevent_worker", "GeventWorker", "gevent"),
    "eventlet": ("appserver.workers.eventlet_worker", "EventletWorker", "eventlet"),
    "asyncio": ("appserver.workers.aio", "AsyncioWorker", None),
    "tornado": ("appserver.workers.tornado_worker", "TornadoWorker", "tornado"),
    "aiohttp": ("appserver.workers.aiohttp_worker", "AiohttpWorker", "aiohttp"),
}


class WorkerClassError(Exception):
    """The worker class cannot be used here; the message says what to install."""


def load_worker_class(name: str) -> type:
    if name not in REGISTRY:
        if name in WORKER_CLASSES:
            raise WorkerClassError(f"worker class {name!r} is not available in this version yet")
        raise WorkerClassError(f"unknown worker class {name!r}; choose one of "
                               f"{', '.join(REGISTRY)}")
    module_name, class_name, extra = REGISTRY[name]
    try:
        if extra and importlib.util.find_spec(extra) is None:
            # Only looked up: importing gevent or eventlet in the master, before the fork and
            # before monkey-patching, is what their documentation warns against.
            raise ImportError(name=extra)
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra:
            raise WorkerClassError(
                f"worker class {name!r} needs {exc.name or extra}: pip install 'appserver[{extra}]'"
            ) from None
        raise
    cls: type = getattr(module, class_name)
    return cls
