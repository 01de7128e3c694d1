"""Which build of the market core runs: the mypyc-compiled extension modules or the source.

:data:`COMPILED_MODULES` are compiled by ``make market`` (``edge/market/_build.py``) into
extension modules beside their sources (``engine.cpython-311-x86_64-linux-gnu.so`` next to
``engine.py``), which Python's import system prefers. The build writes :data:`STAMP` last: the
SHA-256 of each source it compiled. :func:`select_build` runs when this module is first imported
(``edge/market/__init__.py`` imports it before anything else of the package). It keeps the
extensions only if every one is there and the stamp matches the sources as they are now;
otherwise (a source edited since the build, a half-finished build, or ``NGRID_MARKET_PURE=1`` in
the environment) it loads the modules from their sources, so stale compiled code never runs.
Without extensions nothing happens at all.

This is packaging, not market logic: it reads files and the environment once, at import time,
and never while the engine runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = ["COMPILED_MODULES", "PURE_ENV", "STAMP", "is_compiled", "select_build", "source_digests"]

#: The modules mypyc compiles, in import order (engine imports events).
COMPILED_MODULES: Final = ("events", "engine")
#: The build's record of what it compiled (git-ignored, like the extensions).
STAMP: Final = "_compiled.json"
#: Set to ``1`` to run the interpreted source even when the extensions are built.
PURE_ENV: Final = "NGRID_MARKET_PURE"

_HERE: Final = Path(__file__).resolve().parent
_PACKAGE: Final = "edge.market"


def source_digests(directory: Path = _HERE) -> dict[str, str]:
    """The SHA-256 (hex) of each compiled module's source in ``directory``, by module name."""
    return {
        name: hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest()
        for name in COMPILED_MODULES
    }


def _extensions(directory: Path) -> dict[str, Path]:
    """The extension modules of this interpreter's ABI that exist in ``directory``."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    found = {name: directory / f"{name}{suffix}" for name in COMPILED_MODULES}
    return {name: path for name, path in found.items() if path.exists()}


def _stale_reason(directory: Path) -> str | None:
    """Why the built extensions must not be used, or ``None`` if they are current."""
    if len(_extensions(directory)) != len(COMPILED_MODULES):
        return "the build is incomplete"
    try:
        stamp = json.loads((directory / STAMP).read_text())
        built = stamp["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STAMP} is missing or unreadable"
    for name, digest in source_digests(directory).items():
        if built.get(name) != digest:
            return f"{name}.py changed since it was compiled"
    return None


def _load_source(name: str) -> ModuleType:
    """Import ``edge.market.<name>`` from its ``.py`` file, bypassing an extension beside it."""
    full = f"{_PACKAGE}.{name}"
    path = _HERE / f"{name}.py"
    loader = importlib.machinery.SourceFileLoader(full, str(path))
    spec = importlib.util.spec_from_file_location(full, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    setattr(sys.modules[_PACKAGE], name, module)
    return module


def select_build() -> None:
    """Load the compiled modules' sources instead of their extensions if those must not run.

    Does nothing when no extension is built or the build is current and wanted. Warns
    (``RuntimeWarning``) when a build exists but is out of date, and says how to rebuild.
    """
    if not _extensions(_HERE):
        return
    if os.environ.get(PURE_ENV) == "1":
        reason = None
    else:
        reason = _stale_reason(_HERE)
        if reason is None:
            return
    for name in COMPILED_MODULES:
        if f"{_PACKAGE}.{name}" not in sys.modules:
            _load_source(name)
    if reason is not None:
        message = (
            f"edge.market: not using the compiled market core ({reason}); running the "
            "interpreted source. Rebuild it with `make market` or remove it with "
            "`make market-clean`."
        )
        # Advice only: where warnings are errors, the import still succeeds on the source.
        with contextlib.suppress(RuntimeWarning):
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def is_compiled() -> bool:
    """Whether the market core runs compiled (mypyc) rather than interpreted."""
    modules = [sys.modules.get(f"{_PACKAGE}.{name}") for name in COMPILED_MODULES]
    return all(m is not None and not str(m.__file__).endswith(".py") for m in modules)


select_build()
