"""Writing configuration files: the one TOML writer, atomic writes, and the path rule.

**The path rule.** Every path in a configuration file the project writes means the same thing
whatever the current directory of the process that reads it: it is either relative to the
configuration file's own directory (preferred for files in the same bundle or run directory,
so the directory can be moved as a whole) or absolute (e.g. ``/etc/ngrid/...`` in a
provisioning bundle, for the machine it is installed on). Never relative to the writer's
current directory. The readers (``edge.gateway.config.load_config``,
``coordinator.config.load_config``) resolve a relative path against the file's directory.

:func:`dumps_toml` and :func:`write_toml` enforce the rule for :class:`pathlib.PurePath`
values: a path inside the configuration file's directory is written relative to it, any other
path absolute (a relative one is taken from the writer's current directory first, which is
what the writer meant by it). Plain strings are written as given, so a writer that builds
``"gateway.key"`` itself is responsible for it. TOML is written by ``tomli-w``; templates with
comments for people (``ngrid gateway init-config``, ``ngrid provision gateway``) quote their
values with :func:`toml_value`.

**Atomic writes.** :func:`atomic_write_bytes` writes a temporary file in the target's
directory with its final permission bits, flushes and fsyncs it, renames it over the target
(``os.replace``, atomic on POSIX within one file system; or ``os.link`` when the target must
not be overwritten) and fsyncs the directory, so a reader or a power cut sees the old file or
the new one, never half of one, and a secret is never readable by others even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import tomli_w

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "config_path",
    "dumps_toml",
    "toml_value",
    "write_toml",
]


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically; the new file gets permission bits ``mode``.

    Creates missing parent directories. With ``overwrite=False`` an existing ``path`` is left
    alone and :class:`FileExistsError` is raised (the check and the creation are one step).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError if it exists; never replaces it
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, overwrite=overwrite)


def config_path(target: PurePath, *, config_dir: Path) -> str:
    """How ``target`` is written in a configuration file kept in ``config_dir`` (the rule):
    relative to ``config_dir`` (POSIX separators) if it lies inside it, else absolute. A
    relative ``target`` is taken from the current directory first."""
    absolute = Path(os.path.abspath(Path(target).expanduser()))
    base = Path(os.path.abspath(config_dir))
    try:
        return absolute.relative_to(base).as_posix() or "."
    except ValueError:
        return str(absolute)


def _paths(value: Any, config_dir: Path | None, key: str) -> Any:
    if isinstance(value, PurePath):
        if config_dir is not None:
            return config_path(value, config_dir=config_dir)
        if not value.is_absolute():
            raise ValueError(
                f"{key}: the relative path {str(value)!r} would be read relative to the "
                "configuration file's directory: pass config_dir, an absolute path or a string"
            )
        return str(value)
    if isinstance(value, Mapping):
        return {k: _paths(v, config_dir, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_paths(v, config_dir, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def dumps_toml(document: Mapping[str, Any], *, config_dir: Path | None = None) -> str:
    """``document`` as TOML text (``tomli-w``): tables ``[name]``, lists of tables
    ``[[name]]``. :class:`~pathlib.PurePath` values follow the path rule for a file kept in
    ``config_dir`` (:func:`config_path`); without ``config_dir`` they must be absolute
    (ValueError). Raises TypeError for a value TOML cannot hold (None, for one)."""
    return tomli_w.dumps(_paths(document, config_dir, ""))


def toml_value(value: Any) -> str:
    """One TOML value as text (a string quoted and escaped, a number, a boolean, an array), for
    templates that keep their comments: ``f"id = {toml_value(gateway_id)}"``. TypeError for a
    table or a value TOML cannot hold."""
    if isinstance(value, Mapping):
        raise TypeError(f"a table is not a value here: {value!r}")
    text = tomli_w.dumps({"v": value})
    return text.removeprefix("v = ").removesuffix("\n")


def write_toml(path: Path, document: Mapping[str, Any], *, mode: int = 0o600) -> Path:
    """Write ``document`` (:func:`dumps_toml`, paths by the rule for ``path``'s directory) to
    ``path`` atomically with permission bits ``mode``; return ``path``."""
    path = Path(path)
    atomic_write_text(path, dumps_toml(document, config_dir=path.parent), mode=mode)
    return path
