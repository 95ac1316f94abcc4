"""``DOCKER_HOST=ssh://[user@]host[:port]``: the engine reached through the system's OpenSSH client.

As the docker CLI does it: each connection runs ``ssh HOST docker system dial-stdio``, which
relays the engine's API over ssh's stdin and stdout. The Docker SDK's own ssh support needs
paramiko even when told to shell out to ``ssh``; this module needs only the ``ssh`` binary, and
so uses your ``~/.ssh/config``, keys and agent. ``BatchMode``: no password prompt appears in the
middle of a task's output; use a key or ssh-agent.

ssh runs in a session of its own, so a Ctrl-C reaches this process (which closes the connection,
and ssh ends with it), not ssh, and what ssh writes to stderr is kept to say why a connection failed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from typing import IO, Any

import docker
import docker.errors
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from cnd_toolkit.errors import EngineUnavailable
from cnd_toolkit.settings import child_environment

SCHEME = "ssh://"
# The base URL the SDK's requests go to; the adapter mounted on it carries them over ssh.
BASE_URL = "http+docker://ssh"


def ssh_command(address: str, timeout: float) -> list[str]:
    """The ssh command line that relays the engine at ``address`` (``ssh://[user@]host[:port]``)."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme != "ssh" or not parts.hostname:
        raise EngineUnavailable(f"DOCKER_HOST={address} is not an ssh address; write it as ssh://[user@]host[:port]")
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise EngineUnavailable(
            f"DOCKER_HOST={address} has a path; write it as ssh://[user@]host[:port] "
            "(the remote user's default engine is used)"
        )
    try:
        port = parts.port
    except ValueError:
        raise EngineUnavailable(f"DOCKER_HOST={address} has a bad port; write it as ssh://[user@]host[:port]") from None
    command = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    if parts.username:
        command += ["-l", urllib.parse.unquote(parts.username)]
    if port:
        command += ["-p", str(port)]
    return [*command, "--", parts.hostname, "docker system dial-stdio"]


class _Relay:
    """One ``ssh ... docker system dial-stdio`` process, and what it wrote to stderr."""

    def __init__(self, command: list[str]) -> None:
        ours, theirs = socket.socketpair()
        # Open as long as the relay lives: read after ssh has ended, to say why.
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self.errors,
                start_new_session=True,
                env=child_environment(),  # ssh needs its agent and config, not the deploy's secrets
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours

    def failure(self, wait: float = 5) -> str:
        """ssh's last stderr line and exit code once it has ended, or ``""`` while it runs."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(wait)
        code = self.process.poll()
        if code is None or code == 0:
            return ""
        self.errors.seek(0)
        lines = [line.strip() for line in self.errors.read().decode("utf-8", "replace").splitlines() if line.strip()]
        said = lines[-1] if lines else "it wrote nothing"
        if code == 127 or "command not found" in said:
            return f"the host has no `docker` command for ssh to run ({said})"
        if code == 255:
            return f"ssh could not connect: {said}"
        return f"`docker system dial-stdio` on the host failed (exit code {code}): {said}"


class _Connection(urllib3.connection.HTTPConnection):
    def __init__(self, relays: _Relays, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._relays = relays
        self._relay: _Relay | None = None

    def connect(self) -> None:
        self._relay = self._relays.start()
        self._relay.socket.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
        self.sock = self._relay.socket

    def close(self) -> None:
        super().close()
        if self._relay is not None:
            # The socket is closed: ssh reads the end of its input and exits; reap it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._relay.process.wait(2)
            if self._relay.process.poll() is None:
                self._relay.process.terminate()


class _Relays:
    """Starts relays; remembers the last one, whose stderr says why a connection failed."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.last: _Relay | None = None
        self._lock = threading.Lock()

    def start(self) -> _Relay:
        relay = _Relay(self.command)
        with self._lock:
            self.last = relay
        return relay


class _Pool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, relays: _Relays, timeout: float, maxsize: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=maxsize)
        self._relays = relays
        self._relay_timeout = timeout

    def _new_conn(self) -> _Connection:
        return _Connection(self._relays, self._relay_timeout)


class _Adapter(requests.adapters.HTTPAdapter):
    def __init__(self, relays: _Relays, timeout: float, max_pool_size: int = 10) -> None:
        super().__init__()
        self._pool = _Pool(relays, timeout, max_pool_size)

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: Any = None,
    ) -> urllib3.connectionpool.HTTPConnectionPool:
        return self._pool

    def request_url(self, request: requests.PreparedRequest, proxies: Mapping[str, str] | None) -> str:
        return request.path_url  # no host in the URL, so no proxy applies

    def close(self) -> None:
        super().close()
        self._pool.close()


class SSHClient:
    """A :class:`docker.DockerClient` whose requests travel over ssh, and its relays' failures."""

    def __init__(self, address: str, timeout: float) -> None:
        if shutil.which("ssh") is None:
            raise EngineUnavailable(
                f"DOCKER_HOST={address} needs the OpenSSH client, and `ssh` is not on PATH; "
                "install it (Debian/Ubuntu: apt-get install openssh-client) or use a unix:// or tcp:// DOCKER_HOST"
            )
        self.relays = _Relays(ssh_command(address, timeout))
        # A fixed API version first: "auto" would ask an engine before the ssh adapter is mounted.
        self.client = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="1.24", timeout=int(timeout))
        api = self.client.api
        api.mount(BASE_URL, _Adapter(self.relays, timeout))
        api.base_url = BASE_URL

    def negotiate(self) -> docker.DockerClient:
        """Ask the engine (over ssh) which API version to speak, as ``version="auto"`` does."""
        api = self.client.api
        # What the SDK's "auto" sets (a private attribute: it has no public setter).
        api._version = api.version(api_version=False)["ApiVersion"]  # type: ignore[attr-defined]
        return self.client

    def failure(self) -> str:
        """Why the last ssh relay ended, in ssh's words; ``""`` if it did not fail."""
        return self.relays.last.failure() if self.relays.last else ""


def connect(address: str, timeout: float) -> docker.DockerClient:
    """A client for the engine behind ``address``, or :class:`EngineUnavailable` naming ssh's reason."""
    ssh = SSHClient(address, timeout)
    try:
        return ssh.negotiate()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        reason = ssh.failure() or " ".join(str(exc).split())
        hint = "`ssh HOST docker version` must work without a prompt (a key or ssh-agent; the host in known_hosts)"
        raise EngineUnavailable(f"No Docker engine answers at {address}: {reason}; {hint}.") from None
