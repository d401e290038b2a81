"""RedisSaver: durable checkpoints in plain Redis or Redis Cluster, with thread leases."""

from __future__ import annotations

from durable_graph.store.redis.lease import Lease, RedisLeases
from durable_graph.store.redis.saver import RedisSaver

__all__ = ["Lease", "RedisLeases", "RedisSaver"]
