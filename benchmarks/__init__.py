"""Benchmarks of dials.factored_integrate against the DIALS routes (issue 5).

``python -m benchmarks.run`` (or ``make bench``) is the one entry point: see
:mod:`benchmarks.run` for what it runs, measures and writes.
"""
