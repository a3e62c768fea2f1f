"""Service settings: precedence of flags, environment and file; validation; secrets; README coverage."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.settings import ServiceSettings, is_secret
from stream.settings import ClusteringSettings

REPO = Path(__file__).resolve().parents[2]


def test_flags_beat_environment_beat_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('bootstrap_servers = "file:9092"\ngroup_id = "from-file"\nbatch_max_events = 7\n'
                      '[clustering]\nn_clusters = 5\n[kafka]\n"sasl.mechanism" = "SCRAM-SHA-512"\n')
    monkeypatch.setenv("INTEREST_STREAM_GROUP_ID", "from-env")
    monkeypatch.setenv("INTEREST_STREAM_BATCH_MAX_EVENTS", "9")
    s = ServiceSettings.load(config, {"batch_max_events": 11, "events_topic": None})
    assert s.bootstrap_servers == "file:9092"  # only the file says it
    assert s.group_id == "from-env"  # env beats file
    assert s.batch_max_events == 11  # flag beats env
    assert s.events_topic == "events"  # a None override means "not given"
    assert s.clustering.n_clusters == 5
    assert s.kafka == {"sasl_mechanism": "SCRAM-SHA-512"}


def test_invalid_values_name_the_setting(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(ValidationError, match="batch_max_events"):
        ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "batch_max_events": 0})
    with pytest.raises(ValidationError, match="n_clusters"):
        ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "clustering": {"n_clusters": 0}})
    with pytest.raises(ValidationError, match="bootstrap servers"):
        ServiceSettings.load(overrides={})


def test_bootstrap_falls_back_to_kafka_bootstrap_servers(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    assert ServiceSettings.load().bootstrap_servers == "a:1,b:2"


def test_secrets_are_redacted():
    s = ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "kafka": {
        "sasl_plain_password": "p", "ssl_password": "q", "sasl_plain_username": "u"}})
    red = s.redacted()["kafka"]
    assert red == {"sasl_plain_password": "***", "ssl_password": "***", "sasl_plain_username": "u"}
    assert is_secret("sasl_oauth_token_provider") and not is_secret("security_protocol")


def test_changelog_topics_and_transactional_id():
    s = ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "group_id": "g", "instance_id": "pod-0"})
    assert s.changelog_topics() == ("g-profiles-changelog", "g-model", "g-statistics")
    assert s.trainer_group_id == s.trainer_transactional_id == "g-trainer"
    assert s.transactional_id == "g-pod-0"
    assert s.processing_guarantee == "exactly_once"
    t = ServiceSettings.load(overrides={"bootstrap_servers": "x:1", "profiles_changelog_topic": "p"})
    assert t.changelog_topics()[0] == "p"


def test_readme_documents_every_setting():
    readme = (REPO / "README.md").read_text()
    for name in ServiceSettings.model_fields:
        assert f"`{name}`" in readme, f"README does not document the setting {name}"
    for name in ClusteringSettings.model_fields:
        assert f"`{name}`" in readme, f"README does not document the clustering setting {name}"
    for command in ("make demo", "make test", "interest-stream run", "replay", "forget", "inspect", "report"):
        assert command in readme


def test_every_setting_is_read_by_the_service():
    # A setting nothing reads (like the removed assignments_partitions: the assignments topic takes the
    # events topic's partition count) misleads operators. Each must be read outside its declaration:
    # by the running system in consumers/, or by a method of the settings class itself.
    import re

    sources = [p.read_text() for p in (REPO / "consumers").rglob("*.py") if p.name != "settings.py"]
    own = (REPO / "consumers" / "settings.py").read_text()
    unread = []
    for name in ServiceSettings.model_fields:
        used = re.compile(rf"\.{name}\b|[\"']{name}[\"']")
        if not any(used.search(text) for text in sources) and not re.search(rf"\bself\.{name}\b", own):
            unread.append(name)
    assert not unread, f"settings nothing reads: {unread}"
