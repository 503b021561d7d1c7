"""A local stand-in for the Hugging Face Hub HTTP API, so hub code paths run for real without a network.

It answers the requests huggingface_hub 2.x makes for ``model_info``/``repo_info``, ``list_repo_tree``,
``file_exists``, ``hf_hub_download``, ``snapshot_download`` and ``get_safetensors_metadata``, with the Hub's
headers and error codes, so the client raises its real exception classes. Large-file-storage (LFS) files are
answered, like on the Hub, with a redirect to another host (``localhost`` instead of ``127.0.0.1``: a "CDN"), so
the client drops the Authorization header there as it does in production.

    with LocalHub(tokens={"hf_operator": None}) as hub, hub.patch_huggingface_hub():
        sha = hub.add_repo("org/tiny", {"config.json": "{}", "model.safetensors": path})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

# What the Hub's default .gitattributes sends to LFS; files over 10 MB always go there.
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".model", ".npy",
                ".npz", ".pkl", ".ckpt", ".tflite", ".zip", ".gz", ".tar", ".ot", ".arrow", ".parquet", ".wasm")
LFS_MIN_SIZE = 10 * 1024 * 1024
PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
API = re.compile(rf"^/api/(?P<kind>model|dataset|space)s/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
TREE = re.compile(rf"^/api/(?P<kind>model|dataset|space)s/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$")
RESOLVE = re.compile(rf"^(?:/(?P<kind>dataset|space)s)?/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
CDN = re.compile(rf"^/_cdn/(?P<kind>model|dataset|space)s/{_REPO}/(?P<rev>[0-9a-f]{{40}})/(?P<path>.+)$")


class Seen(NamedTuple):
    """One request as the server saw it (``authorization``: the raw header, None when absent)."""

    method: str
    path: str
    authorization: str | None
    range: str | None


class Served(NamedTuple):
    """File bytes that left the server: which repo, file, commit, and the Range asked (None: the whole file)."""

    repo_id: str
    filename: str
    commit: str
    range: str | None


@dataclass
class Repo:
    kind: str
    private: bool
    gated: str | bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}, oldest first
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
    dates: dict[str, str] = field(default_factory=dict)  # sha -> ISO date


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE


def lfs_pointer(data: bytes) -> bytes:
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        hashlib.sha256(data).hexdigest().encode(), len(data))


def safetensors_parameters(data: bytes) -> dict[str, int] | None:
    """Parameters per dtype as the file's header declares them: the Hub trusts headers, and so does this."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size])
        counts: dict[str, int] = {}
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= int(dim)
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + count
        return counts
    except (struct.error, ValueError, TypeError, KeyError, AttributeError):
        return None


def read_files(files: Mapping[str, bytes | str | Path] | Path) -> dict[str, bytes]:
    """Contents by repo path; a Path value that is a folder is copied recursively under its key ("" = top)."""
    if isinstance(files, Path):
        files = {"": files}
    out: dict[str, bytes] = {}
    for name, value in files.items():
        if isinstance(value, Path) and value.is_dir():
            for item in sorted(value.rglob("*")):
                if item.is_file():
                    out["/".join(p for p in (name.strip("/"), item.relative_to(value).as_posix()) if p)] = \
                        item.read_bytes()
        else:
            out[name] = value.read_bytes() if isinstance(value, Path) else \
                value.encode() if isinstance(value, str) else bytes(value)
    return out


class LocalHub:
    """Repositories built in Python, served over HTTP on 127.0.0.1 (random port) like huggingface.co serves them.

    ``tokens``: the tokens the Hub knows, each mapped to the repo ids it may read when private or gated (None: all).
    A token the Hub does not know is refused with 401, even on public repos, as on the Hub.
    """

    def __init__(self, *, tokens: Mapping[str, Iterable[str] | None] | Iterable[str] = (),
                 lfs_redirect: bool = True):
        self.lfs_redirect = lfs_redirect
        self._repos: dict[str, Repo] = {}
        self._tokens: dict[str, set[str] | None] = {}
        for token in tokens:
            self.allow_token(token, tokens[token] if isinstance(tokens, Mapping) else None)
        self._lock = threading.RLock()
        self._seen: list[Seen] = []
        self._served: list[Served] = []
        self._hooks: list[Callable[[Served], None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.cdn_url = f"http://localhost:{port}"
        self._thread: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> LocalHub:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building repositories ----------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Mapping[str, bytes | str | Path] | Path, *, gated: bool | str = False,
                 private: bool = False, kind: str = "model") -> str:
        """Create ``repo_id`` with one commit on main holding ``files``; returns that commit's sha."""
        assert kind in PREFIXES, kind
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"{repo_id} exists already")
            self._repos[repo_id] = Repo(kind=kind, private=private, gated=False)
            self.set_gated(repo_id, gated)
            return self.commit(repo_id, files)

    def commit(self, repo_id: str, files: Mapping[str, bytes | str | Path] | Path = (), *,
               delete: Iterable[str] = (), branch: str = "main") -> str:
        """A new commit on ``branch`` (created from main when new): ``files`` added or replaced, ``delete`` removed.
        Older commits stay downloadable by their sha."""
        with self._lock:
            repo = self._repos[repo_id]
            parent = repo.refs.get(branch) or repo.refs.get("main")
            tree = dict(repo.commits[parent]) if parent else {}
            tree.update(read_files(files or {}))
            for path in delete:
                del tree[path]
            digest = hashlib.sha1(f"{repo_id}\0{parent}\0".encode())
            for path in sorted(tree):
                digest.update(f"{path}\0{hashlib.sha256(tree[path]).hexdigest()}\0".encode())
            sha = digest.hexdigest()
            repo.commits[sha] = tree
            repo.refs[branch] = sha
            repo.dates[sha] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            return sha

    def set_gated(self, repo_id: str, gated: bool | str) -> None:
        """``True`` means "auto" (the Hub's automatic approval); "manual" is also accepted."""
        assert gated in (False, True, "auto", "manual"), gated
        self._repos[repo_id].gated = "auto" if gated is True else gated

    def set_private(self, repo_id: str, private: bool) -> None:
        self._repos[repo_id].private = private

    def allow_token(self, token: str, repos: Iterable[str] | None = None) -> None:
        """Make ``token`` valid; it may read the private or gated ``repos`` (None: every repo)."""
        self._tokens[token] = None if repos is None else set(repos)

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self._repos[repo_id].refs[branch]

    # --- what happened ------------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def served(self) -> list[Served]:
        with self._lock:
            return list(self._served)

    def clear_log(self) -> None:
        with self._lock:
            self._seen.clear()
            self._served.clear()

    # --- clients ------------------------------------------------------------------------------------------------
    def env(self, hf_home: str | Path) -> dict[str, str]:
        """Environment for a subprocess whose huggingface_hub should talk to this hub (read at its import)."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_home),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}

    @contextlib.contextmanager
    def patch_huggingface_hub(self) -> Iterator[None]:
        """Point the already imported huggingface_hub at this hub and lift offline mode, then restore both.

        HF_ENDPOINT is read once at import into module globals (huggingface_hub's constants and its default
        ``HfApi``), and offline mode is a global the client's shared HTTP session checks on each request: those are
        swapped (and telemetry turned off, as `env` does), and the shared session closed on the way in and out (a
        fresh one is made on the next request)."""
        from huggingface_hub import constants, file_download, hf_api
        from huggingface_hub.utils import close_session

        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        patches = [(constants, "ENDPOINT", self.url), (constants, "HF_HUB_OFFLINE", False),
                   (constants, "HUGGINGFACE_CO_URL_TEMPLATE", template), (hf_api.api, "endpoint", self.url),
                   # as `env` says: no telemetry (huggingface_hub 2.x fetches /api/agent-harnesses for its user agent)
                   (constants, "HF_HUB_DISABLE_TELEMETRY", True)]
        if hasattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE"):  # a copy of its own in older releases
            patches.append((file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template))
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        for owner, name, value in patches:
            setattr(owner, name, value)
        close_session()
        try:
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)
            close_session()

    # --- answering ----------------------------------------------------------------------------------------------
    def _repo(self, kind: str, repo_id: str, token: str | None, files: bool) -> Repo:
        """The Hub's access rules: unknown tokens are refused; a missing or private repo is "not found" (401 for
        visitors, 404 for signed-in users); a gated repo's listing is public but its files need a granted token."""
        if token is not None and token not in self._tokens:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo = self._repos.get(repo_id)
        granted = token is not None and (self._tokens[token] is None or repo_id in self._tokens[token])
        if repo is None or repo.kind != kind or (repo.private and not granted):
            raise HubError(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if files and repo.gated and not granted:
            if token is None:
                raise HubError(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                               "to it and be authenticated to access it. Please log in.")
            raise HubError(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                           "authorized list. Visit the repository page to ask for access.")
        return repo

    @staticmethod
    def _revision(repo: Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _info(self, repo_id: str, repo: Repo, sha: str, blobs: bool) -> dict[str, Any]:
        tree = repo.commits[sha]
        siblings, parameters = [], {}
        for path in sorted(tree):
            data = tree[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                pointer = lfs_pointer(data) if is_lfs(path, data) else None
                sibling.update(size=len(data), blobId=git_blob_sha(pointer or data))
                if pointer:
                    sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                      "pointerSize": len(pointer)}
            siblings.append(sibling)
            counts = safetensors_parameters(data) if path.endswith(".safetensors") else None
            for dtype, count in (counts or {}).items():
                parameters[dtype] = parameters.get(dtype, 0) + count
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None, "sha": sha, "lastModified": repo.dates[sha],
            "createdAt": repo.dates[next(iter(repo.commits))], "private": repo.private, "gated": repo.gated,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(data) for commit in repo.commits.values() for data in commit.values())}
        if parameters:
            info["safetensors"] = {"parameters": parameters, "total": sum(parameters.values())}
        with contextlib.suppress(KeyError, ValueError, AttributeError):
            config = json.loads(tree["config.json"])
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        return info

    @staticmethod
    def _tree(tree: dict[str, bytes], folder: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        below = [path for path in sorted(tree) if path.startswith(prefix)]
        if prefix and not below:
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on this revision")
        entries: dict[str, dict[str, Any]] = {}
        for path in below:
            parts = path[len(prefix):].split("/")
            folders = range(1, len(parts) if recursive else min(len(parts), 2))
            for name in (prefix + "/".join(parts[:depth]) for depth in folders):
                entries.setdefault(name, {"type": "directory", "path": name,
                                          "oid": hashlib.sha1(name.encode()).hexdigest()})
            if len(parts) > 1 and not recursive:
                continue
            data = tree[path]
            pointer = lfs_pointer(data) if is_lfs(path, data) else None
            entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(pointer or data)}
            if pointer:
                entries[path]["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "pointerSize": len(pointer)}
        return list(entries.values())

    def when_served(self, callback: Callable[[Served], None]) -> None:
        """Call ``callback(served)`` each time file bytes are about to leave the server (before the client has
        them): a test changes a repository at an exact moment, e.g. right after a config was fetched."""
        with self._lock:
            self._hooks.append(callback)

    def _log(self, seen: Seen | None = None, served: Served | None = None) -> None:
        with self._lock:
            if seen:
                self._seen.append(seen)
            if served:
                self._served.append(served)
            hooks = list(self._hooks) if served else []
        for hook in hooks:
            hook(served)


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled sessions expect

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            url = urlsplit(self.path)
            auth = self.headers.get("Authorization")
            hub._log(Seen(self.command, self.path, auth, self.headers.get("Range")))
            token = auth.split(" ", 1)[1].strip() if auth and " " in auth else None
            query = {k: v[-1].lower() for k, v in parse_qs(url.query).items()}
            match = {"cdn": CDN.match(url.path), "api": API.match(url.path), "tree": TREE.match(url.path),
                     "resolve": RESOLVE.match(url.path)}
            route = next((name for name, m in match.items() if m), None)
            commit = None
            try:
                if route is None:
                    raise HubError(404, None, "Sorry, we can't find the page you are looking for.")
                m = {k: unquote(v) for k, v in match[route].groupdict().items() if v is not None}
                kind, repo_id = m.get("kind", "model"), m["repo"]
                if route == "cdn":  # stands for the Hub's signed CDN URLs: no auth, one fixed commit
                    commits = hub._repos[repo_id].commits if repo_id in hub._repos else {}
                    data = commits.get(m["rev"], {}).get(m["path"])
                    if data is None:
                        raise HubError(403, None, "Access Denied")
                    return self._file(repo_id, m["rev"], data, m["path"], body, {})
                repo = hub._repo(kind, repo_id, token, files=route == "resolve")
                commit = hub._revision(repo, m.get("rev", "main"))
                if route == "api":
                    return self._json(hub._info(repo_id, repo, commit, query.get("blobs") == "true"), body)
                if route == "tree":
                    return self._json(hub._tree(repo.commits[commit], m.get("path", ""),
                                                query.get("recursive") == "true"), body)
                path = m["path"]
                if path not in repo.commits[commit]:
                    raise HubError(404, "EntryNotFound", f"{path} does not exist on this revision")
                data = repo.commits[commit][path]
                headers = {"X-Repo-Commit": commit}
                if is_lfs(path, data):
                    headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                                    "X-Linked-Size": str(len(data))})
                    if hub.lfs_redirect:
                        location = f"{hub.cdn_url}/_cdn/{kind}s/{quote(repo_id)}/{commit}/{quote(path)}"
                        return self._send(302, {**headers, "Location": location,
                                                "ETag": f'"{git_blob_sha(lfs_pointer(data))}"'}, b"", body)
                return self._file(repo_id, commit, data, path, body, headers)
            except HubError as error:
                headers = {"X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                if commit and error.code == "EntryNotFound":
                    headers["X-Repo-Commit"] = commit
                self._send(error.status, headers, json.dumps({"error": error.message}).encode(), body,
                           "application/json")

        def _json(self, value: Any, body: bool) -> None:
            self._send(200, {}, json.dumps(value).encode(), body, "application/json")

        def _file(self, repo_id: str, commit: str, data: bytes, path: str, body: bool, headers: dict) -> None:
            headers = {"ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes", **headers,
                       "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
            status, asked = 200, self.headers.get("Range")
            ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", (asked or "").strip())
            if ranged and ranged.group(1) + ranged.group(2):
                first, last = ranged.groups()
                start = int(first) if first else max(len(data) - int(last), 0)
                end = min(int(last), len(data) - 1) if first and last else len(data) - 1
                if start >= len(data) or start > end:
                    return self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", body)
                status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{len(data)}"
                data = data[start:end + 1]
            if body:
                hub._log(served=Served(repo_id, path, commit, asked if ranged else None))
            self._send(status, headers, data, body)

        def _send(self, status: int, headers: dict, data: bytes, body: bool,
                  content_type: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler
