"""A graded kernel: an IPython kernel in a submission's sandbox, driven over ZeroMQ.

``GradedKernel.start`` launches ``ipykernel`` inside a ``Sandbox`` with only the namespace's
environment; ``run`` executes a cell with a time limit and keeps at most ``Limits.output_kb``
of its output (a submission printing megabytes costs it its output, not the grader's memory).
A cell that runs past its limit is interrupted; a kernel that does not come back (it ignores
SIGINT, it died, it hung in C code) is reported ``dead`` and the caller starts a new one.

The kernel's answers are observations and nothing more: whatever it prints or returns may
have been forged by the submission, which is why no verdict is ever taken from it.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

from labkit._proc import PortAllocator
from labkit.grading.sandbox import INSIDE_CONN, INSIDE_RUN, Limits, Sandbox

KERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", INSIDE_CONN,
               # No history file: the calls the grader sends must not land on disk.
               "--HistoryManager.enabled=False", "--IPKernelApp.parent_handle=0"]


class GradedKernel:
    """One kernel in ``sandbox``; ``run(code, timeout_s)`` -> {"status", "stdout", "error"}."""

    def __init__(self, sandbox: Sandbox, env: dict[str, str], limits: Limits) -> None:
        from jupyter_client.blocking import BlockingKernelClient
        self.sandbox, self.limits = sandbox, limits
        key = secrets.token_hex(16)
        names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        if sandbox.secure:
            ports = dict(zip(names, range(1, 6)))
            inside = {"transport": "ipc", "ip": f"{INSIDE_RUN}/k", **ports}
        else:
            alloc = PortAllocator("127.0.0.1")
            ports = {n: alloc.take() for n in names}
            inside = {"transport": "tcp", "ip": "127.0.0.1", **ports}
        info = {**inside, "key": key, "signature_scheme": "hmac-sha256", "kernel_name": ""}
        conn_file = sandbox.run_dir / "kernel.json"
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        argv = list(KERNEL_ARGV)
        if not sandbox.secure:
            argv[argv.index(INSIDE_CONN)] = str(conn_file)
        sandbox.start(argv, env, {INSIDE_CONN: conn_file})
        if sandbox.secure:  # the grader reaches the sandbox's /run/lk through /proc
            info["ip"] = sandbox.outside(f"{INSIDE_RUN}/k")
        self.kc = BlockingKernelClient()
        self.kc.load_connection_info(info)
        # No heartbeat channel: its first beat may come before the kernel has bound its
        # sockets and would report it dead. Whether it lives is the sandbox's process.
        self.kc.start_channels(hb=False)
        try:
            self.kc.wait_for_ready(timeout=limits.startup_timeout_s)
        except BaseException:
            self.close()
            raise
        sandbox.mark_infrastructure()

    def alive(self) -> bool:
        return self.sandbox.alive()

    def run(self, code: str, timeout_s: float) -> dict[str, Any]:
        """Execute ``code``; return {"status": ok|error|timeout|dead, "stdout", "error"}."""
        cap = self.limits.output_kb * 1024
        out: list[str] = []
        err: list[str] = []
        kept = [0]

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and kept[0] < cap:
                text = content.get("text", "")[: cap - kept[0]]
                kept[0] += len(text)
                out.append(text)
            elif kind == "error" and len(err) < 5:
                err.append(f"{content.get('ename', '?')}: {str(content.get('evalue', ''))[:2000]}")

        if not self.alive():
            return {"status": "dead", "stdout": "", "error": "the kernel is not running"}
        try:
            reply = self.kc.execute_interactive(code, timeout=timeout_s, output_hook=hook,
                                                allow_stdin=False, stop_on_error=False)
        except TimeoutError:
            return self._interrupt("".join(out), timeout_s)
        except Exception as e:  # a garbled or unsigned message: the kernel is not usable
            return {"status": "dead", "stdout": "".join(out), "error": f"{type(e).__name__}: {e}"}
        status = reply["content"].get("status")
        return {"status": "ok" if status == "ok" else "error", "stdout": "".join(out),
                "error": "; ".join(err)}

    def _interrupt(self, out: str, timeout_s: float) -> dict[str, Any]:
        if not self.alive():
            return {"status": "dead", "stdout": out, "error": "the kernel died"}
        try:
            self.kc.control_channel.send(self.kc.session.msg("interrupt_request", {}))
            # The interrupted cell's reply comes first; a no-op proves the kernel is back.
            self.kc.execute_interactive("pass", timeout=5, output_hook=lambda m: None)
        except Exception:
            return {"status": "dead", "stdout": out,
                    "error": f"stopped after {timeout_s:.0f} s and did not respond"}
        return {"status": "timeout", "stdout": out,
                "error": f"stopped after {timeout_s:.0f} s (time limit)"}

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.sandbox.kill()
