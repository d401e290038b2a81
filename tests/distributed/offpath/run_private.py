"""Producer of ``private_graph``: ``python run_private.py {auto|import} THREAD_ID``.

Runs ``invoke`` on a daemon thread so a run that never ends is reported instead of
hanging, then prints one line ``RESULT {json}`` with the producer's pid, the
output or the error (type and message), ``hung`` and the thread's status.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import private_graph

WORDS = ["alpha", "be", "gamma"]
TIMEOUT = 25.0


def main(mode: str, thread_id: str) -> None:
    graph = private_graph.graph_auto if mode == "auto" else private_graph.graph_import
    config = {"configurable": {"thread_id": thread_id}}
    outcome: dict[str, Any] = {"pid": os.getpid(), "hung": False}

    def run() -> None:
        try:
            outcome["output"] = graph.invoke({"words": WORDS}, config)
        except Exception as exc:
            outcome["error_type"] = type(exc).__name__
            outcome["error"] = str(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(TIMEOUT)
    outcome["hung"] = runner.is_alive()
    record = private_graph.saver.get_status(thread_id) or {}
    outcome["status"] = record.get("status")
    outcome["error_message"] = record.get("error_message")
    print("RESULT " + json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)  # a hung run's thread must not keep the process alive
