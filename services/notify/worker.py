"""Wiring of the notify worker: the one place where real adapters are built (nothing at import)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from shared.platform import runtime
from shared.platform.clock import Clock, clock_from_env
from shared.platform.config import Settings, env
from shared.platform.messaging import KafkaPublisher, ensure_topics, kafka_consumer
from shared.platform.runtime import serve_until_signalled

from .bootstrap import bootstrap, load_agencies, load_notify_policy
from .changes import KafkaChanges, PublishingStore, changes_topic
from .channels import SmsChannel, SmtpChannel, WebhookChannel
from .loop import NotifyLoop
from .metrics import NotifyMetrics
from .outbox import Outbox
from .policy import Policy
from .service import NotifyService
from .store import NotifyStore

log = logging.getLogger("motcua.notify.worker")
GROUP_ID = "notify"


def build_channels(policy: Policy, environ: dict | None = None, *, clock: Clock | None = None) -> dict:
    """The configured channels: e-mail always; SMS when the policy names a gateway; webhooks
    when the policy lists any (secrets from the environment variables it names)."""
    source = os.environ if environ is None else environ
    channels = {"email": SmtpChannel(env("SMTP_HOST", environ), int(env("SMTP_PORT", environ)),
                                     env("SMTP_FROM", environ), user=env("SMTP_USER", environ),
                                     password=env("SMTP_PASSWORD", environ),
                                     starttls=env("SMTP_STARTTLS", environ) in ("1", "true", "yes"),
                                     clock=clock)}
    if policy.sms_url_template:
        channels["sms"] = SmsChannel(policy.sms_url_template, policy.sms_method)
    else:
        log.warning("no SMS gateway in the routing policy: the sms channel is off")
    if policy.webhooks:
        secrets = {}
        for w in policy.webhooks:
            secret = source.get(w.secret_env, "")
            if not secret:
                log.error("webhook %s: %s is not set; its deliveries will fail", w.name, w.secret_env)
            secrets[w.name] = secret
        channels["webhook"] = WebhookChannel(secrets)
    return channels


def lookups(settings: Settings, db=None, *, clock: Clock | None = None):
    """(procedure name by code, rule requirement by rule set and rule) from the reference data
    sla uses: the catalog imported into `db` (else CATALOG_FILE), the rule sets of the settings.
    A finding without a rule set takes the one in force on the clock's date in Vietnam."""
    from shared.platform.refdata import CatalogStore
    from shared.platform.refdata import rulesets_from_settings
    from shared.domain.instants import TZ

    clock = clock or clock_from_env()
    try:
        catalog = CatalogStore.current_or_file(settings.catalog_file, db)
    except Exception:
        log.exception("catalog not loaded: alerts will show procedure codes only")
        catalog = None
    try:
        rulesets = rulesets_from_settings(settings)
    except Exception:
        log.exception("rule sets not loaded: alerts use the templates' requirement texts")
        rulesets = None

    def procedure_name(code: str):
        p = catalog.get(code) if catalog is not None and code else None
        return p.name if p is not None else None

    def requirement(ruleset: str | None, rule: str):
        if rulesets is None:
            return None
        try:
            rs = rulesets.get(ruleset) if ruleset else rulesets.for_date(clock.now().astimezone(TZ).date())
            return rs[rule].requirement
        except Exception:
            return None

    return procedure_name, requirement


def build_service(settings: Settings, clock: Clock, db, *, policy: Policy | None = None, directory=None,
                  channels: dict | None = None, metrics: NotifyMetrics | None = None,
                  environ: dict | None = None, outbox: Outbox | None = None,
                  changes=None) -> NotifyService:
    """`changes`: emit(key, message) told each change of notify's state (changes.py)."""
    policy = policy or load_notify_policy(environ)
    store = NotifyStore(db) if changes is None else PublishingStore(db, changes)
    store.ensure_indexes()
    directory = directory if directory is not None else load_agencies(settings, db)
    channels = channels if channels is not None else build_channels(policy, environ, clock=clock)
    procedure_name, requirement = lookups(settings, db, clock=clock)
    secret = env("NOTIFY_SECRET", environ)
    if not secret:
        log.warning("NOTIFY_SECRET is not set: alerts carry no acknowledgement link")
    return NotifyService(store, policy, directory, channels, clock, base_url=env("NOTIFY_URL", environ),
                         secret=secret, dashboard_url=env("DASHBOARD_URL", environ),
                         procedure_name=procedure_name, requirement=requirement,
                         metrics=metrics, outbox=outbox)


@dataclass
class Worker(runtime.Worker):
    loop: NotifyLoop
    service: NotifyService
    publisher: KafkaPublisher
    metrics: NotifyMetrics


def build_worker(settings: Settings, clock: Clock | None = None, *, db=None, group_id: str = GROUP_ID,
                 consumer_config: dict | None = None, poll_timeout: float = 0.5,
                 schedule_interval: float = 10.0, max_dead_letters_in_a_row: int = 1000,
                 **service_kw) -> Worker:
    notify = bootstrap(settings, clock=clock, db=db, appname="motcua-notify")
    clock = notify.clock
    ensure_topics(settings.kafka_bootstrap_servers, settings.topics())   # TOPIC_PARTITIONS
    db = notify.db()
    metrics = NotifyMetrics()
    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id="motcua-notify")
    service_kw.setdefault("changes", KafkaChanges(publisher, changes_topic(settings)))
    # alerts due at once are sent after the batch by the loop's sender, not found by a queue scan
    service = build_service(settings, clock, db, metrics=metrics, outbox=Outbox(), **service_kw)
    consumer = kafka_consumer(settings.kafka_bootstrap_servers, [settings.topic_findings], group_id,
                              client_id="motcua-notify", **(consumer_config or {}))
    loop = NotifyLoop(consumer, service, publisher, settings.topic_findings + ".dlq", metrics=metrics,
                      poll_timeout=poll_timeout, schedule_interval=schedule_interval, background_send=True,
                      background_schedule=True, max_dead_letters_in_a_row=max_dead_letters_in_a_row)
    return Worker(loop, service, publisher, metrics)


def run_worker(settings: Settings | None = None, metrics_port: int | None = None) -> int:
    """`python -m services.notify worker`: run until SIGTERM/SIGINT."""
    from shared.platform.httpapi import configure_json_logging

    configure_json_logging()
    settings = settings or Settings.from_env()
    worker = build_worker(settings)
    return serve_until_signalled(worker, name="notify", metrics_port=metrics_port,
                                 registry=worker.metrics.registry,
                                 fields={"topic": settings.topic_findings, "group": GROUP_ID})
