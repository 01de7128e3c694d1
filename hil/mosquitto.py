"""A real Mosquitto on a free loopback port with a generated config, for as long as it is needed.

Used by the rig (:mod:`hil.plugin`), by ``ngrid simulate`` (its default broker) and by the tests'
``mosquitto`` and ``mosquitto_factory`` fixtures (``tests/conftest.py``). Each broker writes its
config, password file and ACL into a directory of the caller's and is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Broker", "find_mosquitto", "free_port", "running_mosquitto"]

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def find_mosquitto() -> tuple[str | None, str | None]:
    """Return the paths of ``mosquitto`` and ``mosquitto_passwd`` (None where missing)."""
    return (
        shutil.which("mosquitto", path=_SEARCH_PATH),
        shutil.which("mosquitto_passwd", path=_SEARCH_PATH),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    """A running broker: where to reach it and where its files are."""

    host: str
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text() if path.exists() else ""


@contextlib.contextmanager
def running_mosquitto(
    directory: Path,
    *,
    users: dict[str, str] | None = None,
    acl: str | None = None,
    extra: str = "",
    start_timeout: float = 10.0,
) -> Iterator[Broker]:
    """Start Mosquitto on a free port, yield a :class:`Broker`, stop it on exit.

    ``users`` (name -> password) turns anonymous access off and writes a hashed password file;
    ``acl`` is the text of an ACL file (Mosquitto's ``acl_file`` syntax). Raises RuntimeError if
    the broker is missing or does not start listening within ``start_timeout`` seconds.
    """
    mosquitto, passwd = find_mosquitto()
    if mosquitto is None:
        raise RuntimeError("mosquitto is not installed: sudo apt-get install -y mosquitto")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"listener {port} 127.0.0.1",
        "persistence false",
        f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0:
        # As root, Mosquitto drops to user "mosquitto", who cannot read a 0700 tmp dir.
        lines.append("user root")
    if users:
        if passwd is None:
            raise RuntimeError("mosquitto_passwd is not installed (package mosquitto)")
        pwfile = directory / "passwords"
        pwfile.touch()
        for name, password in users.items():
            subprocess.run([passwd, "-b", str(pwfile), name, password], check=True)
        lines += ["allow_anonymous false", f"password_file {pwfile}"]
    else:
        lines.append("allow_anonymous true")
    if acl is not None:
        (directory / "acl").write_text(acl)
        lines.append(f"acl_file {directory / 'acl'}")
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n" + extra)
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    broker = Broker("127.0.0.1", port, directory)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"mosquitto exited ({proc.returncode}): {err}{broker.log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {port}: {broker.log}")
            time.sleep(0.05)
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
