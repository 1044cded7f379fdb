"""The committed JSON schema of the agent protocol is the one its models generate."""

from __future__ import annotations

from pathlib import Path

from shellwego.api.app import create_app
from shellwego.models import agentprotocol
from shellwego.services.context import Context

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m shellwego.models.agentprotocol --write"


def test_the_committed_schema_matches_the_models() -> None:
    committed = (ROOT / agentprotocol.SCHEMA_PATH).read_text()
    assert committed == agentprotocol.schema_text(), (
        f"{agentprotocol.SCHEMA_PATH} is out of date with shellwego.models.agentprotocol: "
        f"run `{REGENERATE}` from the repository root and commit the result"
    )


def test_the_schema_defines_every_message_and_the_artifact_union() -> None:
    defs = agentprotocol.schema()["$defs"]
    for name in ("Assignment", "Assignments", "Heartbeat", "SlugArtifact", "ImageArtifact"):
        assert name in defs
    artifact = defs["Assignment"]["properties"]["artifact"]
    union = artifact["anyOf"][0]
    assert union["discriminator"]["propertyName"] == "kind"
    runtime = defs["Assignment"]["properties"]["runtime"]
    assert runtime["enum"] == ["process", "oci", "microvm"]


def test_the_openapi_document_uses_the_protocol_models(ctx: Context) -> None:
    document = create_app(ctx).openapi()
    answer = document["paths"]["/v1/agent/assignments"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Assignments"
    }
    schemas = document["components"]["schemas"]
    assert "ImageArtifact" in schemas and "SlugArtifact" in schemas
    heartbeat = document["paths"]["/v1/agent/heartbeat"]["post"]["requestBody"]
    assert heartbeat["content"]["application/json"]["schema"]["$ref"].endswith("/Heartbeat")
