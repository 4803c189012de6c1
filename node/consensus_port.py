"""The node's narrow view of the consensus core (one place to adapt if it changes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from consensus.mempool import COMMITTED, DUPLICATE, SubmitResult
from consensus.messages import (
    KIND_COMMIT,
    KIND_FETCH,
    KIND_FORWARD,
    KIND_NEW_VIEW,
    KIND_PRE_PREPARE,
    KIND_PREPARE,
    KIND_STATUS,
    KIND_VIEW_CHANGE,
    MAX_MESSAGE_BYTES,
    Message,
    message_from_wire,
)
from consensus.messages import (
    decode_message as _decode_message,
)
from consensus.messages import (
    encode_message as _encode_message,
)
from consensus.replica import Replica
from ledger.encoding import MAX_DEPTH
from ledger.errors import EncodingError
from node.metrics import NodeMetrics

#: Message kinds that may be dropped first when a peer's queue is full: they are
#: repeated (STATUS, FETCH) or re-forwarded (FORWARD) by the protocol anyway.
NON_ESSENTIAL_KINDS = frozenset({KIND_STATUS, KIND_FORWARD, KIND_FETCH})
#: Message kinds sent and stepped ahead of the rest: the votes and proposals that
#: commit blocks and change views (small, and latency-critical).
URGENT_KINDS = frozenset(
    {KIND_PRE_PREPARE, KIND_PREPARE, KIND_COMMIT, KIND_VIEW_CHANGE, KIND_NEW_VIEW}
)


def make_replica_config(
    cls: type[Any],
    *,
    node_id: str,
    channel: str,
    signer: Any,
    scheme: Any,
    genesis_prev_hash: bytes,
    overrides: Mapping[str, int],
) -> Any:
    """Build a ``ReplicaConfig``, passing only the overrides it knows."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    extra = {k: v for k, v in overrides.items() if k in known}
    return cls(
        node_id=node_id,
        channel=channel,
        signer=signer,
        scheme=scheme,
        genesis_prev_hash=genesis_prev_hash,
        **extra,
    )


def _plain(value: Any) -> None:
    """Refuse what the canonical encoding refuses but msgpack accepts: floats and
    nesting deeper than :data:`MAX_DEPTH` (integer range and str keys are checked by
    the unpacker). Iterative, and only containers and floats are visited."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    container = (list, dict, float)
    while stack:
        v, depth = stack.pop()
        kind = type(v)
        if kind is float:
            raise EncodingError("floats are not allowed in canonical values")
        if depth > MAX_DEPTH:
            raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
        items = v if kind is list else v.values()
        for x in items:
            if type(x) in container:
                stack.append((x, depth + 1))


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"MessagePack extension type {code} is not allowed")


def decode_message(data: bytes) -> Message:
    """Decode a peer's consensus message without the canonical-form re-encoding of
    :func:`consensus.messages.decode_message` (a third of its cost).

    Sound because nothing is hashed or verified over the received bytes: every
    signature and digest is recomputed from the parsed fields in canonical form, so a
    non-canonical encoding of a message authenticates exactly as its canonical one.
    Raises :class:`EncodingError`/:class:`SchemaError` like the original.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise EncodingError(f"message is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        raw = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext
        )
    except EncodingError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise EncodingError(f"not valid MessagePack: {exc}") from None
    _plain(raw)
    return message_from_wire(raw)


def decode_message_strict(data: bytes) -> Message:
    """The consensus layer's own decoder (canonical form enforced)."""
    return _decode_message(data)


def encode_message(msg: Message) -> bytes:
    return _encode_message(msg)


def is_essential(msg: Message) -> bool:
    return msg.kind not in NON_ESSENTIAL_KINDS


def is_urgent(msg: Message) -> bool:
    return msg.kind in URGENT_KINDS


def message_kind(msg: Message) -> str:
    return str(msg.kind)


def submit_result(res: SubmitResult) -> tuple[bool, str | None]:
    """``(accepted, reason)``: accepted covers new, duplicate and already committed."""
    if res.accepted or res.status in (DUPLICATE, COMMITTED):
        return True, None
    return False, res.reason or res.status


def mempool_size(replica: Replica) -> int:
    return int(replica.mempool_size)


def primary_of(replica: Replica) -> str:
    return str(replica.primary)


def mirror_counters(replica: Replica, metrics: NodeMetrics, channel: str) -> None:
    """Copy the replica's ``dropped.<reason>``, ``timeouts.<timer>`` and
    ``catchup.<event>`` counters into the node's metrics."""
    for key, value in replica.metrics.items():
        if key.startswith("dropped."):
            metrics.rejected_messages.set_total(value, channel, key[len("dropped.") :])
        elif key.startswith("timeouts."):
            metrics.timeouts.set_total(value, channel, key[len("timeouts.") :])
        elif key.startswith("catchup."):
            metrics.catchup.set_total(value, channel, key[len("catchup.") :])


def readiness(replica: Replica) -> tuple[bool, str]:
    """``(ready, why not)``: in an active view with a primary and not catching up."""
    if not replica.view_active:
        return False, f"view change to view {replica.view} in progress"
    # The replica does not expose "behind" publicly yet; its catch-up marker is read
    # defensively (absent attribute: assume caught up).
    if getattr(replica, "_behind_since", None) is not None:
        return False, "catching up"
    return True, ""
