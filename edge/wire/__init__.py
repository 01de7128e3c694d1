"""Wire formats shared by meters and gateway: canonical payloads and MACs (built under issue 5)."""
