import os

# Hub look-ups hang ~50 s before failing on an offline machine; never try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def replica_dirs(tmp_path_factory):
    """Both hub-repo replicas (real tokenizer, templates, configs; small random weights), built once
    per test session on first use: {"qwen2-audio": folder, "qwen2.5-omni": folder}."""
    from sari_train.models.replica import REPLICAS

    built = {}

    def get(name: str):
        if name not in built:
            built[name] = REPLICAS[name](tmp_path_factory.mktemp(name.replace(".", "")))
        return built[name]

    return get
