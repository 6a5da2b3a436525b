"""A benchmark's spawned receiver process: its answers on the control pipe and its end."""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


def report(conn: Connection, work: Callable[[], Any]) -> None:
    """In the child: send ("ok", result) or ("error", traceback) and close the pipe."""
    try:
        conn.send(("ok", work()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def answer(conn: Connection, timeout: float, who: str = "the receiver process") -> Any:
    """The child's next word on the control pipe, with a timeout, surfacing its traceback if it failed."""
    if not conn.poll(timeout):
        raise TimeoutError(f"{who} did not answer")
    obj = conn.recv()
    if isinstance(obj, tuple) and obj[0] == "error":
        raise RuntimeError(f"{who} failed:\n{obj[1]}")
    return obj


def reap(proc: mp.process.BaseProcess) -> None:
    """Wait for the child a while, then end it: a benchmark never leaves a process behind."""
    proc.join(10)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
