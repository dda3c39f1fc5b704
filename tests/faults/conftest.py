import pytest
from faults_helpers import audio_workspace


@pytest.fixture
def workspace_with_audio(tmp_path):
    return audio_workspace(tmp_path / "ws")
