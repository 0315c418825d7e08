"""dropcheck's benchmarks: each times a dropcheck path and the baseline a user would otherwise
write (naive enumeration; the same quantity with ``torch.func``) in the same run.

Run ``dropcheck bench`` (or ``python -m dropcheck.benchmarks``);
:func:`dropcheck.benchmarks.run.main` is the entry point.
Results and method: ``docs/benchmarks.md``.
"""
