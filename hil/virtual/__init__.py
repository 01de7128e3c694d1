"""Virtual hardware that runs the real meter firmware: hosted on CPython, in the MicroPython VM,
and the virtual board (the VM's REPL on a pseudo-terminal for mpremote).

See :mod:`hil.virtual.firmware` (locating and importing device/), :mod:`hil.virtual.board`
(:class:`~hil.virtual.board.VirtualBoard`) and :mod:`hil.virtual.meter`
(:class:`~hil.virtual.meter.VirtualMeter`).
"""
