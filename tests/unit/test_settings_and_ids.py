"""Settings from the environment, and time-ordered ids."""

from __future__ import annotations

import pytest

from shared import ids
from shared.settings import Settings, SettingsError

ENV = {
    "BATCHGW_TABLE": "t",
    "BATCHGW_BUCKET": "b",
    "BATCHGW_EVENT_BUS": "e",
    "BATCHGW_CONFIG": "c.yaml",
    "BATCHGW_MASTER_KEY": "secretsmanager:batchgw/master-key",
}


def test_settings_read_the_environment_with_defaults() -> None:
    settings = Settings.from_env(ENV | {"BATCHGW_POLL_CONCURRENCY": "8"})
    assert settings.table_name == "t" and settings.poll_concurrency == 8
    assert settings.max_request_bytes == 4 * 1024 * 1024


def test_missing_or_bad_settings_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="BATCHGW_TABLE"):
        Settings.from_env({k: v for k, v in ENV.items() if k != "BATCHGW_TABLE"})
    with pytest.raises(SettingsError, match="BATCHGW_POLL_CONCURRENCY"):
        Settings.from_env(ENV | {"BATCHGW_POLL_CONCURRENCY": "0"})


def test_ids_sort_by_creation_and_have_openai_prefixes() -> None:
    made = [ids.new_id(ids.BATCH) for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(ids.is_id(i, ids.BATCH) for i in made)
    assert ids.new_id(ids.FILE).startswith("file-") and not ids.is_id("batch_x", ids.BATCH)
    assert not ids.is_id(ids.new_id(ids.FILE), ids.BATCH)


def test_in_lambda_the_master_key_must_come_from_a_secret_store() -> None:
    lambda_env = ENV | {"AWS_LAMBDA_FUNCTION_NAME": "batchgw-api"}
    assert Settings.from_env(lambda_env).master_key_ref == "secretsmanager:batchgw/master-key"
    with pytest.raises(SettingsError, match="must name a secret"):
        Settings.from_env(lambda_env | {"BATCHGW_MASTER_KEY": "sk-plain"})
    # sam local start-api runs the same code with env.json; a literal dev key is fine there
    assert Settings.from_env(lambda_env | {"BATCHGW_MASTER_KEY": "sk-plain", "AWS_SAM_LOCAL": "true"})
