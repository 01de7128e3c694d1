"""What the meter keeps on flash across reboots and power cuts: ``state.json``.

Shape: ``{"seq_ceil": int, "import_wh": int, "export_wh": int, "cmd_seq": int, "locks":
[[trade, wh, start, end, delivered_wh], ...]}``. Every write goes to ``state.tmp`` first and is
then renamed over ``state.json`` (atomic on LittleFS and POSIX), so a power cut leaves the old or
the new state, never a mix.

Sequence numbers are reserved in blocks: ``seq_ceil`` is the first number not yet handed out;
after a reboot the meter continues at ``seq_ceil``, skipping whatever the last block had left, so
a sequence number is never reused and flash is written once per ``seq_block`` messages.
"""

import json
import os

STATE_FILE = "state.json"
TMP_FILE = "state.tmp"


class StateError(ValueError):
    """state.json exists but cannot be read: the meter must not guess (it could reuse seqs)."""


class Store:
    """The durable state; ``load()`` it once, then ``save()`` after every change."""

    def __init__(self, root, seq_block=100):
        self.root = root.rstrip("/") + "/"
        self.seq_block = seq_block
        self.seq = 0  # next seq to hand out
        self.seq_ceil = 0  # first seq not reserved on flash
        self.import_wh = 0
        self.export_wh = 0
        self.cmd_seq = 0
        self.locks = []
        self.writes = 0

    def load(self):
        """Restore from flash (fresh state if there is none); StateError if it is unreadable."""
        try:
            with open(self.root + STATE_FILE) as f:
                text = f.read()
        except OSError:
            return False
        try:
            data = json.loads(text)
            seq_ceil = data["seq_ceil"]
            imp, exp = data["import_wh"], data["export_wh"]
            cmd_seq, locks = data["cmd_seq"], data["locks"]
            for item in locks:
                if len(item) != 5:
                    raise ValueError
            for value in (seq_ceil, imp, exp, cmd_seq):
                if type(value) is not int or value < 0:
                    raise ValueError
        except (ValueError, KeyError, TypeError):
            raise StateError(self.root + STATE_FILE + " is corrupt") from None
        self.seq = self.seq_ceil = seq_ceil
        self.import_wh, self.export_wh = imp, exp
        self.cmd_seq = cmd_seq
        self.locks = [list(item) for item in locks]
        return True

    def save(self):
        """Write the state atomically (temporary file, then rename)."""
        text = json.dumps(
            {
                "seq_ceil": self.seq_ceil,
                "import_wh": self.import_wh,
                "export_wh": self.export_wh,
                "cmd_seq": self.cmd_seq,
                "locks": self.locks,
            }
        )
        tmp = self.root + TMP_FILE
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.root + STATE_FILE)
        self.writes += 1

    def next_seq(self):
        """The next meter sequence number; reserves (and persists) a new block when needed."""
        if self.seq >= self.seq_ceil:
            self.seq_ceil = self.seq + self.seq_block
            self.save()
        seq = self.seq
        self.seq += 1
        return seq
