"""The worker-crash graph of the idempotency-key test (``celery -A idem_graphs worker``).

It reuses ``celery_graphs``' app, Redis helpers and pool registration (same
``DURABLE_GRAPH_*`` environment). The ``pay`` task records the idempotency key it
sees and the pool process it runs in, then, the first time only, blocks in its
"external payment call" so the test can SIGKILL that process mid-body.
"""

from __future__ import annotations

import os
import time
from typing import Any, TypedDict

from celery_graphs import app, client, count, key

from durable_graph import END, START, StateGraph, get_task_context, task

__all__ = ["app", "build_payment"]

HOLD = 20.0
"""Seconds the first execution of ``pay`` blocks (the test kills it meanwhile)."""


class Order(TypedDict, total=False):
    amount: int
    receipt: str


@task
def pay(amount: int) -> str:
    ctx = get_task_context()
    client().rpush(key("pay_keys"), ctx.idempotency_key)
    client().rpush(key("pay_pids"), f"{os.getpid()}:{os.getppid()}")
    if count("pay") == 1:
        time.sleep(HOLD)
    return f"paid {amount} under {ctx.idempotency_key}"


def charge(order: Order) -> dict[str, Any]:
    return {"receipt": pay(order["amount"]).result()}


def build_payment() -> StateGraph:
    builder = StateGraph(Order)
    builder.add_node("charge", charge)
    builder.add_edge(START, "charge")
    builder.add_edge("charge", END)
    return builder
