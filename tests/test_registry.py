"""The Lab joins services through the registry, and providers are chosen in one place."""

from __future__ import annotations

import pytest

from labkit import _state
from labkit._proc import ServiceError
from labkit.config import ALL_SERVICES, LabConfig
from labkit.lab import Lab
from labkit.lab.kinds import KINDS
from labkit.providers import choose


def test_every_service_the_config_knows_is_a_registered_kind():
    names = tuple(k.name for k in KINDS)
    assert names[:len(ALL_SERVICES)] == ALL_SERVICES
    # Toxiproxy is asked for by no name: it joins with Cassandra's regions topology.
    assert names[len(ALL_SERVICES):] == ("toxiproxy",)


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
    docker_lab = {"services": {"memcached": []}, "provider": "docker"}
    assert choose(cfg, docker_lab, attaching=True).name == "docker"
    # At up, a config that asks for no provider uses the lab as it runs (`labkit experiment`
    # on a lab that `labkit up --provider docker` started) ...
    assert cfg.origin("provider") == "default"
    assert choose(cfg, docker_lab).name == "docker"
    # ... and one that asks for another provider is told what runs and how to go on.
    for asking in (cfg.replace(provider="native"),
                   LabConfig.load(lab_dir=tmp_path, environ={"LABKIT_PROVIDER": "native"})):
        assert asking.origin("provider") != "default"
        with pytest.raises(ServiceError, match=r"runs on the docker provider.*labkit down"):
            choose(asking, docker_lab)


# ------------------------------------------------------------ Cassandra topologies side by side

def test_cassandra_topologies_have_their_own_addresses_and_data(tmp_path):
    from labkit.services.cassandra import TOPOLOGIES, Cassandra
    cache = LabConfig.load().cache_dir  # jars resolved there (bootstrap), nothing starts here
    built = {t: Cassandra(tmp_path, t, cache_dir=cache) for t in TOPOLOGIES}
    for cas in built.values():
        cas._build()
    hosts = {t: [n.host for n in cas.nodes] for t, cas in built.items()}
    assert hosts["ring"] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    every = [h for hs in hosts.values() for h in hs]
    assert len(every) == len(set(every)), hosts
    dirs = [n.workdir for cas in built.values() for n in cas.nodes]
    assert len(dirs) == len(set(dirs)) and all(d.parents[2] == tmp_path for d in dirs), dirs


def test_lab_cassandra_is_the_asked_for_topology_or_the_only_one(tmp_path):
    from labkit._proc import ServiceError
    from labkit.lab.kinds import BY_NAME
    from labkit.services.cassandra import Cassandra
    kind = BY_NAME["cassandra"]
    ring, regions = Cassandra(tmp_path, "ring"), Cassandra(tmp_path, "regions")
    both = {"ring": ring, "regions": regions}
    lab = Lab(LabConfig.load(lab_dir=tmp_path, environ={}))
    assert kind.access({}, lab) is None and kind.access({"ring": ring}, lab) is ring
    with pytest.raises(ServiceError, match=r"several Cassandra topologies \(ring, regions\)"):
        kind.access(both, lab)
    asked = Lab(LabConfig.load(lab_dir=tmp_path, environ={}, cassandra="regions"))
    assert kind.access(both, asked) is regions
    with pytest.raises(ServiceError, match=r"regions is not running.*cassandra='regions'"):
        kind.access({"ring": ring}, asked)
    lab.handles["cassandra"] = both
    assert lab.cassandra_topologies == both
