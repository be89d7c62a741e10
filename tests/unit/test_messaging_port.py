"""The fake broker implements the real publisher's port (shared.platform.messaging.Publisher): the same
methods with the same parameters, and a delivery whose ack the caller waits for, so production
code has one path for both."""
from __future__ import annotations

import inspect

import pytest

from shared.platform.messaging import InMemoryBus, KafkaPublisher, Publisher

PORT = [name for name, _ in inspect.getmembers(Publisher, inspect.isfunction) if not name.startswith("_")]


def test_the_port_is_send_publish_ready_close():
    assert sorted(PORT) == ["close", "publish", "ready", "send"]


@pytest.mark.parametrize("name", PORT)
def test_fake_and_real_publishers_share_each_method_of_the_port(name):
    want = list(inspect.signature(getattr(Publisher, name)).parameters)
    for cls in (InMemoryBus, KafkaPublisher):
        assert list(inspect.signature(getattr(cls, name)).parameters) == want, cls.__name__


def test_a_send_is_acknowledged_with_its_place_and_fails_while_the_broker_is_down():
    bus = InMemoryBus()
    delivery = bus.send("t", "HS-1", {"a": 1}, {"h": "v"})
    assert delivery.is_done and delivery.get(timeout=1).offset == 0
    assert bus.publish("t", "HS-1", b'{"a":2}').offset == 1 and bus.ready()
    bus.fail_with = TimeoutError("no ack")
    failed = bus.send("t", "HS-1", {"a": 3})
    with pytest.raises(TimeoutError):
        failed.get(timeout=1)
    with pytest.raises(TimeoutError):
        bus.publish("t", "HS-1", {"a": 3})
    assert not bus.ready() and [m.value for m in bus.messages("t")] == [{"a": 1}, {"a": 2}]
