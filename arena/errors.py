"""Errors whose message is already a clear sentence for the user (shown as is in the UI and the API)."""


class ArenaError(Exception):
    """A problem the user can act on; ``str(error)`` is the sentence to show."""
