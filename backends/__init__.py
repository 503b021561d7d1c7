"""Runtimes behind one contract (see base.py). Each module imports its heavy library inside methods only."""
