"""LabConfig: precedence argument > LABKIT_* env > lab.toml > default, and clear errors."""

import dataclasses
import warnings
from pathlib import Path

import pytest

from labkit.config import ConfigError, ConfigWarning, LabConfig


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
    with pytest.raises(ConfigError, match="LABKIT_FOLLOWERS='two' .*valid integer"):
        LabConfig.load(environ={"LABKIT_FOLLOWERS": "two"})


# ------------------------------------------------ issue 10: every incident, and every field

def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("line, words", [
    ("host = 127", r"host = 127 in .*lab\.toml: input should be a valid string\. host: .*loopback"),
    ("followers = 1.7", r"followers = 1\.7 in .*lab\.toml: .*fractional part.*choose 0 to 8"),
    ("startup_timeout_s = -1", r"startup_timeout_s = -1 in .*lab\.toml: .*greater than 0"),
    ('service_user = "root"', r"service_user = 'root' in .*lab\.toml: 'root' is a root account"),
    ("followers = true", r"followers = True in .*lab\.toml: a number is needed, not true/false"),
])
def test_incident_values_in_lab_toml_are_errors_naming_key_file_and_fix(tmp_path, line, words):
    path = _toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=words) as e:
        LabConfig.load(path, environ={})
    assert f"edit {path}" in str(e.value)


def test_followers_1_7_is_never_silently_1(tmp_path):
    with pytest.raises(ConfigError):
        LabConfig.load(environ={"LABKIT_FOLLOWERS": "1.7"})
    with pytest.raises(ConfigError):
        LabConfig.load(environ={}, followers=1.7)
    assert LabConfig.load(_toml(tmp_path, "followers = 2.0\n"), environ={}).followers == 2


def test_negative_timeout_from_the_environment_names_the_variable():
    with pytest.raises(ConfigError, match=r"LABKIT_STARTUP_TIMEOUT_S='-5' \(environment "
                                          r"variable\).*set or unset LABKIT_STARTUP_TIMEOUT_S"):
        LabConfig.load(environ={"LABKIT_STARTUP_TIMEOUT_S": "-5"})


def test_the_error_names_where_the_winning_value_came_from(tmp_path):
    path = _toml(tmp_path, "followers = 2\n")
    with pytest.raises(ConfigError, match=r"followers=9 \(argument\)"):
        LabConfig.load(path, environ={"LABKIT_FOLLOWERS": "3"}, followers=9)
    with pytest.raises(ConfigError, match="LABKIT_FOLLOWERS='9'"):
        LabConfig.load(path, environ={"LABKIT_FOLLOWERS": "9"})


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = _toml(tmp_path, "followers = 2\nhost = \n")
    with pytest.raises(ConfigError, match=rf"{path} is not valid TOML: .*line 2"):
        LabConfig.load(path, environ={})
    with pytest.raises(ConfigError, match=rf"{path} is not valid TOML"):
        LabConfig.load(environ={"LABKIT_CONFIG": str(path)})


def test_labkit_config_naming_a_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"LABKIT_CONFIG names {missing}, which is not a file; "
                                          "create it, fix the path, or unset LABKIT_CONFIG"):
        LabConfig.load(environ={"LABKIT_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="toml_path argument"):
        LabConfig.load(missing, environ={})


def test_unknown_labkit_variable_warns_with_the_likely_name():
    with pytest.warns(ConfigWarning, match="LABKIT_FOLOWERS is not a labkit setting and is "
                                           r"ignored \(did you mean LABKIT_FOLLOWERS\?\)"):
        cfg = LabConfig.load(environ={"LABKIT_FOLOWERS": "2"})
    assert cfg.followers == 1


def test_the_labs_own_variables_do_not_warn(lab):
    own = {"LABKIT_LAB_ID": "0" * 32, "LABKIT_SERVER_DIR": "/tmp", "LABKIT_PROCESS": "x",
           "LABKIT_GRADE": "1", "LABKIT_GRADE_DSN": "x", "LABKIT_GRADE_CACHE_PREFIX": "p",
           "LABKIT_CONFIG": ""}
    # Everything `labkit env` prints is either a setting or the lab's own.
    own.update({k: v for k, v in lab.env().items() if k.startswith("LABKIT_")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LabConfig.load(environ=own).lab_dir == lab.config.lab_dir


# One wrong value for every field: each is an error naming that key.
BAD = {
    "lab_dir": 7, "cache_dir": "", "services": "postgres,mongo", "followers": 9,
    "memcached_instances": 0, "memcached_memory_mb": 2, "port_base": 80, "host": "10.0.0.1",
    "service_user": "Not A User", "synchronous_commit": "sometimes", "startup_timeout_s": 0,
    "pg_bin_dir": "", "memcached_bin": "", "rabbitmq_server_bin": 5, "epmd_bin": "",
    "cassandra": "mesh", "cassandra_heap_mb": 64, "java_bin": "", "mvn_bin": 3,
    "provider": "kubernetes", "external": "10.0.0.5", "docker_host": "docker.example",
    "toxiproxy_bin": "", "region_delay_ms": -1, "local_delay_ms": "far",
}


def test_every_field_is_checked():
    assert set(BAD) == {f.name for f in dataclasses.fields(LabConfig)}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_of_any_field_is_an_error_naming_it(name):
    with pytest.raises(ConfigError, match=rf"{name}=.*\(argument\): .*\. {name}: .+; pass "):
        LabConfig.load(environ={}, **{name: BAD[name]})


def test_replace_checks_its_values_too():
    cfg = LabConfig.load(environ={})
    assert cfg.replace(followers=3).followers == 3
    with pytest.raises(ConfigError, match=r"followers=-1 \(argument to replace\(\)\)"):
        cfg.replace(followers=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.followers = 2
