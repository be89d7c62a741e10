"""Routing policy: the shipped default, validation with clear errors, and routing to people."""
from __future__ import annotations

import pytest

from shared.domain.directory import default_directory
from services.notify.policy import RULE_CODES, PolicyError, load_policy, parse_policy
from services.notify.routing import recipients_for

SO_TU_PHAP = "000.00.10.H56"


def test_default_policy_loads_and_follows_legal_roles():
    p = load_policy()
    overdue = p.route("OVERDUE", "critical")
    assert overdue.mode == "immediate" and overdue.any_hour is True
    assert overdue.escalate_after_wh == 16 and "one_stop_chief" in overdue.roles
    assert p.route("RECEIVED_EXTRA", "info").mode == "digest"
    assert p.route("TRANSFER_LATE", "warning").any_hour is False
    for code in RULE_CODES:
        for sev in ("info", "warning", "critical"):
            assert p.route(code, sev).roles


@pytest.mark.parametrize("doc, path, words", [
    ({"defaults": {"critical": {"role": ["head"]}}}, "defaults.critical.role", "unknown key"),
    ({"rules": {"OVERDUEE": {}}}, "rules.OVERDUEE", "unknown key"),
    ({"rules": {"OVERDUE": {"critical": {"roles": ["boss"]}}}}, "rules.OVERDUE.critical.roles[0]", "unknown role"),
    ({"defaults": {"warning": {"escalate_after": "2 days"}}}, "defaults.warning.escalate_after", "invalid duration"),
    ({"defaults": {"warning": {"mode": "later"}}}, "defaults.warning.mode", "expected one of"),
    ({"digest": {"time": "7h30"}}, "digest.time", "HH:MM"),
    ({"webhooks": [{"name": "a", "url": "ftp://x", "secret_env": "S"}]}, "webhooks[0].url", "http"),
    ({"webhooks": [{"name": "a", "url": "http://x"}]}, "webhooks[0].secret_env", "required"),
    ({"sms": {"url_template": "http://gw/{number}"}}, "sms.url_template", "{phone}"),
    ({"retry": {"attempts": 0}}, "retry.attempts", "integer"),
    ({"critical_any_hour": "yes"}, "critical_any_hour", "true or false"),
    ({"colour": "blue"}, "colour", "unknown key"),
])
def test_invalid_policy_names_the_key(doc, path, words):
    with pytest.raises(PolicyError) as e:
        parse_policy(doc, "p.yaml")
    assert e.value.path == path
    assert words in e.value.message
    assert str(e.value).startswith("p.yaml: ")


def test_policy_file_errors(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("rules: [", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_durations_in_working_days_and_hours():
    p = parse_policy({"defaults": {"warning": {"escalate_after": "2wd", "repeat_every": 3}}})
    r = p.route("DUE_SOON", "warning")
    assert (r.escalate_after_wh, r.repeat_every_wh) == (16.0, 3.0)


def test_critical_any_hour_can_be_turned_off():
    assert parse_policy({"critical_any_hour": False}).route("OVERDUE", "critical").any_hour is False


class _Acting:
    """A directory where the Sở has an acting head (shape of shared.domain.directory)."""

    def __init__(self, d, acting):
        import dataclasses
        self._d = d
        self._a = dataclasses.replace(d.get(SO_TU_PHAP), acting_head=acting)

    def get(self, code):
        return self._a if code == SO_TU_PHAP else self._d.get(code)

    def ancestors(self, code):
        return self._d.ancestors(code)


def _finding(**kw):
    f = dict(rule="OVERDUE", severity="critical", agency_code=SO_TU_PHAP, responsible_role="agency_head")
    f.update(kw)
    return f


def test_roles_resolve_to_people_and_channels():
    d = default_directory()
    p = parse_policy({"defaults": {"critical": {"roles": ["responsible", "deputies", "one_stop_chief"],
                                                "channels": ["email"]}}})
    rs = recipients_for(_finding(), p.route("OVERDUE", "critical"), p, d)
    assert sorted(r.id for r in rs) == ["email:deputy1@000.00.10.H56", "email:head@000.00.10.H56",
                                        "email:one_stop_chief@000.00.10.H56"]
    # escalation level 1: the parent agency's head (UBND tỉnh)
    rs = recipients_for(_finding(), p.route("OVERDUE", "critical"), p, d, level=1)
    assert [(r.id, r.address) for r in rs] == [("email:head@000.00.00.H56", "chu-tich@ubnd.longan.example.org")]
    # one-stop chief findings go to the one-stop chief
    rs = recipients_for(_finding(responsible_role="one_stop_chief"), p.route("X", "critical"), p, d)
    assert "email:one_stop_chief@000.00.10.H56" in [r.id for r in rs]


def test_acting_head_receives_instead_of_head():
    from shared.domain.directory import Person
    d = _Acting(default_directory(), Person(name="Lý Thị Quyền", title="Phó Giám đốc phụ trách",
                                            email="quyen@stp.longan.example.org"))
    p = parse_policy({"defaults": {"critical": {"roles": ["head"], "channels": ["email"]}}})
    rs = recipients_for(_finding(), p.route("OVERDUE", "critical"), p, d)
    assert [(r.id, r.address) for r in rs] == [("email:acting_head@000.00.10.H56", "quyen@stp.longan.example.org")]


def test_webhooks_by_subtree_rule_and_severity():
    d = default_directory()
    p = parse_policy({"defaults": {"warning": {"roles": ["head"]}},
                      "webhooks": [{"name": "tinh", "url": "http://h", "secret_env": "S", "agency": "000.00.00.H56",
                                    "min_severity": "critical"},
                                   {"name": "stp", "url": "http://h2", "secret_env": "S2", "agency": SO_TU_PHAP,
                                    "rules": ["DUE_SOON"]},
                                   {"name": "sxd", "url": "http://h3", "secret_env": "S3", "agency": "000.00.11.H56"}]})
    ids = lambda f: sorted(r.id for r in recipients_for(f, p.route(f["rule"], f["severity"]), p, d) if r.channel == "webhook")
    assert ids(_finding()) == ["webhook:tinh"]
    assert ids(_finding(rule="DUE_SOON", severity="warning")) == ["webhook:stp"]


def test_person_without_any_address_is_kept_to_fail_visibly():
    d = default_directory()
    p = parse_policy({"defaults": {"critical": {"roles": ["deputies"], "channels": ["sms"]}},
                      "sms": {"url_template": "http://gw/?to={phone}"}})
    rs = recipients_for(_finding(), p.route("OVERDUE", "critical"), p, d)
    assert [(r.id, r.address) for r in rs] == [("sms:deputy1@000.00.10.H56", None)]
