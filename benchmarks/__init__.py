"""The benchmark scripts behind the published figures (``benchmarks/RESULTS.md``, the model card).

Each is a module, run from the repository root as ``python -m benchmarks.NAME``; they import only
``aniso_nequip``'s public modules and one another through this package. CI runs each on a tiny
slice (``tests/integration/test_benchmarks.py``) so that they cannot rot.
"""
