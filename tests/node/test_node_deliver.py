"""What a channel takes from an authenticated peer's frame (``ChannelService.deliver``):
a consensus message must name the peer that sent the frame, except a NEW-VIEW, which a
replica passes on to a peer left behind. The replica holds some messages unverified
until it knows the validator set of their height (docs/consensus.md, "Sets not known
yet"), so one peer must not fill another's share."""

from __future__ import annotations

from pathlib import Path

from consensus.messages import Commit, NewView, encode_message, sign
from ledger.keyfile import load_key_file
from node.runtime import NodeRuntime
from tests.node.test_node_commit_batches import CH


def test_a_message_naming_another_sender_than_its_frame_is_refused(
    tmp_path: Path, runtime: NodeRuntime
) -> None:
    svc = runtime.channels[CH]
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    vote = encode_message(sign(Commit(CH, "court-node", 0, 1, b"\x01" * 32), court))
    assert not svc.deliver("risk-node", vote)
    assert svc.metrics.rejected_messages.value(CH, "sender_mismatch") == 1
    assert svc.deliver("court-node", vote)
    new_view = encode_message(sign(NewView(CH, "court-node", 1, (), ()), court))
    assert svc.deliver("risk-node", new_view)
    assert svc.metrics.rejected_messages.value(CH, "sender_mismatch") == 1
