"""The ``conveyor`` command.

:mod:`conveyor.cli.main` builds the parser and runs the chosen handler; each command group
(``bench``, later ``broker``, ``topic``, ``produce``...) lives in its own module here and
registers itself through ``register(subparsers)``. Shared argument types and output helpers
are in :mod:`conveyor.cli.common`.
"""
