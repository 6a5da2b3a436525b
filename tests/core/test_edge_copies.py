"""Public copies tied to edge epochs: a full message starts a chain, a gap breaks it, the next full one mends it."""

from __future__ import annotations

import torch

from peernet.core.compressed_gossip import NodeCompressedGossip
from peernet.core.compressors import make_compressor
from peernet.core.edge_copies import EdgeCopies, EdgeRound, Incoming


def _node(index: int) -> EdgeCopies:
    return EdgeCopies(NodeCompressedGossip(index, make_compressor("topk", ratio=0.25), 0.5))


def _round(sender: EdgeCopies, receiver: EdgeCopies, r: int, epoch: int, *, lost: bool = False) -> EdgeRound:
    """Round ``r`` from ``sender`` (node 1) to ``receiver`` (node 0): the message is full when it is the first of
    ``epoch``; the receiver advances its copy (unless the message is ``lost``) and both commit."""
    v = torch.arange(8, dtype=torch.float64) * (r + 1)
    theirs = sender.prepare({"x": v}, r)
    full = sender.sends_full(0, epoch)
    mine = receiver.prepare({"x": -v}, r)
    msg = Incoming(epoch, full=theirs.step.own) if full else Incoming(epoch, compressed=theirs.step.messages)
    receiver.receive(mine, r, {} if lost else {1: msg})
    sender.commit(theirs)
    receiver.commit(mine)
    return mine


def test_a_gap_breaks_the_chain_until_a_full_message_of_a_new_epoch() -> None:
    one, zero = _node(1), _node(0)
    assert _round(one, zero, 0, epoch=0).valid == {1} and one.resyncs_sent == 1  # the epoch's first: full
    assert _round(one, zero, 1, epoch=0).valid == {1} and one.resyncs_sent == 1  # then compressed
    assert torch.equal(zero.gossip.copies[1]["x"], one.gossip.own["x"])  # the same bits at both ends
    _round(one, zero, 2, epoch=0, lost=True)
    broken = _round(one, zero, 3, epoch=0)
    assert broken.valid == set() and broken.broken == {1} and 1 not in zero.gossip.copies and zero.broken_chains == 1
    assert _round(one, zero, 4, epoch=0).valid == set()  # still broken: only a full message mends it
    mended = _round(one, zero, 5, epoch=1)  # the receiver dropped the edge: a new epoch, which starts full
    assert mended.valid == {1} and one.resyncs_sent == 2 and zero.resyncs_received == 2
    assert torch.equal(zero.gossip.copies[1]["x"], one.gossip.own["x"])
    assert _round(one, zero, 6, epoch=1).valid == {1}
    assert torch.equal(zero.gossip.copies[1]["x"], one.gossip.own["x"])
