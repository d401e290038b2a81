"""Secrets are never printed: passwords in Redis URLs are redacted wherever shown."""

from __future__ import annotations

import pytest

from durable_graph import CheckpointStoreError
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.connection import redact


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:hunter2@host/0", "redis://:***@host/0"),
    ("redis://host:6379/0?password=hunter2", "redis://host:6379/0?password=***"),
    ("rediss://host/0?db=1&password=hunter2&ssl_cert_reqs=none",
     "rediss://host/0?db=1&password=***&ssl_cert_reqs=none"),
    ("unix:///run/redis.sock?db=0&password=hunter2", "unix:///run/redis.sock?db=0&password=***"),
    ("unix://:hunter2@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("not a url at all", "not a url at all"),
])
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "hunter2" not in redact(url)


def test_store_errors_name_the_server_without_its_password() -> None:
    saver = RedisSaver.from_url("redis://127.0.0.1:1/0?password=hunter2",
                                socket_connect_timeout=0.2)
    with pytest.raises(CheckpointStoreError) as caught:
        saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert "hunter2" not in str(caught.value)
    assert "password=***" in str(caught.value)


def test_a_codec_never_prints_its_secrets() -> None:
    codec = SigningCodec.from_secret("hunter2-" + "x" * 40)
    assert "hunter2" not in repr(codec)
    assert "hunter2" not in codec.fingerprint()


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0?password=hunter2",
    "redis://:hunter2@127.0.0.1:6379/0",
    "unix:///run/redis.sock?db=2&password=hunter2",
])
def test_the_broker_gets_the_password_and_its_banner_masks_it(url: str) -> None:
    from durable_graph.worker import create_app

    app = create_app(url, secret_key="k" * 40)
    conn = app.connection_for_write()  # nothing connects until it is used
    try:
        assert "hunter2" in f"{conn.password}{conn.hostname}"  # kombu is given it
        assert "hunter2" not in conn.as_uri()  # what Celery's banner and logs show
    finally:
        conn.release()
