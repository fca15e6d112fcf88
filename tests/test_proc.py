"""labkit._proc's small helpers that every service uses."""

from __future__ import annotations


def test_generated_passwords_never_look_like_an_option():
    """rabbitmqctl add_user, cqlsh -p and nodetool -pw read a leading '-' as an option."""
    from labkit._proc import new_password
    drawn = [new_password() for _ in range(3000)]  # plain token_urlsafe: ~47 start with '-'
    assert not [p for p in drawn if p.startswith("-")]
    assert len(set(drawn)) == len(drawn) and all(len(p) >= 24 for p in drawn)


def test_stop_returns_when_another_processs_child_ends_not_at_its_timeout(tmp_path):
    """A server started by another process (a notebook's kernel) becomes that process's zombie
    when it ends, until that parent reaps it. `labkit down` from a terminal stops it: stop must
    count the zombie as gone (it used to wait out its whole timeout, per process)."""
    import subprocess
    import sys
    import threading

    import psutil

    from labkit._proc import Proc, wait_gone
    pid_file = tmp_path / "pid"
    # the parent starts `sleep` and never reaps it
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "p = subprocess.Popen(['sleep', '600'])\n"
                               f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
                               "time.sleep(600)\n"])
    try:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            threading.Event().wait(0.05)
        pid = int(pid_file.read_text())
        proc = Proc("sleep", pid, psutil.Process(pid).create_time())
        stopper = threading.Thread(target=proc.stop, kwargs={"timeout_s": 3600})
        stopper.start()
        stopper.join(60)  # a bound on a hang, far below the timeout: not a speed measurement
        assert not stopper.is_alive(), "stop waited for the zombie to be reaped"
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not reaped by us
        assert wait_gone([psutil.Process(pid)], 3600) == []
        assert not proc.alive()
    finally:
        parent.kill()
        parent.wait()


def test_a_process_whose_first_thread_ended_still_runs_until_its_other_threads_end(tmp_path):
    """Linux shows a process as a zombie once its first thread exits, while its other threads
    may still run (a JVM's shutdown hooks, holding its ports): that is not ended yet."""
    import subprocess
    import sys

    import psutil

    from labkit._proc import Proc, wait_gone
    release = tmp_path / "release"
    code = ("import ctypes, os, threading, time\n"
            "def hold():\n"
            f"    while not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
            "threading.Thread(target=hold).start()\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")  # the first thread ends, `hold` runs on
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        p = psutil.Process(child.pid)
        for _ in range(200):
            if p.status() == psutil.STATUS_ZOMBIE:
                break
            threading_wait(0.02)
        assert p.status() == psutil.STATUS_ZOMBIE  # what psutil says of the first thread
        proc = Proc("held", child.pid, p.create_time())
        assert proc.alive() and wait_gone([p], 0.3) == [p]
        release.touch()
        assert wait_gone([p], 60) == [] and not proc.alive()
    finally:
        child.kill()
        child.wait()


def threading_wait(seconds: float) -> None:
    import threading
    threading.Event().wait(seconds)
