"""labkit._proc's small helpers that every service uses."""

from __future__ import annotations


def test_generated_passwords_never_look_like_an_option():
    """rabbitmqctl add_user, cqlsh -p and nodetool -pw read a leading '-' as an option."""
    from labkit._proc import new_password
    drawn = [new_password() for _ in range(3000)]  # plain token_urlsafe: ~47 start with '-'
    assert not [p for p in drawn if p.startswith("-")]
    assert len(set(drawn)) == len(drawn) and all(len(p) >= 24 for p in drawn)
