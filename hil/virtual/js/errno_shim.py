# Run by vm_board.mjs in every fresh VM, before the REPL starts: makes the port's filesystem
# answer the way a board's does.
# The WebAssembly port's filesystem raises OSError with Emscripten's errno numbers (ENOENT is
# 44 there, 2 in MicroPython's errno module and on every board). mpremote and user code compare
# against MicroPython's numbers, so the virtual board re-raises them as a board would.
import builtins
import os

_EMSCRIPTEN = {
    63: 1,  # EPERM
    44: 2,  # ENOENT
    29: 5,  # EIO
    8: 9,  # EBADF
    6: 11,  # EAGAIN
    48: 12,  # ENOMEM
    2: 13,  # EACCES
    10: 16,  # EBUSY
    20: 17,  # EEXIST
    75: 18,  # EXDEV
    43: 19,  # ENODEV
    54: 20,  # ENOTDIR
    31: 21,  # EISDIR
    28: 22,  # EINVAL
    41: 23,  # ENFILE
    33: 24,  # EMFILE
    51: 28,  # ENOSPC
    69: 30,  # EROFS
    55: 39,  # ENOTEMPTY
}


def _wrap(fn):
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            code = err.args[0] if err.args else None
            if code in _EMSCRIPTEN:
                raise OSError(_EMSCRIPTEN[code]) from None
            raise

    return call


for _name in (
    "stat",
    "listdir",
    "ilistdir",
    "mkdir",
    "rmdir",
    "remove",
    "unlink",
    "rename",
    "chdir",
    "statvfs",
):
    if hasattr(os, _name):
        setattr(os, _name, _wrap(getattr(os, _name)))
builtins.open = _wrap(builtins.open)

# The port's ilistdir() gives (name, type, inode) without the size boards report as a 4th item
# (mpremote's `fs ls` shows it); add it from stat().
_plain_ilistdir = os.ilistdir


def _sized_ilistdir(path="."):
    prefix = "" if path in ("", ".") else path.rstrip("/") + "/"
    out = []
    for entry in list(_plain_ilistdir(path)):
        if len(entry) == 3 and entry[1] == 0x8000:
            entry = (entry[0], entry[1], entry[2], os.stat(prefix + entry[0])[6])
        out.append(entry)
    return iter(out)


os.ilistdir = _sized_ilistdir
del _name, _wrap, builtins
