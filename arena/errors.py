"""Errors whose message is already a clear sentence for the user (shown as is in the UI and the API), and the
sentences for failures several places word alike (a Hugging Face Hub download: the preparation's and a backend's).

Both live on the backends' side of the border (`backends.contract.ArenaError`, `backends.hub_errors`), which
imports nothing from `arena`; this module re-exports the very same class and functions, so ``except ArenaError``
catches what a backend raises. Stdlib only at import time."""

from __future__ import annotations

from backends.contract import ArenaError
from backends.hub_errors import hub_error_sentence, is_connection_error, network_error_classes

__all__ = ["ArenaError", "hub_error_sentence", "is_connection_error", "network_error_classes"]
