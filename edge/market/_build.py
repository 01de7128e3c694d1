"""Compile the market core with mypyc, in place: ``make market`` runs this script.

    .venv/bin/python -P edge/market/_build.py            # build (or rebuild) the extensions
    .venv/bin/python -P edge/market/_build.py --clean    # remove them: the source runs again

mypyc (it ships with mypy) turns the modules in :data:`edge.market._native.COMPILED_MODULES`
(``events.py``, ``engine.py``) into C, and setuptools compiles that with the system's C compiler
into extension modules (``engine.cpython-311-x86_64-linux-gnu.so`` …) beside their sources, plus
mypyc's runtime for the group (``_compiled__mypyc…so``). The sources stay the only copy of the
engine: they are what mypy checks, what runs when nothing is built, and what the build compiles.

The build works in ``build/market-native/`` (git-ignored), moves each finished extension into
``edge/market/`` with an atomic rename (a running process keeps the file it mapped), and writes
``edge/market/_compiled.json`` last, with the SHA-256 of the sources it compiled; the package
runs the extensions only while that matches (see :mod:`edge.market._native`). Without a C compiler
or Python's headers it says so and exits 0: the interpreted engine is the fallback.

Run it as a file with ``-P`` (not ``-m``): importing ``edge.market`` while replacing its
extensions is what the build avoids. It reads the mypy options from ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.machinery
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = ROOT / "build" / "market-native"
GROUP = "edge.market._compiled"  # mypyc's runtime for the group: edge/market/_compiled__mypyc…so


def _compiled_modules() -> tuple[str, ...]:
    """``edge.market._native.COMPILED_MODULES``, read from its source (no package import)."""
    tree = ast.parse((HERE / "_native.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "COMPILED_MODULES"
            and node.value is not None
        ):
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("edge/market/_native.py defines no COMPILED_MODULES")


COMPILED_MODULES = _compiled_modules()
STAMP = "_compiled.json"


def _artefacts() -> list[Path]:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    names = [*COMPILED_MODULES, GROUP.rsplit(".", 1)[1] + "__mypyc"]
    return [HERE / f"{name}{suffix}" for name in names]


def clean() -> None:
    for path in [HERE / STAMP, *_artefacts()]:
        path.unlink(missing_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)


def _toolchain_problem() -> str | None:
    """Why no extension can be built here, or ``None`` if a C compiler and headers exist."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc!r} is not on PATH)"
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        return f"no Python headers ({include / 'Python.h'} is missing; apt-get install python3-dev)"
    return None


def _digests() -> dict[str, str]:
    return {
        name: hashlib.sha256((HERE / f"{name}.py").read_bytes()).hexdigest()
        for name in COMPILED_MODULES
    }


def build() -> int:
    problem = _toolchain_problem()
    if problem is not None:
        print(f"market core: not compiled, {problem}; the interpreted engine runs")
        return 0
    from mypyc.build import mypycify

    setuptools = importlib.import_module("setuptools")  # untyped in older releases
    os.chdir(ROOT)  # mypy reads its options from pyproject.toml here
    digests = _digests()
    shutil.rmtree(WORK, ignore_errors=True)
    sources = [f"edge/market/{name}.py" for name in COMPILED_MODULES]
    extensions = mypycify(sources, opt_level="3", group_name=GROUP, target_dir=str(WORK / "c"))
    setuptools.setup(
        name="ngrid-market-native",
        packages=[],
        py_modules=[],
        ext_modules=extensions,
        script_args=[
            "--quiet",
            "build_ext",
            f"--build-lib={WORK / 'lib'}",
            f"--build-temp={WORK / 'tmp'}",
        ],
    )
    if _digests() != digests:
        print("market core: a source changed during the build; run it again", file=sys.stderr)
        return 1
    (HERE / STAMP).unlink(missing_ok=True)  # no stamp: the package ignores a half-installed build
    for target in _artefacts():
        built = WORK / "lib" / "edge" / "market" / target.name
        staging = target.with_name(f".{target.name}.new")
        shutil.copyfile(built, staging)
        os.replace(staging, target)
    stamp = {"sources": digests, "python": sys.version.split()[0], "mypyc_group": GROUP}
    (HERE / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    print(f"market core: compiled {', '.join(sources)} with mypyc")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled extensions")
    args = parser.parse_args(argv)
    if args.clean:
        clean()
        print("market core: compiled extensions removed; the interpreted engine runs")
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
