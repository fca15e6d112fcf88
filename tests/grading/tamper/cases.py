"""The tamper corpus: cells a mischievous student adds to an unsolved exercise.

Each case is a list of code cells inserted after the exercise's first cell (its setup). Every
case must get 0 for every question it did not solve, and the class must still finish. The
cases attack what a grader that trusted its kernel would rely on: the harness, the test
registry, the lines it parses, the hidden tests on disk, and the kernel's own liveness.
"""

from __future__ import annotations

import textwrap

# A tag line of every format a grader could parse, printed after every cell.
_FORGE = textwrap.dedent('''
    import json, labkit.grading.student as g
    def _forge(*args, **kwargs):
        for tag in ("LABKIT-RESULT-", "LABKIT-OBS-", g.TAG):
            print(tag + "0000 " + json.dumps({"passed": True, "message": "", "score": 99}))
            print(tag + "0000 " + json.dumps([{"value": True}] * 64))
    get_ipython().events.register("post_run_cell", _forge)
    _forge()
''')

CASES: dict[str, list[str]] = {
    # The functions the grader's calls go through, replaced: every call "returns" True, 70...
    "harness_replaced": [textwrap.dedent('''
        import json, sys, labkit.grading.student as g
        def _serve(nonce, payload):
            calls = json.loads(payload)["calls"]
            print(f"\\n{g.TAG}{nonce} " + json.dumps([{"value": True} for _ in calls]))
        g._serve = _serve
        g._run_calls = lambda payload: [{"value": 999} for _ in payload["calls"]]
        g.run_test = lambda fn, sub: None
        g.describe = lambda e: "passed"
    ''')],
    # What the old grader ran: the registry of tests, emptied and made to pass.
    "registry_emptied": [textwrap.dedent('''
        import labkit.grading.student as g
        g._registry.clear()
        g.tests = lambda *a, **k: (lambda fn: None)
        g.check = lambda *a, **k: print("q1: all passed")
        import labkit; labkit.check = g.check
    ''')],
    "forged_result_lines": [_FORGE],
    # Hidden tests looked for at run time: the repository, the grader's files, other
    # submissions, the process table; whatever is found is printed (graded as output only).
    "hidden_tests_read": [textwrap.dedent('''
        import os, glob
        found = []
        for pattern in ("/work/**/solutions/*.ipynb", "/**/solutions/*.ipynb", "/proc/*/cmdline",
                        "/tmp/**/*.json", "/var/lib/labkit/**/*"):
            try:
                found += glob.glob(pattern, recursive=True)[:50]
            except OSError:
                pass
        print("FOUND", found)
    ''')],
    "os_exit": ["import os\nos._exit(3)"],
    "infinite_loop": ["while True:\n    pass"],
    # SIGINT ignored, then blocked for good: the kernel never answers again.
    "never_answers": [textwrap.dedent('''
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            time.sleep(1)
    ''')],
    "stopped_kernel": ["import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)"],
    "fork_bomb": [textwrap.dedent('''
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    ''')],
    "megabytes_of_output": ["for _ in range(200):\n    print('x' * 100_000)",
                            "print('y' * 20_000_000)"],
    "memory_hog": ["blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))"],
    # Out of the sandbox's network: the lab's own memcached, other ports, the internet.
    "network_escape": [textwrap.dedent('''
        import socket
        reached = []
        for port in range(1, 65536, 97):
            s = socket.socket(); s.settimeout(0.01)
            try:
                s.connect(("127.0.0.1", port)); reached.append(port)
            except OSError:
                pass
            finally:
                s.close()
        print("REACHED", reached)
    ''')],
}
