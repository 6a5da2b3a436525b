"""The rejoin log line says where the parameters came from: a checkpoint only when one was loaded."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from peernet.core.rounds import RoundPolicy
from peernet.node.daemon import NodeDaemon


def rejoin(restarted: bool, caplog: pytest.LogCaptureFixture) -> tuple[Any, str]:
    exchange = SimpleNamespace(wait_replies=lambda *a: None, replies={1: 45, 2: 46}, seen_round={}, byes=set(),
                               latest={}, skip_to=lambda r: None)
    session = SimpleNamespace(exchange=exchange, x=torch.zeros(3), state={}, tracker=None,
                              edges=SimpleNamespace(restart=lambda tracker: None), rejoin_source=None)
    daemon = SimpleNamespace(cfg=SimpleNamespace(rejoin_wait=0.1, rejoin="auto", checkpoint_every=20),
                             policy=RoundPolicy())
    with caplog.at_level(logging.WARNING, logger="peernet.node"):
        round_, _ = NodeDaemon._rejoin(daemon, session, 40, restarted=restarted)  # type: ignore[arg-type]
    assert round_ == 45
    return session, caplog.records[-1].getMessage()


def test_a_restart_names_its_checkpoint(caplog: pytest.LogCaptureFixture) -> None:
    session, line = rejoin(True, caplog)
    assert line == "rejoining at round 45 (checkpoint round 40, neighbours' rounds {1: 45, 2: 46}, parameters " \
                   "from the checkpoint)"
    assert session.rejoin_source == "checkpoint"


def test_a_catch_up_loaded_no_checkpoint_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    session, line = rejoin(False, caplog)
    assert "checkpoint" not in line
    assert line == "catching up at round 45 (stalled at round 40, neighbours' rounds {1: 45, 2: 46}, parameters " \
                   "from the node's own model)"
    assert session.rejoin_source == "own"
