"""The sentences for the ways a Hugging Face Hub download fails, worded alike wherever one fails: the core's
model preparation and a backend's own download (llama.cpp's GGUF file). `arena.errors` re-exports them.
Stdlib only at import time."""

from __future__ import annotations


def hub_error_sentence(model_id: str, exc: BaseException) -> str:
    """One clear sentence for each way a hub load fails."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return (f"'{model_id}' is a gated model: accept its license on its Hugging Face page, then log in "
                "(`hf auth login` or set HF_TOKEN) and try again.")
    if isinstance(exc, RepositoryNotFoundError):
        return (f"There is no model '{model_id}' on the Hugging Face Hub (or it is private): check the id, or log "
                "in if it is yours.")
    if isinstance(exc, RevisionNotFoundError):
        return f"'{model_id}' has no such revision on the Hugging Face Hub."
    if isinstance(exc, HFValidationError):
        return (f"'{model_id}' is neither an existing local directory nor a valid Hugging Face hub id "
                "(expected 'owner/name').")
    if isinstance(exc, LocalEntryNotFoundError) or is_connection_error(exc):
        return (f"The Hugging Face Hub cannot be reached and '{model_id}' is not in the local cache: connect to "
                "the internet, or give a local directory with the model.")
    # huggingface_hub 2.x's HTTP errors run over several lines (the status and URL, a link to the status's page,
    # the server's message): the first line, and the server's own message when it gave one
    lines = str(exc).strip().splitlines()
    text = lines[0].strip().rstrip(".") if lines else ""
    server = (str(getattr(exc, "server_message", None) or "").strip().splitlines() or [""])[0].strip()
    if server and server not in text:
        text = f"{text} ({server.rstrip('.')})" if text else server
    return f"Could not load '{model_id}' from the Hugging Face Hub: {type(exc).__name__}: {text[:400]}."


def network_error_classes() -> tuple[type[BaseException], ...]:
    """The exception classes of a failed connection or a timeout, in the HTTP clients that may raise them: the
    builtin ones, httpx2's (huggingface_hub 2.x speaks it), httpx's, and requests' (diffusers and gguf still use it)
    when those are installed."""
    import importlib

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError", "TimeoutException")),
                          ("httpx", ("TransportError", "TimeoutException")),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(loaded, name) for name in names if isinstance(getattr(loaded, name, None), type)]
    return tuple(found)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a network failure: no connection, a timeout."""
    classes = network_error_classes()
    seen, visited = exc, set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, classes):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
