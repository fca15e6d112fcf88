"""The Django API with Django's test client, and once for real under gunicorn.

Every error a client can cause is a 4xx JSON answer with a message, never a 500.
"""

from __future__ import annotations

import json
import uuid

import pytest

from labkit.backend import ids, likes, schema
from labkit.web import WebConfig, WebServer, configure


@pytest.fixture(scope="module")
def site(lab):
    """A database of this module's own, two users and a media item, and Django set up on it."""
    db = f"web_{uuid.uuid4().hex[:10]}"
    schema.create_database(lab.leader, db, followers=lab.followers, shards=4)
    with lab.leader.connect(db) as conn:
        alice = schema.create_user(conn, "alice")
        bob = schema.create_user(conn, "bob")
        media_id = schema.create_media(conn, alice.user_id, "sunset")
    config = WebConfig.from_lab(lab, db, time_budget_s=0.5)
    configure(config)
    yield {"db": db, "alice": alice, "bob": bob, "media_id": media_id, "config": config}
    from django.db import connections
    connections.close_all()
    lab.leader.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def client(site):
    from django.test import Client
    return Client()


def auth(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Token {user.token}"}


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["error"], body
    return body["error"]


def test_like_unlike_and_read_back(lab, site, client):
    m, bob = site["media_id"], site["bob"]
    r = client.post(f"/api/media/{m}/like", **auth(bob))
    assert r.status_code == 200 and r.json()["changed"] is True
    assert client.post(f"/api/media/{m}/like", **auth(bob)).json()["changed"] is False
    lab.follower.wait_replayed()
    r = client.get(f"/api/media/{m}", **auth(bob))
    assert r.status_code == 200
    assert r.json()["like_count"] == 1 and r.json()["user_id"] == site["alice"].user_id
    assert client.delete(f"/api/media/{m}/like", **auth(bob)).json()["changed"] is True
    with lab.leader.connect(site["db"]) as conn:
        assert likes.count(conn, m) == likes.count_star(conn, m) == 0


def test_profile(site, client):
    alice = site["alice"]
    r = client.get(f"/api/users/{alice.user_id}", **auth(site["bob"]))
    assert r.status_code == 200
    assert r.json()["username"] == "alice" and r.json()["recent_media"] == [site["media_id"]]


@pytest.mark.parametrize("path", ["/api/media/{unknown}", "/api/media/{unknown}/like",
                                  "/api/media/{other_shard}", "/api/users/{unknown}"])
def test_unknown_ids_are_404(site, client, path):
    unknown, other_shard = ids.make_id(12345, 2, 7), ids.make_id(12345, 4000, 7)
    url = path.format(unknown=unknown, other_shard=other_shard)
    method = client.post if url.endswith("/like") else client.get
    assert "no " in error_of(method(url, **auth(site["bob"])), 404)


@pytest.mark.parametrize("bad", ["abc", "-5", "0", "1.5", "9" * 30, "0x1f", "%20"])
def test_malformed_ids_are_400(site, client, bad):
    for r in (client.get(f"/api/media/{bad}", **auth(site["bob"])),
              client.post(f"/api/media/{bad}/like", **auth(site["bob"])),
              client.get(f"/api/users/{bad}", **auth(site["bob"]))):
        assert "is not an ID" in error_of(r, 400)


@pytest.mark.parametrize("header", [None, "", "Token", "Token ", "Basic YWxpY2U6cHc=",
                                    "Token abc", "Token 123.secret", "Token {bob_id}.wrong",
                                    "Token {bob_id}", "Token {bob_id}."])
def test_missing_or_wrong_token_is_401(site, client, header):
    m = site["media_id"]
    extra = {} if header is None else {
        "HTTP_AUTHORIZATION": header.format(bob_id=site["bob"].user_id)}
    for r in (client.post(f"/api/media/{m}/like", **extra), client.get(f"/api/media/{m}", **extra)):
        assert "token" in error_of(r, 401)


@pytest.mark.parametrize("method, path", [("get", "/api/media/{m}/like"),
                                          ("put", "/api/media/{m}/like"),
                                          ("post", "/api/media/{m}"),
                                          ("delete", "/api/users/{u}"),
                                          ("post", "/api/constant")])
def test_wrong_method_is_405_with_allow_header(site, client, method, path):
    url = path.format(m=site["media_id"], u=site["alice"].user_id)
    r = getattr(client, method)(url, **auth(site["bob"]))
    assert "not allowed" in error_of(r, 405)
    assert r["Allow"]


def test_unknown_url_is_json_404(site, client):
    assert "no endpoint" in error_of(client.get("/api/nothing/here"), 404)


def test_slow_dependency_is_cut_off_by_the_time_budget(site, client):
    m = site["media_id"]
    assert client.get(f"/api/media/{m}?dependency_ms=10", **auth(site["bob"])).status_code == 200
    r = client.get(f"/api/media/{m}?dependency_ms=5000", **auth(site["bob"]))
    assert "time budget" in error_of(r, 504)
    assert "milliseconds" in error_of(
        client.get(f"/api/media/{m}?dependency_ms=soon", **auth(site["bob"])), 400)
    # The connection is still usable after the cancelled statement.
    assert client.get(f"/api/media/{m}", **auth(site["bob"])).status_code == 200


def test_gunicorn_serves_the_api_and_stops_cleanly(lab, site):
    from labkit._proc import listening
    workdir = lab.config.lab_dir / f"web-{uuid.uuid4().hex[:6]}"
    m, bob = site["media_id"], site["bob"]
    headers = {"Authorization": f"Token {bob.token}"}
    with WebServer(workdir, site["config"], workers=2) as web:
        assert web.running() and listening(web.host, web.port)
        status, body = web.request("POST", f"/api/media/{m}/like", headers)
        assert status == 200 and json.loads(body)["liked"] is True
        status, body = web.get(f"/api/media/{m}?dependency_ms=5000", headers)
        assert status == 504 and b"time budget" in body
        status, body = web.request("PATCH", f"/api/media/{m}/like", headers)
        assert status == 405
        web.request("DELETE", f"/api/media/{m}/like", headers)
    assert not listening(web.host, web.port)
    assert not web.running()


def test_router_sends_reads_to_the_follower_and_writes_to_the_leader(site):
    from django.db import connections, router

    from labkit.web.models import MediaLikes

    def in_recovery(alias: str) -> bool:
        with connections[alias].cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            return cur.fetchone()[0]

    assert in_recovery(router.db_for_read(MediaLikes)) is True
    assert in_recovery(router.db_for_write(MediaLikes)) is False
