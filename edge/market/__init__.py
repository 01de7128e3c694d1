"""Market core: the deterministic continuous double auction (built under issue 3)."""
