"""The whole backend under load with faults injected, and checkers over what happened.

Introduced in notebooks/12_backend_under_faults.ipynb. Jepsen's shape: a load records every
operation (``history.Op``), a nemesis records every fault's window (``history.Fault``), and
checkers decide afterwards, with the system quiet, whether anything was lost or stayed stale.
"""
