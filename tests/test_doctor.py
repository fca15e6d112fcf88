"""`labkit doctor` says which providers can run here, and why not."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from pathlib import Path

import pytest

from labkit.cli import main
from labkit.config import LabConfig
from labkit.providers.docker import DockerProvider


def _provider_lines(out: str) -> dict[str, str]:
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("provider "))
    return {l.split()[0]: l for l in lines[start + 1:start + 4]}


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _serve(path: Path, answers: dict[str, tuple[int, bytes]]) -> _Engine:
    """An HTTP server on a Unix socket answering GET paths as given (Docker's /_ping, /version)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers.get(self.path, (404, b"no"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:  # a Unix socket has no client address
            return "unix"

        def log_message(self, *args: object) -> None:
            pass

    server = _Engine(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_doctor_lists_native_external_and_docker(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    assert main(["doctor"]) == 0  # the lab's own provider (native) can run
    rows = _provider_lines(capsys.readouterr().out)
    assert rows["native"].split()[1] == "yes" and "(this lab's)" in rows["native"]
    assert rows["external"].split()[1] == "no" and "add an [external] table" in rows["external"]
    assert rows["docker"].split()[1] == "no" and "no Docker engine answers" in rows["docker"]
    assert "apt-get install docker.io" in rows["docker"]


def test_a_missing_toxiproxy_is_named_with_how_to_get_it(capsys, monkeypatch, tmp_path):
    """No Debian package has Toxiproxy: doctor must not print an apt-get line that fails."""
    monkeypatch.setenv("LABKIT_TOXIPROXY_BIN", str(tmp_path / "no-toxiproxy"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["toxiproxy", "MISSING"] for line in out.splitlines())
    assert "`bash containers/bootstrap.sh` builds v2.8.0" in out
    assert not [line for line in out.splitlines()
                if "apt-get install -y" in line and "toxiproxy" in line]


def test_the_docker_check_knows_an_engine_from_something_else(tmp_path):
    sock = tmp_path / "docker.sock"
    engine = _serve(sock, {"/_ping": (200, b"OK"),
                           "/version": (200, json.dumps({"Version": "28.2.2"}).encode())})
    cfg = LabConfig.load(environ={}, docker_host=f"unix://{sock}")
    try:
        verdict = DockerProvider().check(cfg)
        assert verdict.ok and "Docker engine 28.2.2 answers" in verdict.why
    finally:
        engine.shutdown()
        engine.server_close()
    sock.unlink()
    impostor = _serve(sock, {"/_ping": (200, b"<html>hello</html>")})
    try:
        verdict = DockerProvider().check(cfg)
        assert not verdict.ok and "not a Docker engine's OK" in verdict.why
    finally:
        impostor.shutdown()
        impostor.server_close()


def _external_toml(path: Path, lab, broker_url: str) -> Path:
    path.write_text(f"""
provider = "external"
[external]
leader = {json.dumps(lab.leader.dsn())}
followers = {json.dumps([f.dsn() for f in lab.followers])}
memcached = {json.dumps([f"{h}:{p}" for h, p in lab.cache_servers])}
broker_url = {json.dumps(broker_url)}
""")
    return path


@pytest.mark.parametrize("broken", [False, True])
def test_doctor_asks_every_server_lab_toml_names(lab, capsys, monkeypatch, tmp_path, broken):
    url = lab.broker_url.replace(f":{lab.rabbitmq.password}@", ":wrong@") if broken else \
        lab.broker_url
    monkeypatch.setenv("LABKIT_CONFIG", str(_external_toml(tmp_path / "lab.toml", lab, url)))
    assert main(["doctor"]) == (1 if broken else 0)
    out = capsys.readouterr().out
    rows = _provider_lines(out)
    assert "(this lab's)" in rows["external"]
    details = {l.split()[0]: l.split()[1] for l in out.splitlines() if l.startswith(" " * 24)}
    assert details["postgres-leader"] == details["postgres-follower1"] == "ok", out
    assert details["memcached-0"] == "ok" and details["rabbitmq"] == ("DOWN" if broken else "ok")
    if broken:
        assert rows["external"].split()[1] == "no" and "not answering: rabbitmq" in out
    else:
        assert rows["external"].split()[1] == "yes" and "the external provider can run" in out
