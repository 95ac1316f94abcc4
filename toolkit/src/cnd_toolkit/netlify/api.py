"""Netlify's deploy API: one client class over httpx, with explicit timeouts, retries and errors.

The operations are those of Netlify's OpenAPI spec (``@netlify/open-api``) that a file-digest
deploy uses: create a deploy from a map of paths to SHA1 digests, upload the files Netlify
lists as required, read the deploy until it is ready, and restore (publish) a deploy; and the
split-test operations a canary of the front end uses (``createSplitTest``, ``getSplitTests``,
``updateSplitTest``, ``enableSplitTest``, ``disableSplitTest``): a site's traffic divided
between branch deploys by percentage.

Retries: a 429 waits what ``Retry-After`` says (seconds or an HTTP date, capped), a 5xx or a
connection error backs off exponentially; a 4xx other than 429 is never retried, because the
same request would fail the same way. Errors are an :class:`NetlifyError` family whose messages
say what to do. The token is sent only in the ``Authorization`` header, and only over https
(http only to this machine, where tests run a local API): it is never part of a message, a
``repr`` or a log line, and a message that somehow contains it (an API that echoes the request)
has it masked in every form, before anything is shortened.

A misbehaving server cannot hold or flood a call: each attempt has a deadline for the whole
exchange (connect, send, the answer's head and body), not only for each read, so a server that
sends a byte now and then is cut off; an answer's body is read up to :data:`MAX_BODY` bytes; only
a 2xx is success (a redirect is an error: the API never redirects); and an answer that is not the
JSON the operation expects (a list for an object, ``required: 5``, nesting too deep to read) is a
:class:`NetlifyError` saying so, never a ``TypeError``. Text from the server reaches a message
with its control characters shown as escapes.
"""

from __future__ import annotations

import email.utils
import html
import json
import random
import re
import threading
import time
import unicodedata
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from cnd_toolkit import redact
from cnd_toolkit.errors import OpsError, shown
from cnd_toolkit.settings import plain_http_problem

DEFAULT_API_URL = "https://api.netlify.com/api/v1"
# Seconds: connecting is quick or broken; a response (an upload's) may take a while.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_RETRY_AFTER = 60.0
# Seconds one attempt may take in all, and more for an upload: a second per this many bytes.
ATTEMPT_SECONDS = 90.0
UPLOAD_BYTES_PER_SECOND = 64 * 1024
# Seconds a whole call may take, its retries and their waits included.
CALL_SECONDS = 300.0
# What Netlify's ids look like (24 hex digits today): anything else is not printed or put in a URL.
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Invisible characters a server could put inside a secret it echoes, and whitespace: taken out
# before the text is searched for secrets (see :meth:`NetlifyClient.quoted`).
_HIDING = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
# Bytes of an answer's body read at most: Netlify's largest (a deploy with its file list) is far below.
MAX_BODY = 8 * 1024 * 1024


class NetlifyError(OpsError):
    """A Netlify API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class AuthError(NetlifyError):
    """401/403: the token is missing, wrong, expired, or may not touch this site."""


class NotFound(NetlifyError):
    """404: no such site or deploy (or the token cannot see it)."""


class ValidationFailed(NetlifyError):
    """400/422: Netlify refused the request's content."""


class RateLimited(NetlifyError):
    """429 after every retry."""


class ServerError(NetlifyError):
    """5xx after every retry."""


class ConnectionFailed(NetlifyError):
    """No answer from the API (DNS, refused, TLS, timeout) after every retry."""


class UnexpectedAnswer(NetlifyError):
    """A 2xx whose body is not what the operation returns, a redirect, or an answer too large."""


@dataclass(frozen=True)
class Deploy:
    """The fields of Netlify's ``deploy`` object the tooling reads; ``raw`` holds all of it."""

    id: str
    site_id: str
    state: str
    required: tuple[str, ...] = ()
    deploy_url: str = ""
    deploy_ssl_url: str = ""
    error_message: str = ""
    draft: bool = False
    published_at: str = ""
    title: str = ""
    branch: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deploy:
        required = data.get("required") or ()
        if not isinstance(required, list | tuple) or not all(isinstance(sha, str) for sha in required):
            raise UnexpectedAnswer(f"Netlify's deploy lists required files as {_kind(required)}, not SHA1 digests")
        if not isinstance(data.get("id"), str) or not _ID.fullmatch(data["id"]):
            raise UnexpectedAnswer("Netlify answered with a deploy whose id is missing or not an id")
        return cls(
            id=str(data.get("id") or ""),
            site_id=_text(data, "site_id"),
            state=_text(data, "state", _STATE),
            required=tuple(required),
            deploy_url=_text(data, "deploy_url", _URL),
            deploy_ssl_url=_text(data, "deploy_ssl_url", _URL),
            error_message=_text(data, "error_message"),
            draft=bool(data.get("draft")),
            published_at=_text(data, "published_at"),
            title=_text(data, "title"),
            branch=_text(data, "branch"),
            raw=dict(data),
        )

    @property
    def url(self) -> str:
        """Where this deploy can be seen on its own (the draft URL)."""
        return self.deploy_ssl_url or self.deploy_url


@dataclass(frozen=True)
class SplitTest:
    """Netlify's ``splitTest``: which branches share the site's traffic, and whether it is on."""

    id: str
    site_id: str
    active: bool
    weights: Mapping[str, int]  # branch -> percentage
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitTest:
        if not isinstance(data.get("id"), str) or not _ID.fullmatch(data["id"]):
            raise UnexpectedAnswer("Netlify answered with a split test whose id is missing or not an id")
        weights: dict[str, int] = {}
        branches = data.get("branches") or []
        if not isinstance(branches, list):
            raise UnexpectedAnswer(f"Netlify answered with a split test whose branches are {_kind(branches)}")
        for item in branches:
            if isinstance(item, Mapping) and isinstance(item.get("branch"), str):
                found = item.get("percentage")
                if found is not None and not (isinstance(found, int | float) and 0 <= found <= 100):
                    raise UnexpectedAnswer("Netlify answered with a split test whose percentages are not 0-100")
                weights[item["branch"]] = int(found or 0)
        return cls(
            id=str(data.get("id") or ""),
            site_id=_text(data, "site_id"),
            active=bool(data.get("active")),
            weights=weights,
            raw=dict(data),
        )


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError, OSError, AttributeError):  # no date, or none there is
        return None


class NetlifyClient:
    """A client for one token. ``on_retry(message)`` hears about each retry as it is waited for."""

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: httpx.Timeout = TIMEOUT,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        attempt_seconds: float = ATTEMPT_SECONDS,
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        if not token:
            raise AuthError(
                "NETLIFY_AUTH_TOKEN is not set: create a personal access token in Netlify "
                "(User settings > Applications) and export it, or put it in .env"
            )
        if not all("!" <= c <= "~" for c in token):
            raise AuthError(
                "NETLIFY_AUTH_TOKEN has a character no Netlify token has: a token is printable ASCII "
                "without spaces; copy it again from Netlify (User settings > Applications)"
            )
        problem = plain_http_problem("NETLIFY_API_URL", api_url)
        if problem:  # refused before the token goes anywhere
            raise NetlifyError(problem)
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.on_retry = on_retry
        self._sleep = sleep
        self.attempt_seconds = attempt_seconds
        self.call_seconds = call_seconds
        self._http = _bounded(
            httpx.Client(
                timeout=timeout,
                headers={
                    "Authorization": f"Bearer {token}",
                    "User-Agent": "copier-netlify-docker",
                    "Accept-Encoding": "gzip",  # what _decoded reads, within its cap
                },
                transport=transport,
                follow_redirects=False,
            )
        )

    def __repr__(self) -> str:
        return f"NetlifyClient(api_url={self.api_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NetlifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the operations -------------------------------------------------------------------

    def get_site(self, site_id: str) -> dict[str, Any]:
        """``getSite``: the site, with ``published_deploy`` and its URLs."""
        data: dict[str, Any] = self._json(
            "GET", f"/sites/{_segment(site_id)}", what=f"site {site_id!r}", missing=_no_site(site_id)
        )
        if not isinstance(data.get("published_deploy") or {}, Mapping):
            raise UnexpectedAnswer(f"Netlify answered site {site_id!r} with a published_deploy that is not an object")
        return data

    def create_deploy(
        self, site_id: str, files: Mapping[str, str], *, draft: bool, title: str = "", branch: str = ""
    ) -> Deploy:
        """``createSiteDeploy`` by file digests: ``files`` maps paths (no leading slash) to SHA1 hex."""
        body: dict[str, Any] = {"files": dict(files), "draft": draft, "async": len(files) > 100}
        if branch:
            body["branch"] = branch
        query = f"?title={urllib.parse.quote(title)}" if title else ""
        path = f"/sites/{_segment(site_id)}/deploys{query}"
        what = f"a deploy of site {site_id!r}"
        return Deploy.from_json(self._json("POST", path, json=body, what=what, missing=_no_site(site_id)))

    def get_deploy(self, site_id: str, deploy_id: str) -> Deploy:
        """``getSiteDeploy``."""
        path = f"/sites/{_segment(site_id)}/deploys/{_segment(deploy_id)}"
        return Deploy.from_json(self._json("GET", path, what=f"deploy {deploy_id!r}", missing=_no_deploy(deploy_id)))

    def list_deploys(self, site_id: str, per_page: int = 20) -> list[Deploy]:
        """``listSiteDeploys``, newest first."""
        path = f"/sites/{_segment(site_id)}/deploys?per_page={per_page}"
        data = self._json("GET", path, what=f"the deploys of site {site_id!r}", missing=_no_site(site_id), shape=list)
        return [Deploy.from_json(_object(item, "a deploy in the list")) for item in data]

    def upload_file(self, deploy_id: str, path: str, body: bytes) -> None:
        """``uploadDeployFile``: the exact bytes of ``path``, each of its segments percent-encoded."""
        encoded = "/".join(_segment(part) for part in path.split("/"))
        self._request(
            "PUT",
            f"/deploys/{_segment(deploy_id)}/files/{encoded}",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
            what=f"the upload of {path!r}",
            missing=(
                f"Netlify refused the upload of {path!r} to draft deploy {deploy_id!r} as not found",
                "the draft expired or was deleted, or it does not expect this file: run the deploy again, "
                "and rename the file if it fails again",
            ),
        )

    def restore_deploy(self, site_id: str, deploy_id: str) -> Deploy:
        """``restoreSiteDeploy``: make ``deploy_id`` the live deploy (publishes a draft, or rolls back)."""
        path = f"/sites/{_segment(site_id)}/deploys/{_segment(deploy_id)}/restore"
        what = f"publishing deploy {deploy_id!r}"
        return Deploy.from_json(self._json("POST", path, what=what, missing=_no_deploy(deploy_id)))

    # -- split tests (a canary of the front end) -------------------------------------------

    def list_split_tests(self, site_id: str) -> list[SplitTest]:
        """``getSplitTests``: a site has at most one; it stays (inactive) once unpublished."""
        path = f"/sites/{_segment(site_id)}/traffic_splits"
        what = f"the split tests of site {site_id!r}"
        data = self._json("GET", path, what=what, missing=_no_site(site_id), shape=list)
        return [SplitTest.from_json(_object(item, "a split test in the list")) for item in data]

    def create_split_test(self, site_id: str, weights: Mapping[str, int]) -> SplitTest:
        """``createSplitTest``: ``weights`` maps each branch to its percentage (they add up to 100)."""
        path = f"/sites/{_segment(site_id)}/traffic_splits"
        body = {"branch_tests": dict(weights)}
        what = f"a split test of site {site_id!r}"
        return SplitTest.from_json(self._json("POST", path, json=body, what=what, missing=_no_site(site_id)))

    def update_split_test(self, site_id: str, split_test_id: str, weights: Mapping[str, int]) -> SplitTest:
        """``updateSplitTest``: new percentages (or branches) for the split test."""
        path = f"/sites/{_segment(site_id)}/traffic_splits/{_segment(split_test_id)}"
        what = f"split test {split_test_id!r}"
        body = {"branch_tests": dict(weights)}
        return SplitTest.from_json(self._json("PUT", path, json=body, what=what, missing=_no_split_test(split_test_id)))

    def get_split_test(self, site_id: str, split_test_id: str) -> SplitTest:
        """``getSplitTest``."""
        path = f"/sites/{_segment(site_id)}/traffic_splits/{_segment(split_test_id)}"
        what = f"split test {split_test_id!r}"
        return SplitTest.from_json(self._json("GET", path, what=what, missing=_no_split_test(split_test_id)))

    def enable_split_test(self, site_id: str, split_test_id: str) -> None:
        """``enableSplitTest`` (204): the site's traffic is divided as the test says."""
        path = f"/sites/{_segment(site_id)}/traffic_splits/{_segment(split_test_id)}/publish"
        what = f"starting split test {split_test_id!r}"
        self._request("POST", path, what=what, missing=_no_split_test(split_test_id))

    def disable_split_test(self, site_id: str, split_test_id: str) -> None:
        """``disableSplitTest`` (204): all traffic to the published deploy again."""
        path = f"/sites/{_segment(site_id)}/traffic_splits/{_segment(split_test_id)}/unpublish"
        what = f"stopping split test {split_test_id!r}"
        self._request("POST", path, what=what, missing=_no_split_test(split_test_id))

    # -- the transport --------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        missing: tuple[str, str] | None = None,
        json: Any = None,
        shape: type = dict,
    ) -> Any:
        """The answer's JSON, which must be a ``shape`` (an object, or a list for the listings)."""
        response = self._request(method, path, json=json, what=what, missing=missing)
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            message = f"Netlify answered {what} with something that is not JSON it can read"
            raise UnexpectedAnswer(message, response.status_code) from None
        if not isinstance(data, shape):
            expected = "an object" if shape is dict else "a list"
            message = f"Netlify answered {what} with {_kind(data)}, where its API returns {expected}"
            raise UnexpectedAnswer(message, response.status_code)
        return data

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        missing: tuple[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``missing``: what a 404 means for this call and what to do, ``(statement, advice)``."""
        url = self.api_url + path
        call_ends = time.monotonic() + self.call_seconds
        attempt_seconds = self.attempt_seconds + len(content or b"") / UPLOAD_BYTES_PER_SECOND
        attempt = 0
        while True:
            attempt += 1
            seconds = min(attempt_seconds, call_ends - time.monotonic())
            try:
                response = self._exchange(method, url, seconds, json, content, headers)
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.TimeoutException) and _DEADLINE.passed:
                    why = f"its answer was not over within {seconds:.0f} s"
                else:  # the transport's words may quote the server's bytes (a header h11 refused)
                    why = f"{type(exc).__name__}: {self.quoted(str(exc), 200)}"
                if attempt > self.retries or call_ends - time.monotonic() <= 0:
                    invalid = isinstance(exc, httpx.RemoteProtocolError)
                    raise ConnectionFailed(
                        self._mask(
                            f"{'an answer that is not valid HTTP' if invalid else 'no answer'} from Netlify's API "
                            f"at {self.api_url} for {what} after {attempt} tries ({why}); check the network, or "
                            "NETLIFY_API_URL"
                        )
                    ) from None
                self._wait(self._backoff(attempt), f"{what}: {why}", attempt, call_ends)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return response
            if 300 <= status < 400:
                to = response.headers.get("Location", "")
                raise UnexpectedAnswer(
                    self._mask(
                        f"Netlify's API answered {what} with a redirect (HTTP {status}"
                        f"{' to ' + self.quoted(to, 200) if to else ''}); it never redirects: check NETLIFY_API_URL"
                    ),
                    status,
                )
            retryable = status == 429 or status >= 500
            if retryable and attempt <= self.retries:
                delay = retry_after(response.headers.get("Retry-After")) if status == 429 else None
                delay = min(MAX_RETRY_AFTER, delay) if delay is not None else self._backoff(attempt)
                if delay < call_ends - time.monotonic():  # else the answer stands: waiting would outlast the call
                    self._wait(delay, f"{what}: HTTP {status}", attempt, call_ends)
                    continue
            raise self._error(status, response, what, attempt, missing)

    def _exchange(
        self,
        method: str,
        url: str,
        seconds: float,
        json_body: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Answer:
        """One attempt, all of it within ``seconds``; the body read up to :data:`MAX_BODY` bytes."""
        _DEADLINE.start(seconds)
        try:
            with self._http.stream(method, url, json=json_body, content=content, headers=headers) as response:
                body = bytearray()
                # As sent (decompressed below, within the cap); a transport that hands over an
                # answer already read (a test's mock) has it in memory already.
                raw = iter([response.content]) if response.is_stream_consumed else response.iter_raw()
                for chunk in raw:
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise _too_large(response.status_code)
                return Answer(response.status_code, response.headers, _decoded(response, bytes(body)))
        finally:
            _DEADLINE.stop()

    def _backoff(self, attempt: int) -> float:
        base: float = self.backoff * 2 ** (attempt - 1)
        return min(30.0, base * (0.75 + random.random() / 2))  # jitter: many clients do not retry in step

    def _wait(self, seconds: float, why: str, attempt: int, call_ends: float) -> None:
        seconds = max(0.0, min(seconds, call_ends - time.monotonic()))  # never past the call's deadline
        if self.on_retry:
            self.on_retry(shown(self._mask(f"{why}; retry {attempt} of {self.retries} in {seconds:.1f}s"), lines=False))
        self._sleep(seconds)

    def _error(
        self, status: int, response: Answer, what: str, attempt: int, missing: tuple[str, str] | None = None
    ) -> NetlifyError:
        said = _message(response, self.quoted)
        detail = f" ({said})" if said else ""
        if status in {401, 403}:
            return AuthError(
                self._mask(
                    f"Netlify refused the token for {what}: HTTP {status}{detail}; check NETLIFY_AUTH_TOKEN "
                    "(a personal access token of a member of the site's team)"
                ),
                status,
            )
        if status == 404:
            statement, advice = missing or (f"Netlify found nothing for {what}", "check NETLIFY_SITE_ID")
            return NotFound(self._mask(f"{statement} (HTTP 404{detail}); {advice}"), status)
        if status == 429:
            return RateLimited(
                self._mask(f"Netlify kept rate-limiting {what} after {attempt} tries{detail}; wait a minute and retry"),
                status,
            )
        if status >= 500:
            return ServerError(
                self._mask(
                    f"Netlify failed {what} with HTTP {status} after {attempt} tries{detail}; "
                    "see https://www.netlifystatus.com and retry"
                ),
                status,
            )
        return ValidationFailed(self._mask(f"Netlify refused {what}: HTTP {status}{detail}"), status)

    def _mask(self, text: str) -> str:
        return redact.scrub(text, {"NETLIFY_AUTH_TOKEN": self._token})

    def quoted(self, text: str, limit: int = 300) -> str:
        """What a server wrote, for a message: one line, secrets masked, control characters as
        escapes; and not at all when it holds the token in a form masking would miss: split by
        whitespace, controls or invisible characters, in another case or width, or a piece of it."""
        squeezed = _HIDING.sub("", text)
        if self._mask(squeezed) != squeezed or _holds_a_run(text, self._token):
            return "(Netlify's text quoted a secret; it is not shown)"
        return shown(" ".join(self._mask(text).split()), lines=False)[:limit]


# A run of this many of a token's letters and digits, in order, found among any other characters:
# the token echoed with something between its characters (ESC, U+E0100, a space), or cut off.
TOKEN_RUN = 12


# Escapes a text may carry a character in (Python's repr, JSON): the letters of the escape are
# not the text's, and would break a run of the token's.
_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[0-7]{1,3}|[abfnrtv])")


def _letters_and_digits(text: str) -> str:
    """``text`` as a reader sees its letters and digits: escapes read past, compatibility forms
    (fullwidth, bold, circled) and letters with marks (n with an acute) as plain ones, one case,
    and nothing else."""
    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", _ESCAPE.sub("", text)).casefold())


def _holds_a_run(text: str, token: str) -> bool:
    """Whether ``text`` shows :data:`TOKEN_RUN` consecutive letters and digits of ``token``, as it
    is, percent-decoded (twice) or HTML-unescaped."""
    letters = _letters_and_digits(token)
    runs = {letters[start : start + TOKEN_RUN] for start in range(len(letters) - TOKEN_RUN + 1)}
    once = urllib.parse.unquote(text)
    readings = {text, once, urllib.parse.unquote(once), html.unescape(text)}
    return any(run in _letters_and_digits(reading) for reading in readings for run in runs)


def _no_site(site_id: str) -> tuple[str, str]:
    return f"Netlify has no site {site_id!r}", "check NETLIFY_SITE_ID (the site's API ID, in Site configuration)"


def _no_deploy(deploy_id: str) -> tuple[str, str]:
    return f"Netlify has no deploy {deploy_id!r}", "check NETLIFY_SITE_ID and the deploy's id"


def _no_split_test(split_test_id: str) -> tuple[str, str]:
    return f"Netlify has no split test {split_test_id!r}", "check NETLIFY_SITE_ID; `inv canary status` shows the test"


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _message(response: Answer, quoted: Callable[[str], str]) -> str:
    """The ``message`` of Netlify's error body, or a short excerpt of the body, ``quoted`` (one
    line, secrets masked before anything is cut, so no part of one survives the cut)."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        data = None
    said = data.get("message") if isinstance(data, dict) else None
    return quoted(said) if isinstance(said, str) else quoted(response.text)[:200]


def _too_large(status: int) -> UnexpectedAnswer:
    return UnexpectedAnswer(
        f"Netlify's API answered with more than {MAX_BODY // (1024 * 1024)} MB; its answers are far smaller: "
        "check NETLIFY_API_URL",
        status,
    )


def _decoded(response: httpx.Response, body: bytes) -> bytes:
    """The body without its Content-Encoding, never more than :data:`MAX_BODY` bytes of it: the
    client asks for gzip only, so gzip (once) is all it takes; a bomb stops at the cap, not when
    memory runs out."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in {"", "identity"}:
        return body
    if encoding != "gzip":  # named only when it is one of HTTP's: the header is the server's text
        named = encoding if encoding in {"br", "deflate", "compress", "zstd", "x-gzip"} else "one HTTP has no name for"
        raise UnexpectedAnswer(
            f"Netlify's API answered in an encoding it was not asked for ({named})", response.status_code
        )
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflate.decompress(body, MAX_BODY + 1)
    except zlib.error:
        raise UnexpectedAnswer(
            "Netlify's API answered with a gzip body that does not decompress", response.status_code
        ) from None
    if len(data) > MAX_BODY or inflate.unconsumed_tail:
        raise _too_large(response.status_code)
    return data


# A deploy's state (new, uploading, prepared, ready, error...), and its URLs as Netlify writes them.
_STATE = re.compile(r"[a-z_]{1,40}")
_URL = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?(?:/[!-~]*)?")


def _text(data: Mapping[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    """The text field ``key`` of Netlify's object ("" when it is absent or null), held to ``pattern``."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or (pattern is not None and value and not pattern.fullmatch(value)):
        shape = "not in the form Netlify writes it" if isinstance(value, str) else _kind(value)
        raise UnexpectedAnswer(f"Netlify's API answered with a {key} that is {shape}")
    return value


def _kind(value: object) -> str:
    """What a JSON value is, for a message (never its content)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedAnswer(f"Netlify's API answered {what} as {_kind(value)}, where it returns an object")
    return value


@dataclass(frozen=True)
class Answer:
    """An answer read whole (within its deadline and :data:`MAX_BODY`)."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Deadline(threading.local):
    """When this thread's API call attempt must be over (``time.monotonic()``); None: no deadline."""

    at: float | None = None
    ended: float = 0.0  # when the last attempt's deadline was

    def start(self, seconds: float) -> None:
        self.at = time.monotonic() + max(seconds, 0.0)

    def stop(self) -> None:
        self.ended, self.at = self.at or 0.0, None

    @property
    def passed(self) -> bool:
        """Whether the last attempt ran into its deadline."""
        return bool(self.ended) and time.monotonic() >= self.ended - 0.05

    def bound(self, timeout: float | None) -> float | None:
        """``timeout`` for one network operation, cut to the time left; past the deadline, a timeout."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt's deadline passed")
        return left if timeout is None else min(timeout, left)


_DEADLINE = _Deadline()


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _DEADLINE.bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _DEADLINE.bound(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _DEADLINE.bound(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's own network backend, its connections bounded by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        connected = self._inner.connect_tcp(host, port, _DEADLINE.bound(timeout), local_address, socket_options)
        return _Stream(connected)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _DEADLINE.bound(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bounded(client: httpx.Client) -> httpx.Client:
    """``client`` with the deadline on every connection of its transports (the default one, and
    those of proxies from the environment). httpx has no setting for it: each transport's httpcore
    pool gets the backend. A transport without a pool (a test's mock) is left as it is."""
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            pool._network_backend = _Backend(pool._network_backend)
    return client
