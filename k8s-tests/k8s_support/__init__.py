"""Helpers of the live-cluster tests: waiting, diagnostics, port-forwards, the task API, metrics.

Nothing here needs a cluster to import; tests/cluster unit-tests each helper on this machine.
"""
