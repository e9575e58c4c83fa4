"""A loopback stand-in for the Hugging Face Hub: answers what huggingface_hub's upload (and a plain download) makes.

Tests point ``HF_ENDPOINT`` at ``fake_hub.url`` (the fixture does it for subprocesses and for an already imported
huggingface_hub) and then check what arrived in ``fake_hub.files``. Shapes follow huggingface_hub 2.4
(``hf_api.create_repo``, ``_commit_api._fetch_upload_modes`` / ``_send_commit``, ``hf_api._validate_yaml``).

Endpoints:
- ``POST /api/repos/create``                         -> records the repo and its visibility
- ``POST /api/{type}s/{repo}/preupload/{rev}``       -> uploadMode "regular" for every file (so content comes inline)
- ``POST /api/{type}s/{repo}/commit/{rev}``          -> NDJSON: header line, then one line per file (base64)
- ``POST /api/validate-yaml``                        -> always valid
- ``GET  /api/{type}s/{repo}[/revision/{rev}]``      -> repo info with the file list (so snapshot_download works)
- ``GET  /api/{type}s/{repo}/tree/{rev}``            -> every file, recursively
- ``GET/HEAD /[{type}s/]{repo}/resolve/{rev}/{path}`` -> a stored file
- anything else                                       -> 404 (e.g. a README that was never uploaded)
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class FakeHub:
    """State of the fake hub; ``files[repo_id][path] = bytes`` and ``repos[repo_id] = {"private": bool, ...}``."""

    url: str = ""
    repos: dict[str, dict] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    # The Authorization headers seen, so a test can check the configured token was used.
    authorizations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that must talk to this hub."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0"}

    def commit_sha(self, repo_id: str) -> str:
        """A commit id that changes with the content, so huggingface_hub's cache (keyed by commit) never serves
        files of another test's repository of the same name."""
        listing = "".join(
            f"{name}:{_git_blob_id(data)}\n" for name, data in sorted(self.files.get(repo_id, {}).items())
        )
        return hashlib.sha1(listing.encode()).hexdigest()

    def add_files(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> None:
        """Seed a repo (e.g. an adapter to download) without going through an upload."""
        with self.lock:
            self.repos.setdefault(repo_id, {"private": private, "type": "model"})
            self.files.setdefault(repo_id, {}).update(files)


def _git_blob_id(content: bytes) -> str:
    """The id git (and the hub, for regular files) gives a blob: sha1 of a header plus the content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _split_repo(parts: list[str]) -> tuple[str, list[str]]:
    """``["user", "name", ...rest]`` -> ("user/name", rest); a repo id without namespace is one part."""
    if len(parts) >= 2:
        return f"{parts[0]}/{parts[1]}", parts[2:]
    return parts[0], []


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - quiet: test output stays readable
        pass

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: dict | list | bytes | None = None, headers: dict[str, str] | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self):
        self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})

    def _record_auth(self):
        if auth := self.headers.get("Authorization"):
            with self.hub.lock:
                self.hub.authorizations.append(auth)

    # -- POST: create, preupload, commit, validate-yaml ------------------------------------------------------------
    def do_POST(self):  # noqa: N802 - http.server naming
        self._record_auth()
        path = unquote(urlsplit(self.path).path)
        body = self._body()
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        parts = path.strip("/").split("/")
        # /api/{type}s/{ns}/{name}/{preupload|commit}/{rev}
        if len(parts) >= 5 and parts[0] == "api" and parts[-2] in ("preupload", "commit"):
            repo_id = "/".join(parts[2:-2])
            if repo_id not in self.hub.repos:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if parts[-2] == "preupload":
                return self._preupload(json.loads(body))
            return self._commit(repo_id, body)
        return self._not_found()

    def _create_repo(self, payload: dict):
        name, organization = payload["name"], payload.get("organization")
        repo_id = f"{organization}/{name}" if organization else name
        visibility = payload.get("visibility")
        private = visibility == "private" if visibility is not None else bool(payload.get("private", False))
        repo_type = payload.get("type") or "model"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": self._repo_url(repo_id)})
            self.hub.repos[repo_id] = {"private": private, "type": repo_type}
            self.hub.files.setdefault(repo_id, {})
        self._send(200, {"url": self._repo_url(repo_id, repo_type)})

    def _repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.hub.url}/{prefix}{repo_id}"

    def _preupload(self, payload: dict):
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._send(200, {"files": files})

    def _commit(self, repo_id: str, body: bytes):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0] if lines and lines[0].get("key") == "header" else {"value": {}}
        added: dict[str, bytes] = {}
        for line in lines[1:]:
            value = line.get("value", {})
            if line.get("key") == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line.get("key") in ("deletedFile", "deletedFolder"):
                with self.hub.lock:
                    self.hub.files[repo_id].pop(value["path"], None)
            else:  # lfs or copy: the fake always answers "regular", so this is a bug in the caller or the fake
                return self._send(400, {"error": f"unsupported commit operation {line.get('key')}"})
        with self.hub.lock:
            self.hub.files[repo_id].update(added)
            self.hub.commits.append({"repo": repo_id, "summary": header["value"].get("summary"), "files": list(added)})
        sha = self.hub.commit_sha(repo_id)
        self._send(200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha})

    # -- GET/HEAD: repo info and file downloads --------------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        self._record_auth()
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) >= 3 and parts[1] in ("models", "datasets", "spaces"):
            repo_id, rest = _split_repo(parts[2:])
            if rest[:1] in ([], ["revision"]) and repo_id in self.hub.files:
                return self._repo_info(repo_id)
            if rest[:1] == ["tree"] and repo_id in self.hub.files:
                return self._tree(repo_id)
            if repo_id not in self.hub.files:  # as the hub says it, so huggingface_hub raises RepositoryNotFoundError
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return self._not_found()
        return self._resolve(parts)

    def do_HEAD(self):  # noqa: N802
        self._record_auth()
        return self._resolve(unquote(urlsplit(self.path).path).strip("/").split("/"))

    def _repo_info(self, repo_id: str):
        siblings = [{"rfilename": name} for name in sorted(self.hub.files[repo_id])]
        info = {"id": repo_id, "modelId": repo_id, "sha": self.hub.commit_sha(repo_id), "siblings": siblings}
        info["private"] = self.hub.repos.get(repo_id, {}).get("private", False)
        self._send(200, info)

    def _tree(self, repo_id: str):
        """The whole file list (``recursive=true`` is all snapshot_download asks for)."""
        entries = [
            {"type": "file", "path": name, "size": len(content), "oid": _git_blob_id(content)}
            for name, content in sorted(self.hub.files[repo_id].items())
        ]
        self._send(200, entries)

    def _resolve(self, parts: list[str]):
        if parts[:1] in (["datasets"], ["spaces"]):
            parts = parts[1:]
        if "resolve" not in parts:
            return self._not_found()
        index = parts.index("resolve")
        repo_id, filename = "/".join(parts[:index]), "/".join(parts[index + 2 :])
        content = self.hub.files.get(repo_id, {}).get(filename)
        if content is None:
            return self._not_found()
        headers = {"ETag": f'"{_git_blob_id(content)}"', "X-Repo-Commit": self.hub.commit_sha(repo_id)}
        self._send(200, content, headers)


def start_fake_hub() -> tuple[FakeHub, ThreadingHTTPServer]:
    """Start a fake hub on 127.0.0.1 with a random port; the caller shuts the server down."""
    hub = FakeHub()
    handler = type("FakeHubHandler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval: shutdown() waits up to one interval, once per test.
    threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-hub", daemon=True).start()
    return hub, server


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A running fake hub; HF_ENDPOINT points at it (env for subprocesses, constants for this process), and downloads
    made in this process go to a cache of this test's own (subprocesses get one from HF_HOME, see conftest)."""
    hub, server = start_fake_hub()
    for key, value in hub.env.items():
        monkeypatch.setenv(key, value)
    # huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE at import: patch them if it is already imported here.
    if "huggingface_hub.constants" in sys.modules:
        constants = sys.modules["huggingface_hub.constants"]
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub_cache"))
    if "transformers.utils.hub" in sys.modules:  # an HfApi made earlier points elsewhere
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
        if "huggingface_hub.hf_api" in sys.modules:
            monkeypatch.setattr(sys.modules["huggingface_hub.hf_api"].api, "endpoint", hub.url)
    try:
        yield hub
    finally:
        # transformers keeps one HfApi, made with the endpoint of its first call: leave none behind for the next test.
        if "transformers.utils.hub" in sys.modules:
            sys.modules["transformers.utils.hub"]._hf_api = None
        server.shutdown()
        server.server_close()
