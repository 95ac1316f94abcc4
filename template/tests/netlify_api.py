"""A local Netlify API for tests: the deploy protocol, strict where Netlify is strict.

Not a mock of the client: an HTTP server (aiohttp, on 127.0.0.1) that the real client talks to
through ``NETLIFY_API_URL``, implementing the operations of Netlify's OpenAPI spec that a
file-digest deploy uses, and refusing what the real API refuses:

- every call needs ``Authorization: Bearer <the token>`` (401 otherwise, 404 for a site the
  token cannot see);
- ``createSiteDeploy`` takes ``{"files": {path: sha1}}``: paths without a leading slash, ``#``,
  ``?``, empty or dot segments, SHA1s as 40 hex digits (422 otherwise); it answers ``required``
  with the SHA1s the site does not hold yet (deduplicated across deploys, as Netlify does);
  ``async`` deploys answer ``preparing`` first and list ``required`` on the next read;
- ``uploadDeployFile`` takes ``application/octet-stream`` bytes for a path of that deploy whose
  SHA1 matches the one declared (422 otherwise), only while the deploy is uploading;
- deploys move new -> uploading -> processing -> ready (or ``error`` with ``error_message``);
- ``restoreSiteDeploy`` publishes a ready deploy (422 for one that is not ready);
- a deploy with a ``branch`` is a branch deploy (context ``branch-deploy``), never published by
  itself; the site's newest ready deploy of each branch is what a split test sends traffic to;
- split tests (``traffic_splits``): ``{"branch_tests": {branch: percentage}}`` with at least two
  branches, whole percentages 0..100 adding up to 100, each branch with a ready deploy (the
  production branch: a published one), else 422; one split test per site (a second create is
  422: update the one there is); ``publish``/``unpublish`` answer 204 and turn it on and off.

Each ready deploy is served at its ``deploy_url`` by the project's own Netlify edge (ops.edge)
over the files it received, so a draft's ``_redirects`` proxies ``/api/*`` to its backend as
Netlify would; :attr:`LocalNetlify.site_url` serves the published deploy the same way.

Faults on demand: :meth:`LocalNetlify.fail` makes the next N matching requests answer a status
(429 with ``Retry-After``, 500, ...), :meth:`LocalNetlify.fail_next_deploy` makes the next deploy
end in ``error``. Every call is recorded in :attr:`LocalNetlify.calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

SHA1 = re.compile(r"^[0-9a-f]{40}$")
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")


@dataclass
class Fault:
    status: int
    times: int
    method: str = ""
    path_prefix: str = ""
    retry_after: str | None = None


@dataclass
class Call:
    method: str
    path: str
    status: int
    authorization: str


@dataclass
class SiteDeploy:
    id: str
    site_id: str
    files: dict[str, str]
    draft: bool
    title: str
    state: str = "new"
    required: list[str] = field(default_factory=list)
    error_message: str = ""
    published_at: str = ""
    created_at: str = ""
    uploaded: set[str] = field(default_factory=set)
    reads: int = 0
    branch: str = ""

    url: str = ""  # where the project's edge serves it, once ready

    def as_json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "site_id": self.site_id,
            "state": self.state,
            "required": list(self.required) if self.state in {"uploading", "prepared"} else [],
            "draft": self.draft,
            "title": self.title,
            "error_message": self.error_message or None,
            "deploy_url": self.url,
            "deploy_ssl_url": self.url,
            "published_at": self.published_at or None,
            "created_at": self.created_at,
            "skew_protection_token": None,
            "branch": self.branch or None,
            "context": "branch-deploy" if self.branch else "deploy-preview" if self.draft else "production",
        }


@dataclass
class SplitTest:
    id: str
    site_id: str
    weights: dict[str, int]
    active: bool = False
    created_at: str = ""
    updated_at: str = ""
    unpublished_at: str = ""
    history: list[tuple[str, dict[str, int]]] = field(default_factory=list)  # (event, weights), in order

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "site_id": self.site_id,
            "name": "canary",
            "path": "/",
            "branches": [{"branch": b, "percentage": p} for b, p in self.weights.items()],
            "active": self.active,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "unpublished_at": self.unpublished_at or None,
        }


@dataclass
class Site:
    id: str
    name: str
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha1 -> bytes: what the site already holds
    published_deploy: str = ""
    production_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)  # branch -> its newest ready deploy
    split_tests: dict[str, SplitTest] = field(default_factory=dict)


class LocalNetlify:
    """The server; :meth:`start` it (or use it as a context manager) and point ``api_url`` at it."""

    def __init__(self, token: str, sites: dict[str, str] | None = None) -> None:
        self.token = token
        self.sites = {sid: Site(sid, name) for sid, name in (sites or {"site-1": "my-site"}).items()}
        self.deploys: dict[str, SiteDeploy] = {}
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self._fail_deploy = ""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._served = contextlib.ExitStack()
        self._files = tempfile.TemporaryDirectory(prefix="local-netlify-")
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def fail(
        self, status: int, times: int = 1, *, method: str = "", path_prefix: str = "", retry_after: str | None = None
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path_prefix`` (after /api/v1) get ``status``."""
        with self._lock:
            self.faults.append(Fault(status, times, method, path_prefix, retry_after))

    def fail_next_deploy(self, message: str) -> None:
        with self._lock:
            self._fail_deploy = message

    def uploads(self) -> list[str]:
        """Paths uploaded, in order, across all deploys."""
        return [unquote(c.path.split("/files/", 1)[1]) for c in self.calls if "/files/" in c.path and c.status == 200]

    def published(self, site_id: str = "site-1") -> SiteDeploy | None:
        deploy_id = self.sites[site_id].published_deploy
        return self.deploys.get(deploy_id) if deploy_id else None

    def site_body(self, deploy_id: str, path: str) -> bytes:
        """The bytes a deploy serves at ``path``, as uploaded (or already held by the site)."""
        deploy = self.deploys[deploy_id]
        return self.sites[deploy.site_id].blobs[deploy.files[path]]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalNetlify:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._route)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="local-netlify", daemon=True)
        self._thread.start()
        if not ready.wait(120):  # a deadline, not a bound: a busy machine starts it late
            raise RuntimeError("the local Netlify API did not start")
        return self

    def site_url(self, site_id: str = "site-1") -> str:
        """The published deploy's URL (its edge), or ``""`` before the first publish."""
        published = self.published(site_id)
        return published.url if published else ""

    def stop(self) -> None:
        self._served.close()
        self._files.cleanup()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(120)

    def __enter__(self) -> LocalNetlify:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        try:
            response = await self._answer(request, handler, authorization)
        except web.HTTPException as exc:
            response = exc
        with self._lock:
            self.calls.append(Call(request.method, request.raw_path, response.status, authorization))
        return response

    async def _answer(self, request: web.Request, handler: Any, authorization: str) -> web.StreamResponse:
        if not request.raw_path.startswith("/api/v1/"):
            return _error(404, "Not Found")
        if authorization != f"Bearer {self.token}":
            return _error(401, "Access Denied: Invalid Token")
        path = request.raw_path.split("?", 1)[0].removeprefix("/api/v1")
        await request.read()  # before the lock: nothing awaits while holding it
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and request.method.startswith(fault.method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    return _error(fault.status, "injected fault", headers)
        response: web.StreamResponse = await handler(request)
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0].removeprefix("/api/v1")
        parts = raw.strip("/").split("/")
        method = request.method
        body = await request.read()  # read once, before the lock (the middleware has it cached)
        with self._lock:
            if parts == ["sites"] and method == "GET":  # listSites, as netlify-cli looks a site up by name
                name = request.query.get("name", "")
                found = [s for s in self.sites.values() if not name or s.name == name]
                return web.json_response([json.loads(self._site_json(site).text or "{}") for site in found])
            if parts == ["accounts"] and method == "GET":
                return web.json_response([{"id": "account-1", "slug": "local", "name": "Local"}])
            if parts[0] == "sites" and len(parts) >= 2:
                key = unquote(parts[1])  # an id, or (as netlify-cli asks first) a name
                site = self.sites.get(key) or next((s for s in self.sites.values() if s.name == key), None)
                if site is None:
                    return _error(404, "Not Found")
                if len(parts) == 2 and method == "GET":
                    return self._site_json(site)
                if len(parts) == 3 and parts[2] == "deploys":
                    if method == "POST":
                        return self._create(site, request.query, _json_body(request, body))
                    if method == "GET":
                        deploys = [d for d in self.deploys.values() if d.site_id == site.id]
                        return web.json_response([d.as_json(self._base(request)) for d in reversed(deploys)])
                if len(parts) >= 3 and parts[2] == "traffic_splits":
                    return self._split_test(site, parts[3:], method, _json_body(request, body))
                if len(parts) >= 4 and parts[2] == "deploys":
                    deploy = self.deploys.get(unquote(parts[3]))
                    if deploy is None or deploy.site_id != site.id:
                        return _error(404, "Not Found")
                    if len(parts) == 4 and method == "GET":
                        self._advance(deploy)
                        return web.json_response(deploy.as_json(self._base(request)))
                    if len(parts) == 4 and method == "PUT":  # updateSiteDeploy: the files of a created deploy
                        return self._update(site, deploy, _json_body(request, body))
                    if len(parts) == 5 and parts[4] == "restore" and method == "POST":
                        if deploy.state != "ready":
                            return _error(422, f"deploy is {deploy.state}, not ready")
                        site.published_deploy = deploy.id
                        deploy.published_at = _now()
                        return web.json_response(deploy.as_json(self._base(request)), status=201)
            if parts[0] == "deploys" and len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                deploy = self.deploys.get(unquote(parts[1]))
                if deploy is None:
                    return _error(404, "Not Found")
                deploy.state, deploy.error_message = "error", "canceled"
                return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"), status=201)
            if parts[0] == "deploys" and len(parts) >= 4 and parts[2] == "files" and method == "PUT":
                deploy = self.deploys.get(unquote(parts[1]))
                if deploy is None:
                    return _error(404, "Not Found")
                return self._upload(deploy, unquote("/".join(parts[3:])), request, body)
        return _error(404, "Not Found")

    def _base(self, request: web.Request) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _site_json(self, site: Site) -> web.Response:
        published = self.deploys.get(site.published_deploy)
        return web.json_response(
            {
                "id": site.id,
                "name": site.name,
                "url": f"http://127.0.0.1:{self.port}/sites/{site.id}/",
                "published_deploy": published.as_json(f"http://127.0.0.1:{self.port}") if published else None,
            }
        )

    def _create(self, site: Site, query: Any, body: Any) -> web.Response:
        if not isinstance(body, dict):
            return _error(422, "body must be a JSON object")
        files = body.get("files", {})  # netlify-cli creates first ({"draft": ...}), then PUTs the files
        if not isinstance(files, dict):
            return _error(422, "files must be an object of paths to SHA1 digests")
        for path, sha in files.items():
            problem = _bad_path(path)
            if problem:
                return _error(422, f"invalid file path {path!r}: {problem}")
            if not isinstance(sha, str) or not SHA1.match(sha):
                return _error(422, f"invalid SHA1 for {path!r}")
        for key in ("draft", "async"):
            if key in body and not isinstance(body[key], bool):
                return _error(422, f"{key} must be a boolean")
        branch = body.get("branch", "")
        if branch is not None and branch != "" and (not isinstance(branch, str) or not BRANCH.match(branch)):
            return _error(422, f"invalid branch {branch!r}")
        deploy = SiteDeploy(
            id=f"d{next(self._ids):04d}{hashlib.sha1(str(time.time()).encode()).hexdigest()[:8]}",
            site_id=site.id,
            files=dict(files),
            draft=bool(body.get("draft")),
            title=str(query.get("title", "")),
            created_at=_now(),
            branch=branch or "",
        )
        if self._fail_deploy:
            deploy.error_message, self._fail_deploy = self._fail_deploy, ""
        deploy.required = sorted({sha for sha in files.values() if sha not in site.blobs})
        self.deploys[deploy.id] = deploy
        if body.get("async"):
            deploy.state = "preparing"  # required is listed once Netlify has looked at the digests
        else:
            deploy.state = "uploading" if deploy.required else "processing"
        return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"))

    def _update(self, site: Site, deploy: SiteDeploy, body: Any) -> web.Response:
        if deploy.state not in {"new", "preparing", "uploading", "processing"} or deploy.uploaded:
            return _error(422, f"deploy {deploy.id} is {deploy.state}; its files are set")
        made = self._create(
            site, {"title": deploy.title}, {**(body or {}), "draft": deploy.draft, "branch": deploy.branch}
        )
        if made.status != 200:
            return made
        fresh = self.deploys.pop(json.loads(made.text or "{}")["id"])
        deploy.files, deploy.required, deploy.state = fresh.files, fresh.required, fresh.state
        deploy.error_message = deploy.error_message or fresh.error_message
        return web.json_response(deploy.as_json(f"http://127.0.0.1:{self.port}"))

    def _advance(self, deploy: SiteDeploy) -> None:
        deploy.reads += 1
        if deploy.state == "preparing":
            deploy.state = "uploading" if deploy.required else "processing"
        elif deploy.state == "processing":
            deploy.state = "error" if deploy.error_message else "ready"
            if deploy.state == "ready":
                deploy.url = self._serve(deploy)
                if deploy.branch:
                    self.sites[deploy.site_id].branches[deploy.branch] = deploy.id

    def _serve(self, deploy: SiteDeploy) -> str:
        """Lay the deploy's files out and serve them with the project's edge; return its URL."""
        from ops.edge.server import load_site, serve_in_thread

        root = Path(self._files.name) / deploy.id
        for path, sha in deploy.files.items():
            target = root / "public" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.sites[deploy.site_id].blobs[sha])
        (root / "public").mkdir(parents=True, exist_ok=True)
        (root / "netlify.toml").write_text('[build]\n  publish = "public"\n')
        edge = self._served.enter_context(serve_in_thread(load_site(root)))
        return f"{edge.url}/"

    def _upload(self, deploy: SiteDeploy, path: str, request: web.Request, body: bytes) -> web.Response:
        if request.headers.get("Content-Type", "") != "application/octet-stream":
            return _error(422, "file uploads must be application/octet-stream")
        if path not in deploy.files:
            return _error(422, f"{path!r} is not a file of deploy {deploy.id}")
        if deploy.state != "uploading":
            return _error(422, f"deploy {deploy.id} is {deploy.state}, not uploading")
        sha = hashlib.sha1(body).hexdigest()
        if sha != deploy.files[path]:
            return _error(422, f"SHA1 mismatch for {path!r}: declared {deploy.files[path]}, got {sha}")
        self.sites[deploy.site_id].blobs[sha] = body
        deploy.uploaded.add(sha)
        if set(deploy.required) <= deploy.uploaded:
            deploy.state = "processing"
        return web.json_response({"id": sha, "path": "/" + path, "sha": sha, "size": len(body)})

    def _split_test(self, site: Site, rest: list[str], method: str, body: Any) -> web.Response:
        if not rest:
            if method == "GET":
                return web.json_response([t.as_json() for t in site.split_tests.values()])
            if method == "POST":
                if site.split_tests:
                    return _error(422, "this site has a split test already: update it")
                weights, problem = self._weights(site, body)
                if problem:
                    return _error(422, problem)
                test = SplitTest(f"st{next(self._ids):04d}", site.id, weights, created_at=_now(), updated_at=_now())
                test.history.append(("create", dict(weights)))
                site.split_tests[test.id] = test
                return web.json_response(test.as_json(), status=201)
            return _error(405, "Method Not Allowed")
        test = site.split_tests.get(unquote(rest[0]))
        if test is None:
            return _error(404, "Not Found")
        if len(rest) == 1 and method == "GET":
            return web.json_response(test.as_json())
        if len(rest) == 1 and method == "PUT":
            weights, problem = self._weights(site, body)
            if problem:
                return _error(422, problem)
            test.weights, test.updated_at = weights, _now()
            test.history.append(("update", dict(weights)))
            return web.json_response(test.as_json(), status=201)
        if len(rest) == 2 and rest[1] in {"publish", "unpublish"} and method == "POST":
            test.active = rest[1] == "publish"
            test.unpublished_at = "" if test.active else _now()
            test.history.append((rest[1], dict(test.weights)))
            return web.Response(status=204)
        return _error(404, "Not Found")

    def _weights(self, site: Site, body: Any) -> tuple[dict[str, int], str]:
        tests = body.get("branch_tests") if isinstance(body, dict) else None
        if not isinstance(tests, dict) or len(tests) < 2:
            return {}, "branch_tests must be an object of two or more branches and their percentages"
        weights: dict[str, int] = {}
        for branch, share in tests.items():
            if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share <= 100:
                return {}, f"the percentage of branch {branch!r} must be a whole number in 0..100"
            if branch == site.production_branch:
                if not site.published_deploy:
                    return {}, f"the production branch {branch!r} has no published deploy"
            elif branch not in site.branches:
                return {}, f"branch {branch!r} has no ready branch deploy"
            weights[branch] = share
        if sum(weights.values()) != 100:
            return {}, f"the percentages add up to {sum(weights.values())}, not 100"
        return weights, ""


def _bad_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        return "not a non-empty string"
    if path.startswith("/"):
        return "leading slash"
    if "#" in path or "?" in path:
        return "contains # or ?"
    if any(part in {"", ".", ".."} for part in path.split("/")):
        return "empty or dot segment"
    return ""


def _json_body(request: web.Request, body: bytes) -> Any:
    if request.content_type != "application/json":
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status, headers=headers)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
