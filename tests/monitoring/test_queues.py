"""Queue depth and age as /metrics reads them, on the real Redis and on the embedded
filesystem broker (kombu's filesystem transport in a folder of the test's own)."""

from __future__ import annotations

import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from monitoring.queues import queues_read
from monitoring.signals import QUEUED_AT_HEADER


@pytest.fixture(params=["redis", "filesystem"])
def broker(request, tmp_path, settings):
    if request.param == "redis":
        connection = Connection(settings.CELERY_BROKER_URL)
    else:
        folder = tmp_path / "broker"
        folder.mkdir()
        connection = Connection(
            "filesystem://",
            transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                # kombu's default is ./control, in whatever folder the tests run from.
                "control_folder": str(tmp_path / "control"),
            },
        )
    with connection:
        yield connection


def publish(connection: Connection, queue_name: str, *, waited: float | None) -> None:
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name)
    headers = {} if waited is None else {QUEUED_AT_HEADER: time.time() - waited}
    connection.Producer().publish(
        {"n": 1}, exchange=queue.exchange, routing_key=queue_name, declare=[queue], headers=headers
    )


def test_depth_and_the_age_of_the_next_message(broker):
    # given a queue with a message queued 120 s ago and one just now, another never used
    name = f"outpost.q-{uuid.uuid4().hex[:8]}"
    publish(broker, name, waited=120)
    # The filesystem broker orders messages by a millisecond stamp in their file names: two
    # in the same millisecond would come out in either order.
    time.sleep(0.005)
    publish(broker, name, waited=0)
    unused = f"outpost.unused-{uuid.uuid4().hex[:8]}"
    try:
        # when
        state, empty = queues_read(connection=broker, queues=[name, unused])
        # then the age is the older message's: the one a worker takes next
        assert state.depth == 2
        assert 120 <= state.oldest_age < 180
        assert (empty.depth, empty.oldest_age) == (0, None)
    finally:
        broker.default_channel.queue_purge(name)


def test_a_message_without_the_time_has_no_age(broker):
    name = f"outpost.q-{uuid.uuid4().hex[:8]}"
    publish(broker, name, waited=None)
    try:
        (state,) = queues_read(connection=broker, queues=[name])
        assert (state.depth, state.oldest_age) == (1, None)
    finally:
        broker.default_channel.queue_purge(name)
