"""The rules watching a training job: every rule, debugger and profiler, over the job's own
TensorBoard record, every epoch and once more at the end, and the rule_actions that stop
training when their rule fires."""
from __future__ import annotations

import logging
from pathlib import Path

from debugger import profiler, rules
from debugger.config import rule_actions
from debugger.rules import ISSUES, Verdict

log = logging.getLogger(__name__)


class RuleWatch:
    def __init__(self, record_dir: Path, params: dict, actions: dict):
        self.record_dir, self.params = record_dir, params
        self.actions = rule_actions(actions)
        self.record: rules.TensorBoardRecord | None = None
        self.reported: set[str] = set()  # rules whose issues were logged already

    def judge(self) -> list[Verdict]:
        """Every rule over the record as written so far (flush it first)."""
        if self.record is None:
            self.record = rules.TensorBoardRecord(self.record_dir)
        else:
            self.record.reload()
        return (rules.evaluate(self.record, self.params)
                + profiler.evaluate(self.record.profile(), self.params))

    def log_new_issues(self, verdicts: list[Verdict]) -> None:
        """A warning for each rule that found issues for the first time."""
        for v in verdicts:
            if v.status == ISSUES and v.rule not in self.reported:
                self.reported.add(v.rule)
                log.warning("rule %s: IssuesFound at step %s: %s", v.rule, v.step, v.why)

    def stop_rule(self, verdicts: list[Verdict]) -> Verdict | None:
        """The verdict whose rule_actions entry stops training, if its rule fired."""
        return next((v for v in verdicts
                     if v.status == ISSUES and self.actions.get(v.rule) == "stop"), None)
