"""Shared fixtures: one artifact cache per test session, locally built tiny models, a running app."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # `tests.support` imports from the root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.app import running_app  # noqa: E402 - after the path set-up

# No test ever reaches a model hub: every model is built here or ships in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One artifact cache for the whole session, so the embedded model is materialized and exported once."""
    return tmp_path_factory.mktemp("arena-cache")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.support.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def arena(session_cache):
    from arena.core import Arena

    core = Arena(cache_dir=session_cache,
                 extra_backends={"segfaulting": "tests.support.helpers:SegfaultingBackend"})
    yield core
    core.close()


@pytest.fixture(scope="session")
def app_server(session_cache, tmp_path_factory):
    """The app for the whole session, on the session's artifact cache."""
    with running_app(session_cache, tmp_path_factory.mktemp("app")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from tests.support.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def tiny_llama_gguf(tiny_llama, tmp_path_factory) -> Path:
    """A copy of the tiny Llama folder with the same weights and vocabulary as model.gguf (for llama.cpp)."""
    import shutil

    from tests.support.tiny_models import write_llama_gguf

    folder = tmp_path_factory.mktemp("tiny-llama-gguf") / "model"
    shutil.copytree(tiny_llama, folder)
    write_llama_gguf(folder, folder / "model.gguf")
    return folder
