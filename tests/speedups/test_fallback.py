"""Without the compiled modules the lab still works: the pure twins run, and doctor says why.

Each test runs a fresh interpreter where importing the compiled modules fails, exactly as
on a machine where they were never built (``sys.modules[name] = None`` makes the import
raise ImportError).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import sys
    for name in ("labkit.speedups._feedscore", "labkit.speedups._feedscore_c"):
        sys.modules[name] = None
""")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_load_falls_back_to_the_pure_twin_and_status_says_why():
    out = json.loads(run_python("""
        import json
        from labkit import speedups
        s, = speedups.status()
        print(json.dumps({"module": speedups.load("feedscore").__name__, "active": s.active,
                          "reason": s.reason, "variants": sorted(speedups.implementations("feedscore"))}))
    """))
    assert out["module"] == "labkit.speedups.feedscore" and out["active"] == "pure"
    assert "did not import" in out["reason"] and "pip install -e ." in out["reason"]
    assert out["variants"] == ["python"]


def test_the_feed_ranks_with_the_pure_twin():
    out = run_python("""
        import array
        from labkit.backend import ranking
        model = ranking.FeedModel([(1, "a"), (2, "b"), (3, "c")], private_ids=[3], blocks=[])
        now = 10**11
        c = ranking.Candidates(array.array("q", [(now << 23) | 1, ((now - 10**7) << 23) | 2,
                                                 (now << 23) | 3]), [2, 2, 3],
                               array.array("q", [5, 50, 9]), [2])
        scores, visible = ranking.rank(c, model, 1, now_ms=now)
        print(ranking.kernel().__name__, visible, ranking.select_page(c, scores))
    """)
    # Post 1 is older but has ten times the likes; post 3 is private and not followed.
    assert out.split() == ["labkit.speedups.feedscore", "2", "[1,", "0]"]


def test_doctor_prints_the_pure_path():
    out = run_python("""
        from labkit.cli import _print_speedups
        _print_speedups()
    """)
    assert "feedscore" in out and "pure" in out and "did not import" in out
