"""Each way a hub load fails becomes one sentence (the real hub is unreachable here, so the errors are built)."""

import pytest
import requests
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from arena.preparing.prepare import hub_error_sentence

ID = "meta-llama/Llama-2-7b-chat-hf"


def wrapped_connection_error() -> Exception:
    try:
        try:
            raise requests.ConnectionError("Failed to resolve 'huggingface.co'")
        except requests.ConnectionError as inner:
            raise OSError("couldn't connect") from inner
    except OSError as outer:
        return outer


@pytest.mark.parametrize("exc, expected", [
    (GatedRepoError("403", response=None), "is a gated model: accept its license"),
    (RepositoryNotFoundError("404", response=None), "There is no model"),
    (HFValidationError("bad"), "is neither an existing local directory nor a valid Hugging Face hub id"),
    (LocalEntryNotFoundError("offline"), "The Hugging Face Hub cannot be reached"),
    (wrapped_connection_error(), "The Hugging Face Hub cannot be reached"),
    (RuntimeError("weird"), "Could not load 'meta-llama/Llama-2-7b-chat-hf' from the Hugging Face Hub: RuntimeError"),
])
def test_hub_failures_are_one_sentence(exc, expected):
    sentence = hub_error_sentence(ID, exc)
    assert expected in sentence and ID in sentence and "\n" not in sentence
