"""The coordinator: verifies gateways' signed settlement batches and anchors them on Soroban."""
