"""The files in deploy/ validate against what their tools read."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_freshness_automation_is_a_valid_prefect_automation_on_idvs_event():
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    from flows.freshness import EVENT

    doc = yaml.safe_load((DEPLOY / "freshness-automation.yaml").read_text(encoding="utf-8"))
    [automation] = [AutomationCore.model_validate(a) for a in doc["automations"]]
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == {EVENT}
    assert [a.type for a in automation.actions] == ["send-notification"]
