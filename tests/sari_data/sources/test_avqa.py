from collections import Counter

from corpus.store import Workspace
from sari_data.build import build
from sari_data.recipe import Recipe
from sari_data.sources.avqa import to_audio
from sari_data.testing import dirty_avqa

STEPS = [{"kind": "normalise_text"}, {"kind": "option_sanity"}, {"kind": "dedup"}, {"kind": "balance_positions"}]


def recipe(path, root, steps=STEPS):
    return Recipe.model_validate({"name": "dirty", "seed": 1, "audio": {"max_seconds": 30},
                                  "sources": [{"kind": "avqa", "name": "avqa", "path": str(path), "audio_root": str(root)}],
                                  "steps": steps})


def test_dirty_avqa_builds_with_every_bad_record_quarantined(tmp_path):
    path, reasons = dirty_avqa(tmp_path)
    records = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    counts = build(recipe(path, tmp_path / "audio"), tmp_path / "ws", progress=False, allow_empty=True)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        quarantine = ws.frame("quarantine")
        items = ws.items()
        assert Counter(quarantine.reason) == reasons
        assert len(items) == 12 and len(items) + len(quarantine) == records  # every record accounted for
        assert all(q.startswith(f"{path}:") and q.split(":")[-1].isdigit() for q in quarantine.locator)
        assert set(quarantine[quarantine.reason == "duplicate_item"].locator) == {f"{path}:32", f"{path}:33"}
        assert all(m for m in quarantine.message)
        assert counts["items"] == 12 and counts["quarantined"] == 20
        item = next(i for i in items if i.source_id == "5")
        assert "audio number 5" in item.question and "video" not in item.question
        assert item.answer == "car 5" and item.meta["question_type"] == "Which"
        assert item.meta["locator"] == f"{path}:6" and item.audio.sample_rate == 16000


def test_rebuild_is_idempotent(tmp_path):
    path, _ = dirty_avqa(tmp_path, n_good=4)
    build(recipe(path, tmp_path / "audio"), tmp_path / "ws", progress=False, allow_empty=True)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        first = ([i.model_dump() for i in ws.items()], ws.count("quarantine"))
    build(recipe(path, tmp_path / "audio"), tmp_path / "ws", progress=False, allow_empty=True)
    with Workspace(tmp_path / "ws", read_only=True) as ws:
        assert ([i.model_dump() for i in ws.items()], ws.count("quarantine")) == first


def test_video_becomes_audio():
    assert to_audio("What is in the video? Video first.") == "What is in the audio? Audio first."
    assert to_audio("videos stay") == "videos stay"


def test_r1aqa_rewrite_is_a_plain_replace():
    question = "What is in the video? Video first, then videos."
    assert to_audio(question, "r1aqa") == question.replace("video", "audio") == \
        "What is in the audio? Video first, then audios."
    assert to_audio(question, "off") == question


def test_the_r1aqa_recipe_uses_r1aqas_rewrite():
    from sari_data.recipe import load_recipe

    assert load_recipe("pipelines/r1-aqa-avqa.yaml").sources[0].video_to_audio == "r1aqa"
    assert load_recipe("pipelines/sari-32k.yaml").sources[-1].video_to_audio == "words"


def test_video_to_audio_still_takes_true_and_false():
    from sari_data.recipe import AvqaSource

    assert AvqaSource(name="a", path="x.jsonl", video_to_audio=True).video_to_audio == "words"
    assert AvqaSource(name="a", path="x.jsonl", video_to_audio=False).video_to_audio == "off"
