"""Layer 1: canonical encoding, hashing, Merkle proofs, blocks, certificates, identities
(pure; importable without plyvel) and the LevelDB block store (:mod:`ledger.store`)."""
