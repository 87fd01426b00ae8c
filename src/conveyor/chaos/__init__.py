"""Fault injection: a Jepsen-style harness (cluster, workload, nemesis) and a pure checker.

Layout: :mod:`history` (the record of operations), :mod:`checker` (pure: history and final
reads in, anomaly counts out), :mod:`schedule` (pure: seed in, faults out), and the I/O
shell: :mod:`cluster`, :mod:`workload`, :mod:`nemesis`, :mod:`netfault`, :mod:`runner`.
The transactional workload (``--workload txn``): :mod:`txn_workload`, :mod:`txn_proc`,
:mod:`txn_run`, and its pure checker :mod:`txn_checker`.
"""
