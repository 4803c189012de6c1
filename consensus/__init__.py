"""consensus — the PBFT replica of one channel, as a sans-I/O state machine.

Public names are re-exported here (httpx style); the modules behind them are:

* :mod:`consensus.config` — :class:`ReplicaConfig`, every bound;
* :mod:`consensus.app` — :class:`Application`, what the replica asks the channel layer;
* :mod:`consensus.messages` — the messages, their wire forms and signatures;
* :mod:`consensus.replica` — :class:`Replica` (``step/submit/tick/ready/advance``),
  :class:`Ready`, :class:`Outbound`;
* :mod:`consensus.durable` — :class:`DurableState`, persisted before messages go out;
* :mod:`consensus.viewchange` — VIEW-CHANGE checks and the NEW-VIEW selection rule;
* :mod:`consensus.mempool` — the bounded mempool and :class:`SubmitResult`;
* :mod:`consensus.errors` — :class:`Misbehaviour` (a peer's fault: evidence) and
  :class:`InternalError` (our own invariant breach).

docs/consensus.md describes the protocol and why it is safe.
"""

from consensus.app import Application
from consensus.config import ReplicaConfig
from consensus.durable import DurableState
from consensus.errors import InternalError, Misbehaviour
from consensus.mempool import SubmitResult
from consensus.messages import (
    Blocks,
    Commit,
    Fetch,
    Forward,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Status,
    ViewChange,
    decode_message,
    describe,
    encode_message,
    sign,
)
from consensus.replica import Outbound, Ready, Replica

__all__ = [
    "Application",
    "Blocks",
    "Commit",
    "DurableState",
    "Fetch",
    "Forward",
    "InternalError",
    "Message",
    "Misbehaviour",
    "NewView",
    "Outbound",
    "PrePrepare",
    "Prepare",
    "PreparedCertificate",
    "Ready",
    "Replica",
    "ReplicaConfig",
    "Status",
    "SubmitResult",
    "ViewChange",
    "decode_message",
    "describe",
    "encode_message",
    "sign",
]
