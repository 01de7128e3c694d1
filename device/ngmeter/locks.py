"""Energy locks held for trades, and the reserve rule (docs/wire.md, "Lock rule").

Pure integer logic, runs on MicroPython and CPython. A lock is the list
``[trade, wh, start, end, delivered_wh]`` (Wh, Unix s), the form it has in state.json.
"""

from ngmeter import wire

MAX_LOCKS = 8
TRADE, WH, START, END, DELIVERED = 0, 1, 2, 3, 4


def reserve_wh(capacity_wh, reserve_bp):
    """The reserve in Wh, rounded up (the conservative side)."""
    return (capacity_wh * reserve_bp + 9999) // 10000


class LockBook:
    """The locks a meter holds (shares its list with the Store so saves see every change)."""

    def __init__(self, capacity_wh, reserve_bp, locks, max_locks=MAX_LOCKS):
        self.capacity_wh = capacity_wh
        self.reserve_bp = reserve_bp
        self.locks = locks
        self.max_locks = max_locks

    def find(self, trade):
        for lock in self.locks:
            if lock[TRADE] == trade:
                return lock
        return None

    def held_wh(self, now):
        """Energy still owed under locks whose interval has not ended (Wh)."""
        total = 0
        for lock in self.locks:
            if lock[END] > now and lock[WH] > lock[DELIVERED]:
                total += lock[WH] - lock[DELIVERED]
        return total

    def available_wh(self, soc_bp, now):
        """Wh the battery can still promise above its reserve, counting held locks (may be < 0)."""
        stored = self.capacity_wh * soc_bp // 10000
        return stored - reserve_wh(self.capacity_wh, self.reserve_bp) - self.held_wh(now)

    def check(self, trade, wh, start, end, soc_bp, now):
        """(reason, is_repeat) for a lock request; reason is wire.OK when it may be taken."""
        held = self.find(trade)
        if held is not None:
            if held[WH] == wh and held[START] == start and held[END] == end:
                return wire.OK, True
            return wire.CONFLICT, False
        if len(self.locks) >= self.max_locks:
            return wire.TOO_MANY_LOCKS, False
        if wh > self.available_wh(soc_bp, now):
            return wire.INSUFFICIENT_RESERVE, False
        return wire.OK, False

    def add(self, trade, wh, start, end):
        self.locks.append([trade, wh, start, end, 0])

    def remove(self, trade):
        lock = self.find(trade)
        if lock is not None:
            self.locks.remove(lock)
        return lock

    def credit(self, export_wh, now):
        """Count ``export_wh`` exported at ``now`` against active locks; return Wh credited."""
        if export_wh <= 0:
            return 0
        active = [lk for lk in self.locks if lk[START] <= now < lk[END] and lk[DELIVERED] < lk[WH]]
        active.sort(key=lambda lk: (lk[START], lk[TRADE]))
        credited = 0
        for lock in active:
            take = min(export_wh - credited, lock[WH] - lock[DELIVERED])
            lock[DELIVERED] += take
            credited += take
            if credited == export_wh:
                break
        return credited

    def active(self, now):
        """True while any lock's interval is running (drives the lock relay / inverter limit)."""
        for lock in self.locks:
            if lock[START] <= now < lock[END]:
                return True
        return False

    def ended(self, now):
        """Locks whose interval is over (their delivery is due)."""
        return [lock for lock in self.locks if lock[END] <= now]
