"""The neighbourhood gateway: pure cores (market, zk, wire) and the I/O shell beside them.

``edge`` is also the foundation the other parts build on: the coordinator replays logs with
:mod:`edge.market`, verifies proofs with :mod:`edge.zk` and parses messages with :mod:`edge.wire`.
"""
