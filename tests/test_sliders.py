"""lk.explore: controls for a function's parameters, and its default run returned."""

from __future__ import annotations

import pytest

import labkit as lk


def test_explore_runs_once_at_the_defaults_and_returns_the_result(capsys):
    calls = []

    def run(clients=64, refill_ms=20, lease="meta"):
        calls.append((clients, refill_ms, lease))
        return clients * refill_ms

    assert lk.explore(run, clients=(1, 256), lease=["none", "meta"]) == 64 * 20
    assert calls == [(64, 20, "meta")]          # once, at the signature's defaults


def test_explore_needs_a_default_for_every_control():
    def run(clients, refill_ms=20):
        return clients

    with pytest.raises(ValueError, match="give run's parameter.* clients a default"):
        lk.explore(run, clients=(1, 256))
