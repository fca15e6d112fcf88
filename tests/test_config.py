"""LabConfig: precedence argument > LABKIT_* env > lab.toml > default, and clear errors."""

from pathlib import Path

import pytest

from labkit.config import ConfigError, LabConfig


def test_precedence(tmp_path: Path):
    toml = tmp_path / "lab.toml"
    toml.write_text('followers = 3\nmemcached_instances = 2\nport_base = 20000\n')
    env = {"LABKIT_FOLLOWERS": "2", "LABKIT_SERVICES": "postgres, memcached"}
    cfg = LabConfig.load(toml, environ=env)
    assert cfg.followers == 2                      # env beats toml
    assert cfg.memcached_instances == 2            # toml beats default
    assert cfg.services == ("postgres", "memcached")
    assert cfg.synchronous_commit == "local"       # default
    assert LabConfig.load(toml, environ=env, followers=0).followers == 0  # argument beats env


def test_lab_table_in_toml(tmp_path: Path):
    toml = tmp_path / "lab.toml"
    toml.write_text('[lab]\nlab_dir = "/tmp/somewhere"\n')
    assert LabConfig.load(toml, environ={}).lab_dir == Path("/tmp/somewhere")


@pytest.mark.parametrize("kwargs, words", [
    ({"services": ("postgres", "mongodb")}, "choose from postgres, memcached, rabbitmq"),
    ({"followers": 99}, "choose 0 to 8"),
    ({"synchronous_commit": "sometimes"}, "remote_apply"),
    ({"host": "0.0.0.0"}, "loopback"),
])
def test_bad_values_name_the_fix(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        LabConfig.load(environ={}, **kwargs)


def test_unknown_key_and_bad_number(tmp_path: Path):
    toml = tmp_path / "lab.toml"
    toml.write_text("folowers = 2\n")
    with pytest.raises(ConfigError, match="unknown setting.*folowers.*known settings"):
        LabConfig.load(toml, environ={})
    with pytest.raises(ConfigError, match="not a valid int"):
        LabConfig.load(environ={"LABKIT_FOLLOWERS": "two"})
