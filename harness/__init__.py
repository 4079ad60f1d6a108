"""Test, demo and benchmark helpers: simulate, run the DIALS programs, score against truth.

Not installed with the plugin (``setup.py`` ships only ``dials_factored``); the tests, the
demo (``python -m harness.demo``) and ``benchmarks/`` import it from the repository root.
"""
