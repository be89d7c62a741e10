"""The dashboard's feed (`services/dashboard/feed.py`) on a real Kafka broker and MongoDB-wire
store: after its initial load, the view follows dossier events, finding messages, notify's
change messages (published by notify's `PublishingStore`, as the worker does) and
acknowledgements made where nothing publishes them (polled)."""
from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from helpers.dashboard_seed import SIBLING_A, event, notify, received, replay, store, utc
from helpers.net import delete_topics

from shared.platform.clock import VirtualClock
from shared.platform.config import Settings

NOW = utc(2026, 11, 10, 10, 0)


def eventually(check, timeout: float = 30.0, what: str = ""):
    """Wait for the feed thread (real Kafka, real time) until `check()` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture
def stack(kafka_bootstrap, mongo_db, topics):
    from services.dashboard.feed import Feed
    from services.dashboard.store import DashboardStore
    from services.dashboard.view import View
    from services.notify.changes import changes_topic
    from shared.domain.directory import default_directory
    from shared.domain.engine import default_context
    from shared.platform.messaging import KafkaPublisher, ensure_topics

    ctx = dataclasses.replace(default_context(), directory=default_directory())
    clock = VirtualClock(NOW)
    names = topics("events", "findings", partitions=2)
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_EVENTS": names["events"],
                                  "TOPIC_FINDINGS": names["findings"]})
    changes = changes_topic(settings)
    ensure_topics(kafka_bootstrap, {changes: 2})
    a1 = [received("A1-" + SIBLING_A, utc(2026, 11, 2), SIBLING_A)]     # overdue since Thu 05/11
    doc, finds = replay(a1, NOW, ctx)
    store(mongo_db, [doc], finds)
    notify(mongo_db, finds, ctx.directory, clock)
    view = View()
    feed = Feed(settings, DashboardStore(mongo_db, clock), view, clock, poll_timeout=0.2, ack_interval=0.3)
    publisher = KafkaPublisher(kafka_bootstrap, client_id="test-dashboard-feed")
    feed.start()
    try:
        assert feed.wait_loaded(60), feed.error
        yield {"view": view, "feed": feed, "db": mongo_db, "clock": clock, "ctx": ctx, "settings": settings,
               "publisher": publisher, "changes": changes, "finds": finds}
    finally:
        feed.stop()
        publisher.close()
        delete_topics(kafka_bootstrap, [changes])


def test_the_feed_follows_events_findings_and_notify_changes(stack):
    from services.notify.changes import KafkaChanges, PublishingStore
    from services.notify.channels import FakeChannel
    from services.notify.policy import load_policy
    from services.notify.service import NotifyService
    from services.notify.store import NotifyStore
    from services.sla.api import jsonable
    from services.sla.repository import finding_message

    view, db, clock, ctx, settings, pub = (stack[k] for k in ("view", "db", "clock", "ctx", "settings", "publisher"))
    overdue = next(f for f in stack["finds"] if f["rule"] == "OVERDUE")
    fid = overdue["_id"]
    # the initial load: the dossier, its findings, notify's plans (not sent yet)
    assert view.row("A1-" + SIBLING_A) is not None and view.finding(fid) is not None
    state, notes, _ = view.alerts.of([fid])
    level0 = state[fid].level
    assert notes[fid] and {n.status for n in notes[fid]} == {"pending"}

    # a dossier event: the dossier is re-read once the sla worker has stored that event
    code2 = "A2-" + SIBLING_A
    evs = [received(code2, utc(2026, 11, 9), SIBLING_A)]
    pub.publish(settings.topic_events, code2, evs[0])
    time.sleep(0.5)
    assert view.row(code2) is None                     # not stored yet: nothing to show
    doc2, finds2 = replay(evs, NOW, ctx)
    store(db, [doc2], finds2)
    eventually(lambda: view.row(code2), what="the new dossier in the view")
    # a finding message is applied as it is
    assert view.finding(fid).state != "resolved"
    msg = jsonable(finding_message({**overdue, "state": "resolved", "resolved_at": NOW,
                                    "revision": overdue["revision"] + 1}))
    pub.publish(settings.topic_findings, overdue["dossier_code"], msg)
    eventually(lambda: view.finding(fid).state == "resolved", what="the finding's new state")

    # notify's worker sends (one delivery fails for good) and escalates: published changes
    email = FakeChannel("email")
    email.fail_next(1, permanent=True)
    worker_store = PublishingStore(db, KafkaChanges(pub, stack["changes"]))
    svc = NotifyService(worker_store, load_policy(None), ctx.directory, {"email": email}, clock, secret="s")
    sent = svc.dispatch_due()
    assert sent >= 2

    def delivered():
        _, n, _ = view.alerts.of([fid])
        return {x.status for x in n.get(fid, ())} >= {"sent", "failed"} and n
    notes = eventually(delivered, what="sent and failed deliveries")[fid]
    assert all(x.sent_at == NOW for x in notes if x.status == "sent")
    assert [x.error for x in notes if x.status == "failed"] == ["email fake failure"]
    # a day later notify's scheduler repeats the alert (and escalates where a level is left)
    clock.advance(timedelta(days=1))
    svc.run_scheduled()
    svc.dispatch_due()
    stored = db.notify_findings.find_one({"_id": fid})
    assert stored["repeats"] >= 1 and stored["level"] >= level0

    def scheduled():
        a = view.alerts.finding(fid)
        _, n, _ = view.alerts.of([fid])
        return (a.repeats, a.level) == (stored["repeats"], stored["level"]) and any(
            x.kind == "repeat" and x.status == "sent" for x in n[fid])
    eventually(scheduled, what="the repeat and its delivery")

    # acknowledged through notify's API (its store publishes nothing): polled from `acks`
    NotifyService(NotifyStore(db), load_policy(None), ctx.directory, {}, clock, secret="s").acknowledge(
        fid, "person-x", by="Nguyễn Văn Trưởng", via="link", note="Đã giao xử lý")
    eventually(lambda: view.alerts.finding(fid).acked_at is not None, what="the polled acknowledgement")
    _, _, acks = view.alerts.of([fid])
    assert [(a.by, a.note) for a in acks[fid]] == [("Nguyễn Văn Trưởng", "Đã giao xử lý")]
    assert fid in view.acked()
    assert view.alerts.finding(fid).next_escalation_at is None
    feed = stack["feed"]
    assert feed.error is None and feed.records >= 3
    assert set(feed.lag) == {settings.topic_events, settings.topic_findings, stack["changes"]}
