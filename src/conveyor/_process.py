"""Less start-up and exit work for every Conveyor process (docs/testing.md, "Where the CPU
goes"): a library's submodules imported without its package ``__init__``, and an exit
without the last collection.

kafka-python's and aiokafka's ``__init__`` import their whole clients (admin client,
consumer, producer, network layer) only to re-export them; Conveyor uses kafka-python's
wire types (``kafka.protocol``) and aiokafka's compiled record codec, never their clients.
Those two ``__init__`` cost about 0.15 s of CPU in every coordinator, broker and
``conveyor`` process that decodes the Kafka protocol (measured in docs/testing.md, "Where
the CPU goes"), and the test suite starts hundreds of such processes.

``defer_package_init("kafka")`` registers the package with its path set (so its submodules
import as usual) and its ``__init__`` not run yet. The first attribute read from the
package itself (``from kafka import KafkaConsumer``, ``kafka.__version__``) runs the
``__init__`` then, so code that does want the client gets exactly what it would have got.
It must run before anything imports the package; if something already has, it does nothing.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading
from typing import NoReturn


def defer_package_init(name: str) -> None:
    """Register package ``name`` with its ``__init__`` deferred to its first attribute read."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    loader = None if spec is None else spec.loader
    if spec is None or loader is None or spec.submodule_search_locations is None:
        return  # not installed (the import that follows says so), or not a package
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    running = threading.local()

    def deferred_getattr(attr: str) -> object:
        with lock:
            if getattr(running, "active", False):
                # re-entered while ``__init__`` runs (``from kafka import errors`` reads the
                # attribute first): answer from what exists, the import system does the rest
                try:
                    return module.__dict__[attr]
                except KeyError:
                    raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None
            if module.__dict__.get("__getattr__") is deferred_getattr:
                running.active = True
                try:
                    loader.exec_module(module)
                    if module.__dict__.get("__getattr__") is deferred_getattr:
                        del module.__dict__["__getattr__"]  # else the package has its own
                finally:
                    running.active = False
        return getattr(module, attr)

    module.__dict__["__getattr__"] = deferred_getattr
    sys.modules[name] = module


def exit_without_last_collection(code: int) -> NoReturn:
    """End a ``python -m conveyor...`` process with exit status ``code``, its objects moved out
    of the garbage collector's reach first (``gc.freeze``): the interpreter's exit collects
    every object a service or command imported, about 0.2 s of CPU for a coordinator's
    modules, for memory the process gives back anyway. Exit handlers, thread joins and
    stream flushes run as usual. Only for a process's own entry point, never in-process."""
    gc.freeze()
    raise SystemExit(code)
