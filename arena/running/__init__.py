"""Running and timing: worker processes, the backend host inside them, CPU/memory budgets, the machine's facts,
start-up warm-up.
"""
