"""Layer 4 — cross-chain evidence: supervision blocks anchored on the court chain.

Code map (every module is pure: no I/O, no clock; the node wires the ports):

* :mod:`~crosschain.anchor` — ``anchor`` transaction payloads (header anchors, leaf chunks)
* :mod:`~crosschain.chunks` — leaf chunks proven as aligned subtrees of a record_root
* :mod:`~crosschain.validator_history` — another channel's validator sets, followed
  through certified config blocks (shared by the light clients and receipt verifiers)
* :mod:`~crosschain.light_client` — the court chain's acceptance rule for anchors
* :mod:`~crosschain.anchor_rules` — the judicial ``anchor`` rule, its state and indexes
* :mod:`~crosschain.evidence_index` — the index entries (anchor and evidence)
* :mod:`~crosschain.ack` — ``anchor_receipt``: the return leg to the supervision channel
* :mod:`~crosschain.relay` — the relays (step-driven, injected ports)
* :mod:`~crosschain.receipt` — receipts: assembly and offline verification
  (specified in docs/receipts.md)
* :mod:`~crosschain.errors` — :class:`AnchorRejected`, :class:`AckRejected`

Only ``receipt``, ``anchor``, ``chunks``, ``validator_history``, ``evidence_index`` and
``errors`` are needed to verify a receipt; they import ``ledger`` only.
"""
