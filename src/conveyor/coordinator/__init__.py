"""The coordinator: cluster metadata, placement, failure detection, committed offsets.

Pure core, I/O shell (see STYLE.md)::

    validation.py   names and topic settings                      pure
    placement.py    where a new topic's replicas and leaders go   pure
    election.py     leaders and ISR: deaths, returns, AlterIsr   pure
    reassignment.py replica moves: restoration, drains, balance   pure
    model.py        ClusterState, records, apply (replay)         pure
    state.py        transitions: (state, event, now_ms) -> Result pure
    control.py      AlterIsr, producer ids, drains, maintain tick pure
    views.py        the state as wire types                       pure
    store.py        SQLite: writes records, loads them back       I/O
    service.py      lock, clock, expiry timer, store thread       I/O
    http.py         routes -> service                             I/O
    cli.py          options, ``run``; ``__main__.py``             I/O

Nothing is imported here, so importing a pure module does not pull in aiohttp or SQLite.
"""
