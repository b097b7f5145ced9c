"""filesystem:// (portal/filesystem_broker.py): whole messages only, and a broken message file
is skipped and logged instead of stopping the consumer. Real kombu on real files."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Producer, Queue

import portal.celery  # noqa: F401 - makes filesystem:// the portal's transport

QUEUE = Queue("work", routing_key="work")


def connection(folder: Path) -> Connection:
    messages = folder / "messages"
    messages.mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://",
        transport_options={
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "control_folder": str(folder / "control"),
            # A consumer that lists the folder all the time, to meet writes in progress.
            "polling_interval": 0.001,
        },
    )


def publish(folder: Path, bodies: list[dict]) -> None:
    with connection(folder) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(body, routing_key="work", declare=[QUEUE], serializer="json")


def consume(folder: Path, count: int, *, timeout: float = 30) -> list[dict]:
    """The bodies of ``count`` messages, as a worker gets them (drain_events raises if the
    transport does)."""
    received: list[dict] = []
    with connection(folder) as conn:

        def take(body: dict, message) -> None:
            received.append(body)
            message.ack()

        with Consumer(conn, [QUEUE], callbacks=[take], accept=["json"]):
            for _ in range(count * 20):
                if len(received) >= count:
                    break
                try:
                    conn.drain_events(timeout=timeout / 20)
                except TimeoutError:
                    continue
    return received


def test_the_portal_uses_its_own_filesystem_transport(tmp_path):
    # given / when a connection to filesystem://
    # then it is the portal's transport, not kombu's own
    assert type(connection(tmp_path).transport).__module__ == "portal.filesystem_broker"


def test_empty_and_truncated_message_files_are_skipped_and_logged(tmp_path, caplog):
    # given an empty and a truncated message file for the queue, older than a good message
    # (names sort before any kombu names them: those start with the clock's non-zero digits)
    messages = tmp_path / "messages"
    messages.mkdir()
    (messages / f"0_{'a' * 36}.work.msg").write_bytes(b"")
    (messages / f"00_{'b' * 36}.work.msg").write_bytes(b'{"body": "eyJ')
    publish(tmp_path, [{"n": 1}])
    # when a consumer reads the queue
    with caplog.at_level(logging.WARNING, logger="portal.filesystem_broker"):
        received = consume(tmp_path, 1)
    # then it gets the good message, and each broken file is logged by name and gone
    assert received == [{"n": 1}]
    skipped = [r.getMessage() for r in caplog.records if "Skipped broker message" in r.message]
    assert len(skipped) == 2
    assert any(f"0_{'a' * 36}.work.msg" in line and "(0 bytes)" in line for line in skipped)
    assert any(f"00_{'b' * 36}.work.msg" in line for line in skipped)
    assert list(messages.iterdir()) == []


def test_a_consumer_reading_during_a_burst_of_large_writes_gets_every_message_whole(
    tmp_path, caplog
):
    # given four producers writing large messages at once (a half-written file is what
    # kombu's own transport hands a reader that lists the folder at the wrong moment)
    per_producer, producers = 40, 4
    padding = "x" * 400_000
    bodies = [
        [{"producer": p, "n": n, "padding": padding} for n in range(per_producer)]
        for p in range(producers)
    ]
    threads = [threading.Thread(target=publish, args=(tmp_path, chunk)) for chunk in bodies]
    # when a consumer reads while they write
    with caplog.at_level(logging.WARNING, logger="portal.filesystem_broker"):
        for thread in threads:
            thread.start()
        received = consume(tmp_path, per_producer * producers, timeout=120)
        for thread in threads:
            thread.join(timeout=60)
    # then every message arrives once and whole, and none was skipped
    assert sorted((body["producer"], body["n"]) for body in received) == [
        (p, n) for p in range(producers) for n in range(per_producer)
    ]
    assert all(body["padding"] == padding for body in received)
    assert not [r for r in caplog.records if "Skipped broker message" in r.message]
    # and no partial file is left in the folder
    assert list((tmp_path / "messages").iterdir()) == []


@pytest.mark.parametrize("name", [".tmp1234.partial", "notes.txt"])
def test_files_that_are_not_messages_of_the_queue_are_left_alone(tmp_path, name):
    # given a file being written (or any other file) next to one message
    messages = tmp_path / "messages"
    messages.mkdir()
    (messages / name).write_bytes(b"{")
    publish(tmp_path, [{"n": 1}])
    # when a consumer reads the queue
    received = consume(tmp_path, 1)
    # then it gets the message and does not touch the other file
    assert received == [{"n": 1}]
    assert [path.name for path in messages.iterdir()] == [name]
