"""Runtimes behind one contract (contract.py, which imports nothing from `arena`). Each module imports its heavy
library inside methods only."""
