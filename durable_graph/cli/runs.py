"""``resume``, ``retry``, ``cancel`` and ``fork``: change threads; runs go to the workers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from durable_graph.cli._output import (
    TIMED_OUT,
    Formatter,
    emit_json,
    json_arg,
    positive_seconds,
)
from durable_graph.errors import RunCancelledError
from durable_graph.ops import (
    UNSET,
    cancel_thread,
    connect,
    fork_thread,
    resume_thread,
    retry_thread,
)
from durable_graph.worker.executor import RunHandle

__all__ = ["register"]


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                        help="give up waiting after S seconds; the run goes on "
                             "(default: wait for the run to end)")
    parser.add_argument("--no-wait", action="store_true",
                        help="start the run and return at once")


def register(sub: Any) -> None:
    """Add ``resume``, ``retry``, ``cancel`` and ``fork`` to the command line."""
    _add_resume(sub)
    _add_retry_and_cancel(sub)
    _add_fork(sub)


def _command(
    sub: Any, name: str, help: str, description: str, thread_help: str = "the thread id"
) -> Any:
    """A subcommand that acts on one thread (its first argument)."""
    parser = sub.add_parser(name, help=help, formatter_class=Formatter, description=description)
    parser.add_argument("thread", help=thread_help)
    return parser


def _add_resume(sub: Any) -> None:
    resume = _command(sub, "resume", "resume an interrupted or cancelled thread on the workers",
                      "Resume a thread on the workers and wait for it; prints its status "
                      "and output as JSON.")
    resume.add_argument("--value", metavar="JSON", default=None,
                        help="answer to the pending interrupt (default: no answer)")
    resume.add_argument("--update", metavar="JSON", default=None,
                        help="state update (a JSON object) applied on resume (default: none)")
    resume.add_argument("--checkpoint", metavar="ID", default=None,
                        help="resume (replay) from this past checkpoint (default: the latest)")
    _wait_flags(resume)
    resume.set_defaults(handler=_resume)


def _add_retry_and_cancel(sub: Any) -> None:
    retry = _command(sub, "retry", "run a failed thread again from the step that failed",
                     "Run a failed thread again from where it failed; work it finished "
                     "is not redone.")
    _wait_flags(retry)
    retry.set_defaults(handler=_retry)

    cancel = _command(sub, "cancel", "stop a thread: its queued and running jobs are fenced out",
                      "Stop a running (or interrupted) thread. Its status becomes cancelled; "
                      "resume continues it from its last committed step, fork copies it.")
    cancel.add_argument("--reason", default="cancelled by an operator",
                        help="why, recorded as the thread's error message")
    cancel.add_argument("--json", action="store_true", help="print the result as JSON")
    cancel.set_defaults(handler=_cancel)


def _add_fork(sub: Any) -> None:
    fork = _command(sub, "fork", "start a new thread from a past checkpoint of a thread",
                    "Copy a checkpoint of a thread into a new thread (status interrupted "
                    "until resumed); prints the new thread's id.",
                    thread_help="the thread to copy from")
    fork.add_argument("--checkpoint", metavar="ID", required=True,
                      help="the checkpoint to start from (see `durable-graph show`)")
    fork.add_argument("--new-thread", metavar="ID", default=None,
                      help="id of the new thread (default: THREAD-fork-<random>)")
    fork.add_argument("--resume", action="store_true",
                      help="also run the new thread on the workers and wait for it")
    _wait_flags(fork)
    fork.set_defaults(handler=_fork)


def _resume(args: argparse.Namespace) -> int:
    value, update = json_arg(args.value, "--value"), json_arg(args.update, "--update")
    cluster = connect()
    handle = resume_thread(cluster.saver, cluster.app, args.thread,
                           value=UNSET if args.value is None else value, update=update,
                           checkpoint_id=args.checkpoint)
    return _follow("resume", handle, args)


def _retry(args: argparse.Namespace) -> int:
    cluster = connect()
    return _follow("retry", retry_thread(cluster.saver, cluster.app, args.thread), args)


def _follow(command: str, handle: RunHandle, args: argparse.Namespace) -> int:
    """Say which run started, then (unless --no-wait) wait and print how it ended."""
    print(f"{command}: thread {handle.thread_id} (run {handle.run_id})", file=sys.stderr)
    if args.no_wait:
        return 0
    try:
        result = handle.result(timeout=args.timeout)
    except TimeoutError as exc:
        print(f"durable-graph {command}: {exc}", file=sys.stderr)
        return TIMED_OUT
    except RunCancelledError as exc:
        print(f"durable-graph {command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"durable-graph {command}: the run failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    emit_json({"status": handle.status(), "output": result})
    return 0


def _cancel(args: argparse.Namespace) -> int:
    cluster = connect()
    done = cancel_thread(cluster.saver, args.thread, reason=args.reason)
    if args.json:
        emit_json({"thread_id": done.thread_id, "previous_status": done.previous_status,
                   "run_id": done.run_id, "generation": done.generation})
    else:
        run = f"run {done.run_id}" if done.run_id else "no distributed run"
        print(f"cancelled thread {done.thread_id} ({run}; it was {done.previous_status})")
    return 0


def _fork(args: argparse.Namespace) -> int:
    cluster = connect()
    new_id = fork_thread(cluster.saver, args.thread, args.checkpoint,
                         new_thread_id=args.new_thread)
    if not args.resume:
        print(new_id)
        return 0
    print(f"fork: new thread {new_id}", file=sys.stderr)
    return _follow("fork", resume_thread(cluster.saver, cluster.app, new_id), args)
