"""Interest mixes on the real broker: the service publishes records with ``interests`` that validate
against the assignment-change schema (version 2), keeps each user's mix in the profiles changelog,
counts them in /metrics, and ``forget`` clears them (tombstones on both topics)."""

from __future__ import annotations

import json
import subprocess

import pytest
from jsonschema import Draft202012Validator
from service_harness import CLI, REPO, ServiceProcess, Topics, latest_assignments, read_all, send, wait_for

from stream.corpora import demo_corpus
from stream.interests import InterestMixes
from stream.profiles import profile_record_from_bytes
from stream.simulation import simulate

pytestmark = pytest.mark.integration

SCHEMA = REPO / "deploy" / "schemas" / "assignment-change.schema.json"


def test_records_carry_interests_and_forget_clears_them(kafka_bootstrap, tmp_path):
    from kafka import KafkaAdminClient

    topics = Topics.fresh()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics({topics.events: {"num_partitions": 2, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    scenario = simulate(demo_corpus(), n_users=30, mean_events_per_user=10, content="text", drift_fraction=0.0,
                        seed=13)
    sent = send(kafka_bootstrap, topics.events,
                [(e["user_id"].encode(), json.dumps(e).encode()) for e in scenario.events])
    svc = ServiceProcess(kafka_bootstrap, topics, tmp_path, "--clusters", "4")
    try:
        svc.wait_ready()
        svc.wait_consumed(sent)
        svc.wait_all_assigned(len(scenario.truth))
        schema = Draft202012Validator(json.loads(SCHEMA.read_text()))
        records = read_all(kafka_bootstrap, topics.assignments)
        for record in records:
            value = json.loads(record.value)
            schema.validate(value)
            assert value["schema_version"] == 2
            shares = [i["share"] for i in value["interests"]]
            assert shares and shares == sorted(shares, reverse=True) and all(0 < s <= 1 for s in shares)
        latest = latest_assignments(records)
        assert set(latest) == set(scenario.truth)
        wait_for(lambda: svc.value("interest_interests_per_user_count") == len(records), 30,
                 what="every published record counted in interest_interests_per_user")
        sets: dict[str, set[int]] = {}
        set_changes = 0
        for record in records:  # per user in publication order (one user lives in one partition)
            now = {i["cluster"] for i in json.loads(record.value)["interests"]}
            before = sets.get(record.key.decode())
            set_changes += before is not None and before != now
            sets[record.key.decode()] = now
        assert svc.value("interest_interest_set_changes_total") == set_changes

        # the profiles changelog carries each user's mix
        profiles = {r.key.decode(): r.value for r in read_all(kafka_bootstrap, topics.profiles_changelog)}
        victim = sorted(scenario.truth)[0]
        mix = profile_record_from_bytes(profiles[victim]).interests
        assert mix is not None
        clusters, weights, _, mass = InterestMixes.decode(mix)
        assert len(clusters) >= 1 and 0 < weights.sum() <= mass * (1 + 1e-9)

        # forget: tombstones on the assignments topic and the profiles changelog (the mix goes with the profile)
        done = subprocess.run([*CLI, "forget", victim, "--bootstrap-servers", kafka_bootstrap,
                               "--events-topic", topics.events], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: svc.value("interest_users_forgotten_total") == 1, 60, what="forget applied")
        assert latest_assignments(read_all(kafka_bootstrap, topics.assignments))[victim] is None
        profiles = {r.key.decode(): r.value for r in read_all(kafka_bootstrap, topics.profiles_changelog)}
        assert profiles[victim] is None
        assert svc.stop() == 0
    finally:
        svc.stop()
