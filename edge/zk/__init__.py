"""Privacy core: Pedersen commitments and Bulletproofs range proofs (built under issue 4)."""
