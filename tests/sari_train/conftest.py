import pytest

from sari_train.models.adapter import AudioLM
from sari_train.models.tiny import build_tiny_omni_thinker, build_tiny_qwen2_audio


@pytest.fixture(scope="session", params=["qwen2_audio", "qwen2_5_omni_thinker"])
def tiny_lm(request, tmp_path_factory) -> AudioLM:
    """Both tiny model kinds, built once per test session."""
    builder = build_tiny_qwen2_audio if request.param == "qwen2_audio" else build_tiny_omni_thinker
    return AudioLM.load(builder(tmp_path_factory.mktemp(request.param), window_seconds=4))


@pytest.fixture(scope="session")
def tiny_qwen2_audio(tmp_path_factory) -> AudioLM:
    return AudioLM.load(build_tiny_qwen2_audio(tmp_path_factory.mktemp("q2a-shared"), window_seconds=4))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Qwen2-Audio folder the trainers load from (they load their own copies)."""
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("q2a-train"), window_seconds=4)


STRUCTURED_COT = ("<planning>Listen to the tone.</planning><caption>A steady tone.</caption>"
                  "<reasoning>Its pitch is {answer}.</reasoning><summary>The tone is {answer}.</summary>")


@pytest.fixture(scope="session")
def train_workspace(tmp_path_factory):
    """16 train + 8 test items (high or low tones), chains of thought of both styles for most train
    items, and difficulty rows with buckets 0..3 (four items each) from one scoring model."""
    from corpus.clips import save_clip
    from corpus.records import ChainOfThought, Difficulty
    from corpus.store import Workspace
    from corpus.testing import dummy_clip, dummy_item

    root = tmp_path_factory.mktemp("train-ws")
    items, cots, difficulty = [], [], []
    with Workspace(root, create=True) as ws:
        for i in range(24):
            answer = "high" if i % 2 else "low"
            clip = dummy_clip(seconds=1.0, freq=(2000.0 if answer == "high" else 200.0) + 7 * i)
            item = dummy_item(i, audio=save_clip(ws.audio_dir, clip, 16000), answer=answer,
                              answer_index=["high", "low"].index(answer), split="train" if i < 16 else "test")
            items.append(item)
            if i < 14:  # two train items have no chain of thought
                for style, text in (("structured", STRUCTURED_COT.format(answer=answer)),
                                    ("free", f"The tone sounds {answer}.")):
                    cots.append(ChainOfThought(item_id=item.id, style=style, text=text, generator="template"))
            if i < 16:
                n_correct = 8 - 2 * (i // 4)  # buckets 0..3 from easy to hard
                difficulty.append(Difficulty(item_id=item.id, model="base", k=8, n_correct=n_correct,
                                             pass_rate=n_correct / 8, bucket=i // 4))
        cots.append(ChainOfThought(item_id=items[15].id, style="structured", text="broken", generator="template",
                                   valid=False, reason="missing sections"))
        ws.upsert(items)
        ws.upsert(cots)
        ws.upsert(difficulty)
    return root


@pytest.fixture(scope="session")
def ragged_workspace(tmp_path_factory):
    """Prompts of many lengths (clips of 0.3–3.9 s, questions of one to four sentences), so batched
    rows carry from 0 to hundreds of pads: 16 train items with difficulty buckets, 40 test items."""
    from corpus.clips import save_clip
    from corpus.records import Difficulty
    from corpus.store import Workspace
    from corpus.testing import dummy_clip, dummy_item

    root = tmp_path_factory.mktemp("ragged-ws")
    with Workspace(root, create=True) as ws:
        items, difficulty = [], []
        for i in range(56):
            answer = "high" if i % 2 else "low"
            clip = dummy_clip(seconds=0.3 + (i * 7 % 13) * 0.3, freq=(2000.0 if answer == "high" else 200.0) + 7 * i)
            question = " ".join(["Listen closely."] * (i % 4) + ["Is the tone high or low?"])
            item = dummy_item(i, audio=save_clip(ws.audio_dir, clip, 16000), question=question, answer=answer,
                              answer_index=["high", "low"].index(answer), split="train" if i < 16 else "test")
            items.append(item)
            if i < 16:
                difficulty.append(Difficulty(item_id=item.id, model="base", k=8, n_correct=4, pass_rate=0.5, bucket=0))
        ws.upsert(items)
        ws.upsert(difficulty)
    return root
