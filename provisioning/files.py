"""Atomic file writes: a reader (or a power cut) sees the old file or the new one, never half.

The one implementation is :mod:`edge.configfile` (temporary file in the same directory,
fsync, ``os.replace``, fsync of the directory); the installer tools use it from here.
"""

from __future__ import annotations

from edge.configfile import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text"]
