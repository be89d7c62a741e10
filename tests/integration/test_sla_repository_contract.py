"""The sla `Repository` contract, run on both implementations: `InMemoryRepository` (what the unit
tests of the handler and loop stand on) and `MongoRepository` on the real MongoDB-wire server.
A behaviour the fake has and the adapter lacks (or the reverse) fails here, not in production.

The in-memory runs need no network; the MongoDB runs use the session's store (tests/conftest.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.sla.repository import (DossierWrite, FindingWrite, InMemoryRepository, MongoRepository,
                                     StaleWrite, finding_message, strip_dossier)

T0 = datetime(2026, 3, 3, 2, 0, tzinfo=timezone.utc)     # whole milliseconds: BSON keeps those


@pytest.fixture(params=["memory", "mongodb"])
def repo(request):
    if request.param == "memory":
        return InMemoryRepository()
    r = MongoRepository(request.getfixturevalue("mongo_db"))
    r.ensure_indexes()
    return r


def dossier(code, *, rev=0, partition=0, next_check=None, state="open", agencies=("A",), findings=()):
    return DossierWrite(code, {"dossier_code": code, "state": state}, partition, next_check, rev,
                        agencies=list(agencies), summary={"procedure_code": "1.001193"},
                        finding_ids=list(findings))


def finding(fid, code, *, revision=1, new=True, partition=0, detected=T0, state="open"):
    msg = {"finding_id": fid, "rule": "OVERDUE", "state": state, "severity": "critical",
           "dossier_code": code, "agency_code": "A", "detected_at": detected, "revision": revision}
    return FindingWrite(fid, msg, partition, revision, new=new)


def test_a_new_dossier_and_finding_are_stored_with_their_bookkeeping(repo):
    repo.save([dossier("D-1", next_check=T0 + timedelta(hours=1), findings=["F-1"])],
              [finding("F-1", "D-1")], T0)
    d = repo.load_dossiers(["D-1", "D-1", "MISSING"])
    assert list(d) == ["D-1"]
    doc = d["D-1"]
    assert (doc["rev"], doc["partition"], doc["agencies"], doc["finding_ids"]) == (1, 0, ["A"], ["F-1"])
    assert doc["next_check_at"] == T0 + timedelta(hours=1) and doc["updated_at"] == T0
    assert doc["next_check_at"].tzinfo is not None                   # aware instants come back
    assert strip_dossier(doc) == {"dossier_code": "D-1", "state": "open"}
    f = repo.load_findings(["F-1", "F-2"])
    assert list(f) == ["F-1"]
    assert (f["F-1"]["revision"], f["F-1"]["pending"], f["F-1"]["published_revision"]) == (1, True, 0)
    assert finding_message(f["F-1"])["detected_at"] == T0
    assert repo.get_dossier("D-1")["rev"] == 1 and repo.get_dossier("NONE") is None


def test_a_loaded_document_is_a_copy(repo):
    repo.save([dossier("D-1")], [finding("F-1", "D-1")], T0)
    repo.load_dossiers(["D-1"])["D-1"]["state"] = "changed"
    repo.load_findings(["F-1"])["F-1"]["state"] = "changed"
    assert repo.load_dossiers(["D-1"])["D-1"]["state"] == "open"
    assert repo.load_findings(["F-1"])["F-1"]["state"] == "open"


def test_an_update_is_written_only_at_the_revision_read(repo):
    repo.save([dossier("D-1")], [], T0)
    repo.save([dossier("D-1", rev=1, state="paused")], [], T0 + timedelta(minutes=1))
    assert repo.load_dossiers(["D-1"])["D-1"]["rev"] == 2
    with pytest.raises(StaleWrite):
        repo.save([dossier("D-1", rev=1, state="resolved")], [], T0 + timedelta(minutes=2))
    assert repo.load_dossiers(["D-1"])["D-1"]["state"] == "paused"


def test_a_new_dossier_or_finding_that_exists_already_is_a_stale_write(repo):
    repo.save([dossier("D-1")], [finding("F-1", "D-1")], T0)
    with pytest.raises(StaleWrite):
        repo.save([dossier("D-1", state="other")], [], T0)
    with pytest.raises(StaleWrite):
        repo.save([], [finding("F-1", "D-1", state="escalated")], T0)
    assert repo.load_dossiers(["D-1"])["D-1"]["state"] == "open"
    assert repo.load_findings(["F-1"])["F-1"]["state"] == "open"


def test_a_changed_finding_replaces_the_stored_one_and_is_pending_again(repo):
    repo.save([dossier("D-1")], [finding("F-1", "D-1")], T0)
    repo.mark_published([("F-1", 1)])
    changed = finding("F-1", "D-1", revision=2, new=False, state="escalated")
    changed.published_revision = 1
    repo.save([], [changed], T0 + timedelta(hours=1))
    f = repo.load_findings(["F-1"])["F-1"]
    assert (f["state"], f["revision"], f["pending"], f["published_revision"]) == ("escalated", 2, True, 1)


def test_pending_findings_oldest_first_filtered_and_marked_at_their_revision(repo):
    repo.save([], [finding("F-1", "D-1", partition=0)], T0 + timedelta(minutes=2))
    repo.save([], [finding("F-2", "D-2", partition=1)], T0)
    repo.save([], [finding("F-3", "D-3", partition=1)], T0 + timedelta(minutes=1))
    assert [d["_id"] for d in repo.pending_findings()] == ["F-2", "F-3", "F-1"]
    assert [d["_id"] for d in repo.pending_findings(limit=2)] == ["F-2", "F-3"]
    assert [d["_id"] for d in repo.pending_findings(partitions=[0])] == ["F-1"]
    assert [d["_id"] for d in repo.pending_findings(ids=["F-1", "F-3"])] == ["F-3", "F-1"]
    repo.mark_published([("F-2", 1), ("F-3", 7)])            # F-3: a revision not stored
    assert [d["_id"] for d in repo.pending_findings()] == ["F-3", "F-1"]
    assert repo.load_findings(["F-2"])["F-2"]["published_revision"] == 1
    repo.mark_published([])


def test_scheduler_and_partition_reads(repo):
    repo.save([dossier("D-1", partition=0, next_check=T0), dossier("D-2", partition=1),
               dossier("D-3", partition=1, next_check=T0 + timedelta(hours=2))],
              [finding("F-1", "D-1", partition=0), finding("F-3", "D-3", partition=1)], T0)
    assert sorted(repo.next_checks([1])) == [("D-3", T0 + timedelta(hours=2), 1)]
    assert sorted(repo.next_checks([0, 1])) == [("D-1", T0, 0), ("D-3", T0 + timedelta(hours=2), 1)]
    assert repo.next_checks([]) == [] and list(repo.dossiers_in([])) == []
    assert sorted(d["_id"] for d in repo.dossiers_in([1])) == ["D-2", "D-3"]
    assert [d["_id"] for d in repo.findings_in([0])] == ["F-1"] and list(repo.findings_in([])) == []


def test_findings_of_a_dossier_in_detection_order(repo):
    repo.save([], [finding("F-b", "D-1", detected=T0 + timedelta(hours=1)), finding("F-c", "D-1", detected=T0),
                   finding("F-a", "D-1", detected=T0 + timedelta(hours=1)), finding("F-x", "D-2")], T0)
    assert [d["_id"] for d in repo.findings_of("D-1")] == ["F-c", "F-a", "F-b"]
    assert repo.findings_of("D-9") == []


def test_partition_owners_last_claim_wins(repo):
    assert repo.owners([0, 1]) == {0: None, 1: None}
    repo.claim_partitions([0, 1], "a", T0)
    repo.claim_partitions([1], "b", T0 + timedelta(seconds=1))
    assert repo.owners([1, 0, 1]) == {0: "a", 1: "b"}
