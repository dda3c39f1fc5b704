"""Miniature inputs in every real format the README lists, laid out under `data/` as the recipes
expect, with planted overlaps with the benchmarks; and the scripted LLM the LLM stages talk to."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from corpus.testing import scene_clip
from sari_data.llm.questions import FAMILIES
from sari_data.llm.testing import Reply, last_user_text
from sari_data.testing import avqa_row, mmar_rows, write, write_jsonl

SECONDS = 2.0


@dataclass
class Planted:
    """What the fixtures contain, so the test can check every count."""

    rows: dict[str, int] = field(default_factory=dict)          # input rows per source
    bad: dict[str, dict[str, int]] = field(default_factory=dict)  # quarantine reasons per source (not overlaps)
    overlaps: dict[str, str] = field(default_factory=dict)      # corpus source id -> benchmark it copies
    mmau_with_audio: int = 0
    mmar_rows: int = 0
    mmar_with_audio: int = 0


def clip(seed: int):
    return scene_clip(seed, SECONDS)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def lay_out(root: Path, mmau_file: Path, n_avqa: int = 38) -> Planted:
    """Write data/{mmau,mmau-v05.15.25,mmar,audioset,meld,musicbench,avqa} under `root`."""
    planted = Planted()
    data = root / "data"
    mmau = json.loads(mmau_file.read_text())
    by_dataset = {d: [r for r in mmau if r["dataset"] == d] for d in ("AudioSet", "musicbench")}

    # MMAU audio for six items (both releases), two of them copied into AudioSet and MusicBench below.
    with_audio = by_dataset["AudioSet"][:3] + by_dataset["musicbench"][:3]
    for n, record in enumerate(with_audio):
        for folder in ("mmau", "mmau-v05.15.25"):
            write(data / folder / record["audio_id"], clip(1000 + n))
    planted.mmau_with_audio = len(with_audio)

    # MMAR: its JSONL with answer explanations; audio for all but one item; item 0 copied into MELD.
    mmar = mmar_rows(8)
    (data / "mmar").mkdir(parents=True)
    write_jsonl(data / "mmar" / "MMAR-meta.jsonl", mmar)
    for n, record in enumerate(mmar[:-1]):
        write(data / "mmar" / record["audio_path"], clip(2000 + n))
    planted.mmar_rows, planted.mmar_with_audio = len(mmar), len(mmar) - 1

    # AudioSet-style clip table: four clips, one MMAU copy, one missing file.
    rows = [[f"as{n}", f"as{n}.wav"] for n in range(6)]
    for n in range(4):
        write(data / "audioset" / "audio" / f"as{n}.wav", clip(3000 + n))
    write(data / "audioset" / "audio" / "as4.wav", clip(1000))  # = MMAU's first AudioSet item
    write_csv(data / "audioset" / "clips.csv", ["id", "audio"], rows)
    planted.rows["audioset"], planted.bad["audioset"] = 6, {"missing_audio": 1}
    planted.overlaps["as4"] = "mmau"

    # MELD-style clip table (audio extracted from the mp4s): three clips, one MMAR copy.
    meld = [[f"dia{n}_utt0", f"dia{n}_utt0.wav", f"Line {n}", "Joey", "joy", "positive"] for n in range(4)]
    for n in range(3):
        write(data / "meld" / "audio" / f"dia{n}_utt0.wav", clip(4000 + n))
    write(data / "meld" / "audio" / "dia3_utt0.wav", clip(2000))  # = MMAR item 0
    write_csv(data / "meld" / "clips.csv", ["id", "audio", "Utterance", "Speaker", "Emotion", "Sentiment"], meld)
    planted.rows["meld"], planted.bad["meld"] = 4, {}
    planted.overlaps["dia3_utt0"] = "mmar"

    # MusicBench's JSON lines (under a .json name) with its own captions: three clips, one MMAU copy.
    lines = []
    for n in range(4):
        location = f"data_aug2/mb{n}.wav"
        write(data / "musicbench" / "datashare" / location, clip(5000 + n) if n < 3 else clip(1003))
        lines.append({"location": location, "main_caption": f"A calm piano piece number {n} in C major.",
                      "key": "C major", "bpm": 90})
    (data / "musicbench" / "MusicBench_train.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    planted.rows["musicbench"], planted.bad["musicbench"] = 4, {}
    planted.overlaps["data_aug2/mb3.wav"] = "mmau"

    # R1-AQA's AVQA JSONL: good rows, one row copying an MMAU question and options, one broken line.
    avqa = []
    for n in range(n_avqa):
        write(data / "avqa" / "audios" / f"{n}.wav", clip(6000 + n))
        avqa.append(avqa_row(n, f"{n}.wav"))
    copied = mmau[0]
    write(data / "avqa" / "audios" / "copy.wav", clip(6999))
    avqa.append(avqa_row(900, "copy.wav", question_text=copied["question"], multi_choice=copied["choices"],
                         answer=copied["choices"].index(copied["answer"])))
    avqa.append("{broken json")
    write_jsonl(data / "avqa" / "train_qa.jsonl", avqa)  # (the folder exists: the audio is in it)
    planted.rows["avqa"], planted.bad["avqa"] = len(avqa), {"malformed_json": 1}
    planted.overlaps["900"] = "mmau"
    return planted


def llm(body: dict) -> Reply:
    """The scripted LLM: captions for audio, one question per clip, chains ending on the gold option."""
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    if any(p.get("type") == "input_audio" for p in parts):
        return Reply(content="A dog barks twice while rain falls softly in the background.")
    text = last_user_text(body)
    if "question(s)" in text:
        hint = re.search(r"The clip is mainly (sound|music|speech)", text)
        task = hint.group(1) if hint else "sound"
        question = {"question": "Which event do you notice first?", "task": task, "category": FAMILIES[task][0],
                    "choices": ["a dog barking", "a car horn", "a bell ringing", "rain falling"],
                    "answer": "a dog barking"}
        return Reply(content=json.dumps({"questions": [question]}))
    gold = re.search(r"Correct answer: (.*)", text)
    if gold:
        answer = gold.group(1).strip()
        if "four sections" in text:
            thinking = (f"<planning>Listen for the main event.</planning><caption>A clear sound.</caption>"
                        f"<reasoning>It matches {answer}.</reasoning><summary>The answer is {answer}.</summary>")
        else:
            thinking = f"I listen to the clip. It matches {answer}."
        return Reply(content=json.dumps({"thinking": thinking, "answer": answer}))
    return Reply(content="ok")
