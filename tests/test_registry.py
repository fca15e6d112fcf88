"""The Lab joins services through the registry, and providers are chosen in one place."""

from __future__ import annotations

import pytest

from labkit import _state
from labkit.config import ALL_SERVICES, LabConfig
from labkit.lab import Lab
from labkit.lab.kinds import KINDS
from labkit.providers import choose


def test_every_service_the_config_knows_is_a_registered_kind():
    assert tuple(k.name for k in KINDS) == ALL_SERVICES


def test_lab_attributes_come_from_the_registry(tmp_path):
    lab = Lab(LabConfig.load(lab_dir=tmp_path))
    assert lab.postgres is None and lab.memcached == [] and lab.rabbitmq is None
    with pytest.raises(AttributeError, match="no attribute 'mongo'"):
        lab.mongo


def test_the_provider_that_runs_wins_when_attaching_and_a_mismatch_at_up_names_the_fix(tmp_path):
    cfg = LabConfig.load(lab_dir=tmp_path)
    assert choose(cfg, {}).name == "native"
    assert choose(cfg, {"services": {"memcached": []}}).name == "native"  # older state files
    with pytest.raises(_state.StateError, match="provider 'warp'"):
        choose(cfg, {"services": {"memcached": []}, "provider": "warp"}, attaching=True)
