"""Each way a hub load fails becomes one sentence (the real hub is unreachable here, so the errors are built)."""

import httpx2
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


def wrapped_connection_error(inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except type(inner) as caught:
            raise OSError("couldn't connect") from caught
    except OSError as outer:
        return outer


def response(status: int) -> httpx2.Response:
    """A response as huggingface_hub 2.x's errors carry it (httpx2's, with its request)."""
    return httpx2.Response(status, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{ID}"))


@pytest.mark.parametrize("exc, expected", [
    (GatedRepoError("403", response=response(403)), "is a gated model: accept its license"),
    (RepositoryNotFoundError("404", response=response(404)), "There is no model"),
    (HFValidationError("bad"), "is neither an existing local directory nor a valid Hugging Face hub id"),
    (LocalEntryNotFoundError("offline"), "The Hugging Face Hub cannot be reached"),
    (wrapped_connection_error(httpx2.ConnectError("[Errno -2] Name or service not known")),
     "The Hugging Face Hub cannot be reached"),
    (httpx2.ConnectTimeout("timed out"), "The Hugging Face Hub cannot be reached"),
    (httpx2.ReadTimeout("timed out"), "The Hugging Face Hub cannot be reached"),
    (wrapped_connection_error(requests.ConnectionError("Failed to resolve 'huggingface.co'")),
     "The Hugging Face Hub cannot be reached"),
    (RuntimeError("weird"), "Could not load 'meta-llama/Llama-2-7b-chat-hf' from the Hugging Face Hub: RuntimeError"),
])
def test_hub_failures_are_one_sentence(exc, expected):
    sentence = hub_error_sentence(ID, exc)
    assert expected in sentence and ID in sentence and "\n" not in sentence


def test_a_hub_http_error_over_several_lines_is_one_sentence_with_the_servers_message():
    """huggingface_hub 2.x writes the status and URL, a link to the status's page and the server's message on
    separate lines: one sentence keeps the first and the server's message."""
    from huggingface_hub.utils import hf_raise_for_status

    failed = httpx2.Response(500, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{ID}"),
                             headers={"X-Error-Message": "Internal failure", "x-request-id": "abc"},
                             content=b'{"error": "boom"}')
    with pytest.raises(Exception) as raised:
        hf_raise_for_status(failed)
    assert "\n" in str(raised.value)  # the premise
    sentence = hub_error_sentence(ID, raised.value)
    assert "\n" not in sentence and sentence.endswith(".")
    assert "500 Internal Server Error" in sentence and "Internal failure" in sentence and ID in sentence
