"""A loopback server that speaks the part of the Hugging Face Hub HTTP API that pushing and loading use.

The real Hub cannot be reached from the test machines, so the tests run the real
``huggingface_hub`` / ``transformers`` client code against this server on ``127.0.0.1``:

=========================================================  =======================================
``GET  /api/whoami-v2``                                    who the token belongs to
``POST /api/repos/create``                                 create a repo (409 when it exists)
``POST /api/validate-yaml``                                README metadata check (always valid)
``POST /api/models/{repo}/branch/{branch}``                create a branch from ``main``
``POST /api/models/{repo}/preupload/{rev}``                upload mode per file (always "regular")
``POST /api/models/{repo}/commit/{rev}``                   NDJSON commit: header, file, deletedFile
``GET  /api/models/{repo}[/revision/{rev}]``               model info (sha, siblings, pipeline_tag)
``GET  /api/models/{repo}/tree/{rev}[/{path}]``            file listing
``HEAD|GET /{repo}/resolve/{rev}/{path}``                  download, with ETag and X-Repo-Commit
=========================================================  =======================================

Every file is committed as a regular git blob (the preupload answer never says "lfs"), so the
client never takes the LFS or Xet upload path. Errors carry the ``X-Error-Code`` headers the
client turns into its typed exceptions (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``). Writes need the server's token; reads of public repos need none, and a
request with a wrong token always gets 401. ``drop_next(route, times)`` makes the server close
the connection without answering, to simulate a network failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[Commit]:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits of ``branch``, newest first."""
        out, commit = [], self.resolve(branch)
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out

    def commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(json.dumps([parent, message, sorted((p, git_blob_sha1(c)) for p, c in files.items())]).encode())
        digest.update(str(len(self.commits)).encode())  # two identical commits still get distinct ids
        commit = Commit(digest.hexdigest(), parent, message, files)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    def __init__(self, status: int, message: str, code: Optional[str] = None, commit: Optional[str] = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.extra = status, message, code, commit, extra


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<rev>[^/]+)$"), "create_branch"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), "tree"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class HubServer:
    """The server and its state; ``url`` is what ``HF_ENDPOINT`` should be set to.

    Args:
        token: the only token accepted (it belongs to ``user``).
        user: the account name; it may write to its own namespace and to ``orgs``.
        orgs: organisations the user may write to.
    """

    def __init__(self, token: str, user: str = "tester", orgs: tuple[str, ...] = ("test-org",)):
        self.token, self.user, self.orgs = token, user, orgs
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self._drops: dict[str, int] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def drop_next(self, route: str, times: int = 1) -> None:
        """Close the connection without a response for the next ``times`` requests to ``route``."""
        with self.lock:
            self._drops[route] = times

    def _should_drop(self, route: str) -> bool:
        with self.lock:
            left = self._drops.get(route, 0)
            if left:
                self._drops[route] = left - 1
            return left > 0

    # -- auth -----------------------------------------------------------------------------------

    def _caller(self, headers) -> Optional[str]:
        """The user behind the Authorization header; None when there is none; 401 when it is wrong."""
        auth = headers.get("Authorization")
        if not auth:
            return None
        if auth != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def _require_user(self, headers) -> str:
        user = self._caller(headers)
        if user is None:
            raise HubError(401, "You must be authenticated to access this endpoint")
        return user

    def _can_write(self, user: str, namespace: str) -> bool:
        return namespace == user or namespace in self.orgs

    def _repo(self, repo_id: str, headers, write: bool = False) -> Repo:
        user = self._require_user(headers) if write else self._caller(headers)
        repo = self.repos.get(repo_id)
        visible = repo is not None and (not repo.private or (user and self._can_write(user, repo_id.split("/")[0])))
        if not visible:
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write and not self._can_write(user, repo_id.split("/")[0]):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    # -- endpoints (each returns status, headers, body) -------------------------------------------

    def whoami(self, req, **_):
        user = self._require_user(req.headers)
        return 200, {}, {
            "type": "user", "name": user, "fullname": user.title(),
            "orgs": [{"name": org, "type": "org"} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        }

    def create_repo(self, req, **_):
        user = self._require_user(req.headers)
        payload = req.json()
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if not self._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
        with self.lock:
            if repo_id in self.repos:
                # The Hub's 409 still carries the url; create_repo(exist_ok=True) reads it.
                raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
            repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
            repo.commit("main", "initial commit", {".gitattributes": GITATTRIBUTES})
            self.repos[repo_id] = repo
        return 200, {}, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()}

    def validate_yaml(self, req, **_):
        return 200, {}, {"errors": [], "warnings": []}

    def create_branch(self, req, repo, rev):
        repo = self._repo(repo, req.headers, write=True)
        branch = unquote(rev)
        start = (req.json() or {}).get("startingPoint") or "main"
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            repo.branches[branch] = self._commit_of(repo, start).oid
        return 200, {}, {}

    def preupload(self, req, repo, rev):
        repo = self._repo(repo, req.headers, write=True)
        head = self._commit_of(repo, rev)
        files = [
            {
                "path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": git_blob_sha1(head.files[f["path"]]) if f["path"] in head.files else None,
            }
            for f in req.json()["files"]
        ]
        return 200, {}, {"files": files, "commitOid": head.oid}

    def commit(self, req, repo, rev):
        repo = self._repo(repo, req.headers, write=True)
        branch = unquote(rev)
        lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        with self.lock:
            head = self._commit_of(repo, branch)
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"this test server only accepts regular files, not {key!r}")
            message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
            commit = repo.commit(branch, message, files)
        return 200, {}, {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{commit.oid}"}

    def model_info(self, req, repo, rev=None):
        repo = self._repo(repo, req.headers)
        commit = self._commit_of(repo, rev or "main")
        card = _front_matter(commit.files.get("README.md", b""))
        return 200, {}, {
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "library_name": card.get("library_name"), "pipeline_tag": card.get("pipeline_tag"),
            "tags": card.get("tags") or [], "cardData": card,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    def tree(self, req, repo, rev, path=None):
        repo = self._repo(repo, req.headers)
        commit = self._commit_of(repo, rev)
        recursive = parse_qs(req.query).get("recursive", ["false"])[0].lower() == "true"
        prefix = unquote(path).strip("/") + "/" if path else ""
        entries: dict[str, dict] = {}
        for file_path, content in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix):].split("/")
            for depth in range(1, len(rest)):  # the folders on the way down
                folder = prefix + "/".join(rest[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha1(folder.encode()), "size": 0, "path": folder})
                if not recursive:
                    break
            if recursive or len(rest) == 1:
                entries[file_path] = {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": file_path}
        if prefix and not entries:
            raise HubError(404, f"{prefix.rstrip('/')} does not exist on {rev}", "EntryNotFound", commit.oid)
        return 200, {}, list(entries.values())

    def resolve(self, req, repo, rev, path):
        repo = self._repo(repo, req.headers)
        commit = self._commit_of(repo, rev)
        content = commit.files.get(unquote(path))
        if content is None:
            raise HubError(404, "Entry not found", "EntryNotFound", commit.oid)
        headers = {
            "ETag": f'"{git_blob_sha1(content)}"', "X-Repo-Commit": commit.oid,
            "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
        }
        return 200, headers, content

    # -- plumbing -------------------------------------------------------------------------------

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def json(self):
                return json.loads(self.body or b"null")

            def _dispatch(self):
                parts = urlsplit(self.path)
                self.query = parts.query
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                for method, pattern, name in _ROUTES:
                    match = pattern.match(parts.path)
                    if method == self.command and match:
                        break
                else:
                    return self._send(404, {"X-Error-Message": "Not found"}, {"error": f"no route {self.command} {parts.path}"})
                if server._should_drop(name):
                    self.close_connection = True
                    return
                try:
                    status, headers, body = getattr(server, name)(self, **{k: v for k, v in match.groupdict().items() if v})
                except HubError as err:
                    headers = {"X-Error-Message": err.message}
                    if err.code:
                        headers["X-Error-Code"] = err.code
                    if err.commit:
                        headers["X-Repo-Commit"] = err.commit
                    status, body = err.status, {"error": err.message, **err.extra}
                self._send(status, headers, body)

            def _send(self, status, headers, body):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                if not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _dispatch

        return Handler


class SilentServer:
    """A server on 127.0.0.1 that accepts every connection and never answers: what a hung Hub looks like."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self.connections = 0
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    def start(self) -> "SilentServer":
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed by stop()
                return
            self.connections += 1
            self._held.append(conn)  # read nothing, answer nothing, keep it open

    def stop(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


def _front_matter(readme: bytes) -> dict:
    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    return (yaml.safe_load(text[3:end]) or {}) if end > 0 else {}
