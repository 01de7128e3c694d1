"""``python -m coordinator.soroban.contract``: rebuild anchor.wasm from anchor_contract.py."""

from coordinator.soroban.contract import main

main()
