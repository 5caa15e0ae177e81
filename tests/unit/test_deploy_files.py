"""The files in deploy/ validate against what their tools read."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_freshness_automation_is_a_valid_prefect_automation_on_idvs_event():
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    from flows.freshness import EVENT

    doc = yaml.safe_load((DEPLOY / "freshness-automation.yaml").read_text(encoding="utf-8"))
    [automation] = [AutomationCore.model_validate(a) for a in doc["automations"]]
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == {EVENT}
    assert [a.type for a in automation.actions] == ["send-notification"]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_the_compose_file_validates_against_the_compose_specification():
    """The Compose Specification's own schema (compose-spec/compose-spec,
    schema/compose-spec.json at 170098b, Apache-2.0, kept in tests/vectors/): the file
    cannot be started on this machine, so it is checked."""
    import json

    from jsonschema import Draft7Validator

    schema = json.loads((ROOT / "tests" / "vectors" / "compose-spec.json").read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose()), key=lambda e: e.path)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_topology_has_its_parts_with_the_probes_wired():
    services = compose()["services"]
    assert {
        "postgres",
        "redis",
        "prefect-server",
        "migrate",
        "deployments",
        "worker-1",
        "worker-2",
        "api",
    } <= set(services)
    idv = {n: s for n, s in services.items() if s.get("image") == "localhost/idv:latest"}
    for name, service in idv.items():
        assert service["read_only"] is True and service["user"] == "1001:1001", name
        assert service["environment"]["DO_NOT_TRACK"] == "1", name
    for name in ("postgres", "redis", "prefect-server", "api", "worker-1", "worker-2"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/api/ready" in " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert services["worker-1"]["command"][:2] == ["worker", "start"]
    assert services["worker-2"]["command"] == services["worker-1"]["command"]
    # The admin port is published on loopback only.
    assert "127.0.0.1:9464:9464" in services["api"]["ports"]
