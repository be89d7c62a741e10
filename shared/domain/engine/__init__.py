"""The legal engine (pure: no Kafka, no MongoDB, no clock reads — `now` is a parameter).

Interface (docs/legal-engine.md, "Interfaces"):
    new_state, apply, replay            the dossier state machine (state.py)
    evaluate, reconcile                 the rules of LEGAL.md as data (rules.py, shared/data/rules/)
    explain_deadline                    the calendar's explanation with the dossier's pauses
    receipt_due                         the due date printed on the receipt slip (intake's 202)
    EngineContext, default_context      what the engine reads besides the events (context.py;
                                        from the settings: shared.platform.refdata)
"""
from shared.domain.engine.context import EngineContext, default_context
from shared.domain.engine.ruledata import (RULE_CODES, RuleDataError, RuleSet, RuleSets, RuleSpec,
                                    default_rulesets, load_ruleset, load_rulesets)
from shared.domain.engine.rules import (Evaluation, Finding, FindingChange, evaluate, explain_deadline,
                                 finding_id, reconcile)
from shared.domain.engine.receipt import receipt_due
from shared.domain.engine.state import DossierState, apply, new_state, replay

__all__ = [
    "EngineContext", "default_context",
    "RULE_CODES", "RuleDataError", "RuleSet", "RuleSets", "RuleSpec", "default_rulesets",
    "load_ruleset", "load_rulesets",
    "Evaluation", "Finding", "FindingChange", "evaluate", "explain_deadline", "finding_id", "reconcile",
    "DossierState", "apply", "new_state", "replay", "receipt_due",
]
