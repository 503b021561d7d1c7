"""An OpenAI-compatible server (vLLM, TGI, SGLang, trtllm-serve, llama.cpp, `transformers serve`, ...) as a backend.

The model runs in someone else's process; this backend is an HTTP client. ``load`` connects and probes what the
server accepts (one 1-token streamed request per variant, best first):

1. ``/completions`` with the prepared token ids as ``prompt`` (vLLM, llama.cpp's ``llama-server``, SGLang,
   trtllm-serve take a list of ids), ``logprobs``, and harmless extras (vLLM's ``return_token_ids``, transformers'
   ``generation_config``) that a strict server may refuse;
2. the same without the extras, then without ``logprobs``;
3. ``/completions`` with the rendered prompt text (the server tokenizes it);
4. ``/chat/completions`` with the user's message (the server applies its own chat template).

Generation streams (SSE) so the host's clock stamps each token as it arrives: time to first token and per-token
latency are measured on the client. The token ids are the server's when it returns them (vLLM's ``token_ids``,
``token_id:N`` logprob tokens); otherwise the streamed text is re-tokenized with the reference tokenizer, and the
panel's notes say which. Greedy is ``temperature: 0``; "ignore EOS" is ``ignore_eos``/``min_tokens`` (vLLM,
llama.cpp, SGLang) plus a -100 ``logit_bias`` on the EOS ids (OpenAI's own way, llama-cpp-python) on the
completions endpoint, and transformers' ``generation_config`` on ``transformers serve``.

The API key is read from an environment variable named by the ``api_key_env`` option (default
``OPENAI_API_KEY``): it goes in the Authorization header only, and is never in a result, a note, a log line or the
shown request ("Authorization: Bearer ***"). Every failure (connection refused, timeout, HTTP error, unknown model,
the server dying mid-stream) is one sentence. No logits come from a server: the first-step logits comparison is
skipped for this backend, token agreement and the reference's perplexity still apply.

Options (``OpenAIOptions``): ``base_url`` (kind "url": in public mode, arena/public/policy.py takes only the name of an
endpoint the operator lists in ``ARENA_ENDPOINTS="name=http://host:port/v1,..."``, resolved here in the worker from
the load context's ``endpoints``, and checked beforehand against the names in the environment's facts: a visitor
never makes this server call a URL), ``model`` (the served model's name; empty: the only one it lists) and
``api_key_env`` (kind "secret_env": the NAME of the variable holding the key). The prompt's text comes with every
generation's settings (``rendered_prompt``, ``user_prompt``, ``prompt_format``); the request actually sent is this
backend's ``run_notes``, which the host appends to the run's notes. Importing this module is cheap (httpx and
transformers are imported inside methods).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from backends.contract import (
    AVAILABLE,
    ArenaError,
    Availability,
    Backend,
    BackendOptions,
    GenerationSettings,
    LoadContext,
    option,
)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = float(os.environ.get("ARENA_OPENAI_TIMEOUT_S", "120"))  # the longest silence between two chunks
SHOWN_PROMPT_IDS = 8  # prompt ids shown in the request before "…"
TOKEN_ID = re.compile(r"^token_id:(\d+)$")  # vLLM's --return-tokens-as-token-ids logprob tokens


class ServerError(ArenaError):
    """A server problem, already worded as one sentence."""


def chosen_endpoint(base_url: str | None, names: Iterable[str]) -> str:
    """The URL or endpoint name to call: ``base_url``, or when empty the only configured endpoint (``names``: the
    operator's endpoints), if there is exactly one; a URL that is no http(s) URL is refused."""
    names = list(names)
    value = (base_url or "").strip()
    if not value:
        if len(names) != 1:
            raise ServerError("Give the server's base URL (for example http://127.0.0.1:8000/v1)"
                              + (f" or one of the configured endpoints: {', '.join(names)}." if names else "."))
        value = names[0]
    if value not in names:
        normalise_url(value)
    return value


def resolve_endpoint(base_url: str | None, endpoints: Mapping[str, str]) -> tuple[str, str]:
    """(what to show, the base URL) for a URL or the name of an operator-configured endpoint (``endpoints``: {name:
    base URL}, the load context's). A name is shown instead of its URL (a visitor of a public server never sees the
    operator's hosts)."""
    value = chosen_endpoint(base_url, endpoints)
    if value in endpoints:
        return f"endpoint '{value}'", normalise_url(endpoints[value])
    url = normalise_url(value)
    return url, url


def normalise_url(url: str) -> str:
    """``http://host:port`` or ``.../v1/`` as ``http://host:port/v1``; anything not http(s) is refused."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServerError(f"'{url}' is not an http(s) URL: give the server's base URL, for example "
                          "http://127.0.0.1:8000/v1.")
    return url if parts.path else url + "/v1"


def _server_message(response: Any) -> str:
    """The server's own error message, on one line."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, list) and error and isinstance(error[0], dict) and "msg" in error[0]:
            error = "; ".join(str(e.get("msg")) for e in error[:3])  # FastAPI validation errors
        return " ".join(str(error).split())[:200].rstrip(".")
    return " ".join(str(data).split())[:200]


@dataclass(frozen=True)
class OpenAIOptions(BackendOptions):
    base_url: str | None = option(
        None, kind="url", label="Base URL", tasks=("text",), placeholder="http://127.0.0.1:8000/v1",
        help="The server's OpenAI-compatible base URL (vLLM, TGI, SGLang, trtllm-serve, llama.cpp, transformers "
             "serve: docs/servers.md), or the name of an endpoint the operator configured (ARENA_ENDPOINTS).")
    model: str | None = option(None, kind="text", label="Model name on the server", tasks=("text",),
                               placeholder="empty: the only one it serves")
    api_key_env: str = option(DEFAULT_KEY_ENV, kind="secret_env", label="API key variable", tasks=("text",),
                              help="The name of an environment variable of this server holding the key; the key "
                                   "itself is never shown.")


class OpenAIBackend(Backend):
    """A client of an OpenAI-compatible HTTP server: ``/v1/completions`` (token ids or text) or
    ``/v1/chat/completions``, streamed."""

    name = "openai"
    aliases = ("openai-compatible", "server")
    title = "OpenAI-compatible server"
    Options = OpenAIOptions
    tasks = ("text",)  # no images through this API
    enabled_by_default = False  # it needs a server the user runs
    judging_memo = False  # the server's model can change between two runs
    serves_concurrent_requests = True  # a load sweep measures it (arena.serving)

    def __init__(self) -> None:
        self.client: Any = None
        self.shown_url = ""
        self.model_name = ""
        self.variant: dict[str, Any] = {}
        self.ids_from_server = False
        self.model: Any = None
        self._key = ""
        self._tokenizer: Any = None
        self._info: dict[str, Any] = {}
        self.run_notes: list[str] = []  # what the last generation sent and how it went (shown in the panel)

    # --- cheap, UI-process side -------------------------------------------------------------
    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        """"OpenAI-compatible server · model · URL or endpoint name": never the key (nor its variable)."""
        return " · ".join([cls.title, *(str(values[k]).strip() for k in ("model", "base_url")
                                        if str(values.get(k) or "").strip())])

    @classmethod
    def collect_facts(cls) -> dict[str, Any]:
        return {"httpx": {"installed": importlib.util.find_spec("httpx") is not None}}

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("httpx",)

    @classmethod
    def availability(cls, env: dict[str, Any]) -> Availability:
        facts = env.get("httpx")
        installed = facts.get("installed") if facts else importlib.util.find_spec("httpx") is not None
        if not installed:
            return Availability(False, "httpx is not installed.", "pip install httpx")
        return AVAILABLE

    @classmethod
    def check_spec(cls, spec, env: dict[str, Any], task: str | None = None) -> str | None:
        problem = super().check_spec(spec, env, task)
        if problem:
            return problem
        try:  # the operator's endpoints by name (the environment's facts); their URLs only reach the workers
            chosen_endpoint(spec.base_url, env.get("endpoints") or ())
        except ServerError as exc:
            return str(exc)
        key_env = (spec.api_key_env or DEFAULT_KEY_ENV).strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
            return f"api_key_env is the name of an environment variable (like {DEFAULT_KEY_ENV}), not '{key_env}'."
        return None

    # --- worker-process side ----------------------------------------------------------------
    def load(self, model, spec, ctx: LoadContext) -> None:
        import httpx

        if model.task != "text":
            raise ServerError("An OpenAI-compatible server backend runs text models only.")
        self.shown_url, base_url = resolve_endpoint(spec.base_url, ctx.endpoints)
        key_env = self._key_env = spec.api_key_env or DEFAULT_KEY_ENV
        self._key = ctx.secrets.get(key_env) or os.environ.get(key_env, "")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, follow_redirects=False,
                                   timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self.model = model
        self._tokenizer = None
        with ctx.stage("load", f"Connecting to the server at {self.shown_url}"):
            served = self._served_models()
            self.model_name = (spec.model or "").strip() or self._pick_model(served)
            if served and self.model_name not in served:
                ctx.notes.append(f"the server lists {', '.join(served[:5])}, not '{self.model_name}': sent anyway")
            self.variant = self._probe(model)
        how = {"ids": "the prepared token ids", "text": "the rendered prompt text (the server tokenized it)",
               "chat": "the user message (the server applied its own chat template)"}[self.variant["prompt"]]
        ctx.notes.append(f"prompt sent as {how} to {self.variant['path']}")
        ctx.notes.append("token ids from the server" if self.ids_from_server else
                         "token ids: the streamed text re-tokenized with the reference tokenizer (the server "
                         "returns none)")
        ctx.notes.append(f"key: {key_env} " + ("set (sent as Authorization: Bearer ***)" if self._key else
                                               "not set (no Authorization header)"))
        self._info = {"provider": f"{self.model_name} at {self.shown_url}", "artifact_dir": None,
                      "export_cached": None}

    def _url(self, path: str) -> str:
        return f"{self.shown_url}{path}"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _check_status(self, response: Any, path: str) -> None:
        if response.status_code < 400:
            return
        if not response.is_closed:
            response.read()
        code, message = response.status_code, self._redact(_server_message(response))
        if code in (401, 403):
            fix = (f"set {self._key_env_hint()} to a key it accepts" if self._key else
                   f"set the environment variable {self._key_env_hint()}")
            raise ServerError(f"The server at {self.shown_url} refused the request (HTTP {code}: {message}): {fix}.")
        if code == 404 and "model" in message.lower():
            served = self._served_models(quiet=True)
            listed = f"; it serves: {', '.join(served)}" if served else ""
            raise ServerError(f"The server at {self.shown_url} does not serve model '{self.model_name}' "
                              f"(HTTP 404: {message}){listed}.")
        if code == 404:
            raise ServerError(f"{self._url(path)} does not exist (HTTP 404): is {self.shown_url} the server's "
                              "OpenAI-compatible base URL (usually ending in /v1)?")
        if code >= 500:
            raise ServerError(f"The server at {self.shown_url} failed (HTTP {code}: {message}).")
        raise ServerError(f"The server at {self.shown_url} refused the request (HTTP {code}: {message}).")

    def _key_env_hint(self) -> str:
        return getattr(self, "_key_env", DEFAULT_KEY_ENV)

    def _transport_error(self, exc: Exception, tokens: int | None = None) -> ServerError:
        import httpx

        if tokens:  # the stream had started: the server went away under us
            return ServerError(f"The server at {self.shown_url} stopped answering after {tokens} token(s) "
                               f"({type(exc).__name__}): did it crash or stop?")
        if isinstance(exc, httpx.ConnectTimeout):
            return ServerError(f"The server at {self.shown_url} did not accept a connection within "
                               f"{CONNECT_TIMEOUT_S:g} s (timeout): is the host reachable?")
        if isinstance(exc, httpx.ConnectError):
            if "refused" in str(exc).lower() or "errno 111" in str(exc).lower():
                return ServerError(f"Nothing answers at {self.shown_url} (connection refused): is the server "
                                   "running?")
            return ServerError(f"Cannot connect to {self.shown_url} ({self._redact(str(exc)) or 'connect error'}).")
        if isinstance(exc, httpx.TimeoutException):
            return ServerError(f"The server at {self.shown_url} sent nothing for {READ_TIMEOUT_S:g} s (timeout): "
                               "is it overloaded or stuck?")
        return ServerError(f"The server at {self.shown_url} closed the connection ({type(exc).__name__}): did it "
                           "crash or stop?")

    def _served_models(self, quiet: bool = False) -> list[str]:
        """The ids ``GET /models`` lists ([] when the server has no such endpoint)."""
        import httpx

        try:
            response = self.client.get("/models")
        except httpx.HTTPError as exc:
            if quiet:
                return []
            raise self._transport_error(exc) from exc
        if response.status_code == 404:
            return []
        if not quiet:
            self._check_status(response, "/models")
        try:
            return [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            return []

    def _pick_model(self, served: list[str]) -> str:
        if len(served) == 1:
            return served[0]
        if not served:
            raise ServerError(f"The server at {self.shown_url} lists no models: give the model name it serves.")
        raise ServerError(f"The server at {self.shown_url} serves {len(served)} models ({', '.join(served[:8])}): "
                          "pick one in the model field.")

    # --- requests ---------------------------------------------------------------------------
    def _body(self, variant: dict[str, Any], prompt_ids: list[int], settings: GenerationSettings) -> dict[str, Any]:
        n = settings.max_new_tokens
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": n, "temperature": 0, "stream": True}
        if variant["prompt"] == "ids":
            body["prompt"] = list(prompt_ids)
        elif variant["prompt"] == "text":
            body["prompt"] = settings.rendered_prompt or self._reference_tokenizer().decode(prompt_ids)
        else:
            body["messages"] = [{"role": "user", "content": settings.user_prompt or settings.rendered_prompt}]
        if variant["logprobs"]:
            body |= {"logprobs": True, "top_logprobs": 1} if variant["prompt"] == "chat" else {"logprobs": 1}
        if settings.ignore_eos:
            body |= {"ignore_eos": True, "min_tokens": n}  # vLLM, llama.cpp, SGLang, trtllm-serve; llama-cpp-python
            if variant["prompt"] != "chat":  # OpenAI's own way (and llama-cpp-python's): EOS can never win
                body["logit_bias"] = {str(t): -100 for t in settings.eos_token_ids}
        if variant["extras"]:
            body["repeat_penalty"] = 1.0  # llama.cpp's servers: no repetition penalty (llama-cpp-python's is 1.1)
            if variant["prompt"] != "chat":
                body |= {"return_token_ids": True, "return_tokens_as_token_ids": True}  # vLLM
            config = {"do_sample": False, "max_new_tokens": n, "eos_token_id": list(settings.eos_token_ids)}
            if settings.ignore_eos:
                config["min_new_tokens"] = n
            if settings.pad_token_id is not None:
                config["pad_token_id"] = settings.pad_token_id
            body["generation_config"] = json.dumps(config)  # transformers serve: exactly the reference's rules
        return body

    def request_body(self, prompt_ids: list[int], settings: GenerationSettings) -> dict[str, Any]:
        """The body of one generation in the variant ``load`` found (a load sweep sends many at once)."""
        return self._body(self.variant, prompt_ids, settings)

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield its parsed chunks ({"text", "ids", "count", "finish"}); failures are one-sentence
        `ServerError`s. Safe from several threads at once (one httpx client, its connection pool)."""
        return self._stream(body)

    def shown_request(self, body: dict[str, Any]) -> str:
        """The request as shown to the user: URL, a masked key, the JSON body with the prompt ids shortened."""
        shown = dict(body)
        if isinstance(shown.get("prompt"), list) and len(shown["prompt"]) > SHOWN_PROMPT_IDS:
            ids = shown["prompt"]
            shown["prompt"] = [*ids[:SHOWN_PROMPT_IDS], f"… {len(ids) - SHOWN_PROMPT_IDS} more ids"]
        auth = " · Authorization: Bearer ***" if self._key else ""
        return f"request: POST {self._url(self.variant['path'])}{auth} · {json.dumps(shown, ensure_ascii=False)}"

    def _settings_probe(self) -> GenerationSettings:
        model = self.model
        return GenerationSettings(max_new_tokens=1, eos_token_ids=model.eos_token_ids, pad_token_id=model.pad_token_id,
                                  rendered_prompt=model.rendered_prompt, user_prompt=model.user_prompt,
                                  prompt_format=model.prompt_format)

    def _probe(self, model) -> dict[str, Any]:
        """The best request variant this server accepts, found with 1-token requests."""
        variants = [
            {"path": "/completions", "prompt": "ids", "logprobs": True, "extras": True},
            {"path": "/completions", "prompt": "ids", "logprobs": True, "extras": False},
            {"path": "/completions", "prompt": "ids", "logprobs": False, "extras": False},
            {"path": "/completions", "prompt": "text", "logprobs": True, "extras": True},
            {"path": "/completions", "prompt": "text", "logprobs": True, "extras": False},
            {"path": "/completions", "prompt": "text", "logprobs": False, "extras": False},
            {"path": "/chat/completions", "prompt": "chat", "logprobs": True, "extras": True},
            {"path": "/chat/completions", "prompt": "chat", "logprobs": False, "extras": False},
        ]
        last: ServerError | None = None
        skip_completions = False
        for variant in variants:
            if skip_completions and variant["path"] == "/completions":
                continue
            self.variant = variant
            try:
                chunks = list(self._stream(self._body(variant, list(model.prompt_token_ids), self._settings_probe())))
            except ServerError as exc:
                last = exc
                message = str(exc)
                if "does not exist (HTTP 404)" in message or "HTTP 405" in message:
                    skip_completions = skip_completions or variant["path"] == "/completions"
                    continue
                if any(f"HTTP {c}" in message for c in (400, 415, 422)) or "HTTP 500" in message:
                    continue  # this variant is not accepted: try a plainer one
                raise
            if not any(c["text"] or c["ids"] or c["count"] for c in chunks):
                last = ServerError(f"The server at {self.shown_url} answered {variant['path']} with no tokens.")
                continue
            self.ids_from_server = any(c["ids"] for c in chunks)
            return variant
        raise last or ServerError(f"The server at {self.shown_url} accepted no completion request.")

    def _stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and parse the SSE stream: per chunk its text, the server's token ids (if any), how many tokens
        its logprobs cover, and the finish reason."""
        import httpx

        path = self.variant["path"]
        tokens = 0
        try:
            with self.client.stream("POST", path, json=body) as response:
                self._check_status(response, path)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("error"):
                        error = event["error"]
                        message = error.get("message", error) if isinstance(error, dict) else error
                        raise ServerError(f"The server at {self.shown_url} failed while generating: "
                                          f"{self._redact(' '.join(str(message).split())[:200]).rstrip('.')}.")
                    chunk = _parse_chunk(event)
                    if chunk is None:
                        continue
                    tokens += len(chunk["ids"]) or chunk["count"] or bool(chunk["text"])
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, tokens) from exc

    # --- generation -------------------------------------------------------------------------
    def _reference_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model.model_dir)
        return self._tokenizer

    def _retokenize(self, text: str) -> list[int]:
        return list(self._reference_tokenizer()(text, add_special_tokens=False)["input_ids"]) if text else []

    def generate_text(self, prompt_ids: list[int], settings: GenerationSettings,
                      on_token: Callable[[int], None]) -> list[int]:
        body = self._body(self.variant, prompt_ids, settings)
        self.run_notes = [self.shown_request(body)]
        if self.variant["prompt"] == "chat" and settings.prompt_format not in ("", "chat"):
            self.run_notes.append(f"the others got the '{settings.prompt_format}' prompt format, this server its "
                                  "chat template: the outputs cannot match")
        if not self.ids_from_server:
            self._reference_tokenizer()  # loaded before the clock's first token, not inside the stream
        text, ids, emitted, finish = "", [], 0, None
        for chunk in self._stream(body):
            text += chunk["text"]
            finish = chunk["finish"] or finish
            if chunk["ids"]:
                ids += chunk["ids"]
                for token in chunk["ids"]:
                    on_token(token)
                emitted += len(chunk["ids"])
                continue
            # No ids: the logprobs say how many tokens the chunk holds; else count the new tokens of the
            # re-tokenized text so far (a chunk may be several tokens: transformers serve streams words).
            new = chunk["count"] or (max(0, len(self._retokenize(text)) - emitted) if chunk["text"] else 0)
            for _ in range(new):
                on_token(-1)
            emitted += new
        if not ids:
            ids = self._retokenize(text)
            for _ in range(len(ids) - emitted):  # tokens the count missed: stamped at the end
                on_token(-1)
        if settings.ignore_eos and len(ids) < settings.max_new_tokens:
            self.run_notes.append(f"the server ignored 'ignore EOS': it stopped after {len(ids)} of "
                                  f"{settings.max_new_tokens} tokens (finish reason: {finish})")
        return ids

    def generate_image(self, model, settings, on_phase, on_step):
        raise ServerError("An OpenAI-compatible server backend makes no images.")

    def forward_logits(self, token_ids: list[int]) -> Any:
        raise NotImplementedError("An OpenAI-compatible server returns no logits: the first-step logits comparison "
                                  "is skipped for it.")

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)

    def unload(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client, self._tokenizer, self._key = None, None, ""


def _parse_chunk(event: Any) -> dict[str, Any] | None:
    """One streamed event of /completions or /chat/completions as {"text", "ids", "count", "finish"}."""
    choices = event.get("choices") if isinstance(event, dict) else None
    if not choices:
        return None
    choice = choices[0]
    delta = choice.get("delta")
    text = (delta.get("content") or "") if isinstance(delta, dict) else (choice.get("text") or "")
    ids = [int(t) for t in choice.get("token_ids") or [] if isinstance(t, int)]
    logprobs = choice.get("logprobs") or {}
    tokens: list[str] = []
    if isinstance(logprobs, dict):
        if isinstance(logprobs.get("tokens"), list):  # /completions
            tokens = [str(t) for t in logprobs["tokens"]]
        elif isinstance(logprobs.get("content"), list):  # /chat/completions
            tokens = [str(t.get("token", "")) for t in logprobs["content"] if isinstance(t, dict)]
    if not ids and tokens and all(TOKEN_ID.match(t) for t in tokens):
        ids = [int(TOKEN_ID.match(t).group(1)) for t in tokens]
    # transformers serve sends placeholder logprobs ({"token": "", "logprob": 99.9}): not a token count.
    count = len(tokens) if tokens and any(tokens) else 0
    return {"text": text, "ids": ids, "count": count, "finish": choice.get("finish_reason")}
