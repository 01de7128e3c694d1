"""neighbourgrid meter firmware: the modules that run unchanged on MicroPython and CPython.

Only the top-level ``hal`` module (device/hal.py on the board, a host or fake hal elsewhere)
touches hardware; it is passed in, never imported from here.
"""

FW_VERSION = "0.1.0"
