"""Support code the tests share: helpers and fake backends, tiny models built here, export edits, a local stand-in
Hub, the architecture matrix, the backend contract, TensorRT conformance. Nothing here is collected as a test."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository's root: `python app.py` and `python -m arena` run here
