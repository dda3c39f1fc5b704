"""Does a corpus build cost the same per item at 1k and at 8k items? `sari-data build` with the
r1-aqa-avqa steps (normalise_text, option_sanity, dedup, decontaminate) on generated AVQA-format
JSONL with 10-s 16-kHz clips, each size in a fresh process, its wall time and peak memory.

    python bench/bench_build_scale.py                      # 1k, 4k, 8k, twice each
    python bench/bench_build_scale.py --sizes 1000 8000 32000 --repeat 1
    python bench/bench_build_scale.py --workers 1          # one process (no audio pool)

The source is like AVQA: one row per question, 1 in 8 clips carries a second question, 1 in 50
rows repeats an earlier row under another id (dedup's work); a 200-item benchmark with audio, 20
of whose clips hide in the source re-encoded (decontamination's work). Clips are generated once
into --data (reused by later runs; 32k clips take ~10 GB) and smaller sizes read a prefix.
Peak RSS is the largest single process's high-water mark (the build's main process).
The last line is JSON: per-item cost at 8k over 1k (mean over repeats), and its spread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.testing import scene_clip  # noqa: E402
from sari_data.testing import avqa_row, write, write_jsonl  # noqa: E402

SECONDS = 10.0
N_BENCH = 200


def clip_name(i: int) -> str:
    return f"{i // 1000:03d}/c{i}.wav"


def ensure_clips(root: Path, n: int) -> None:
    """Clips c0..c{n-1} under root (16-bit WAV, 10 s); those already there are kept."""
    for i in range(n):
        path = root / clip_name(i)
        if not path.exists():
            write(path, scene_clip(i, SECONDS), subtype="PCM_16")


def source_rows(n: int) -> tuple[list[dict], int]:
    """n AVQA rows (new clips, second questions on a clip, exact repeats, hidden benchmark clips)
    and the number of generated clips they use."""
    rows, next_clip = [], 0
    for i in range(n):
        if i % 50 == 49:
            rows.append({**rows[i - 17], "id": i})  # the same question again under another id
        elif i % 8 == 7:
            rows.append(avqa_row(i, rows[i - 3]["audio_path"], question_text=f"How many times is sound {i} heard?"))
        elif i % 400 == 123 and i // 400 < 20:  # a benchmark clip, re-encoded, hidden in the source
            rows.append(avqa_row(i, f"hidden/b{i // 400}.ogg"))
        else:
            rows.append(avqa_row(i, clip_name(next_clip)))
            next_clip += 1
    return rows, next_clip


def ensure_data(data: Path, n: int) -> Path:
    """The source JSONL for n items (and its clips), and the benchmark; returns the recipe file."""
    rows, n_clips = source_rows(n)
    ensure_clips(data / "audios", n_clips)
    bench = data / "bench"
    if not (bench / "bench.json").exists():
        records = []
        for i in range(N_BENCH):
            clip = scene_clip(900_000 + i, SECONDS)
            write(bench / f"b{i}.wav", clip, subtype="PCM_16")
            if i < 20:
                write(data / "audios" / "hidden" / f"b{i}.ogg", clip)
            records.append({"id": f"b{i}", "audio_id": f"b{i}.wav", "question": f"What is heard in benchmark clip {i}?",
                            "choices": [f"owl {i}", f"crow {i}", f"frog {i}", f"goat {i}"], "answer": f"owl {i}",
                            "task": "sound"})
        (bench / "bench.json").write_text(json.dumps(records))
    write_jsonl(data / f"train_{n}.jsonl", rows)
    recipe = data / f"recipe_{n}.yaml"
    recipe.write_text(json.dumps({
        "name": f"scale-{n}", "seed": 0,
        "sources": [{"kind": "avqa", "name": "avqa", "path": str(data / f"train_{n}.jsonl"),
                     "audio_root": str(data / "audios"), "video_to_audio": "r1aqa"}],
        "audio": {"min_seconds": 1, "max_seconds": 30},
        "steps": [{"kind": "normalise_text"}, {"kind": "option_sanity"}, {"kind": "dedup"},
                  {"kind": "decontaminate", "exclude": False, "benchmarks": [
                      {"name": "bench", "path": str(bench / "bench.json"), "audio_root": str(bench)}]}]}))
    return recipe


def timed_build(recipe: Path, workspace: Path, workers: int | None) -> tuple[float, float, float, dict]:
    """Wall seconds, peak RSS (MB), cores busy (CPU seconds of the build and its worker processes
    per wall second) and counts of one build in a fresh process."""
    code = ("import json, sys; from sari_data.build import build; from sari_data.recipe import load_recipe; "
            "sets = sys.argv[3:]; "
            "print(json.dumps(build(load_recipe(sys.argv[1], sets), __import__('pathlib').Path(sys.argv[2]), progress=False)))")
    sets = [] if workers is None else [f"audio.workers={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(recipe), str(workspace), *sets], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS, not the bench's
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"build of {recipe} failed (exit {proc.returncode})")
    cores = (usage.ru_utime + usage.ru_stime) / wall
    return wall, usage.ru_maxrss / 1024, cores, json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="audio.workers (default: the recipe's default)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/sari-bench-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the built workspaces under --data")
    args = parser.parse_args()
    recipes = {n: ensure_data(args.data, n) for n in args.sizes}
    per_item: dict[int, list[float]] = {n: [] for n in args.sizes}
    print(f"{'items':>7} {'run':>4} {'wall s':>8} {'peak RSS MB':>12} {'per item ms':>12} {'cores busy':>11} "
          f"{'items kept':>11}", flush=True)
    for run in range(args.repeat):
        for n in args.sizes:  # sizes interleaved, so a noisy neighbour hits every size alike
            workspace = args.data / f"ws_{n}_{run}"
            subprocess.run(["rm", "-rf", str(workspace)], check=True)
            wall, peak, cores, counts = timed_build(recipes[n], workspace, args.workers)
            per_item[n].append(wall / n * 1000)
            print(f"{n:>7} {run:>4} {wall:>8.1f} {peak:>12.0f} {per_item[n][-1]:>12.2f} {cores:>11.2f} "
                  f"{counts.get('items', 0):>11}", flush=True)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(workspace)], check=True)
    small, large = min(args.sizes), max(args.sizes)
    ratios = [b / a for a, b in zip(per_item[small], per_item[large])]
    mean = {n: sum(v) / len(v) for n, v in per_item.items()}
    print(json.dumps({"sizes": args.sizes, "per_item_ms": {str(n): round(v, 2) for n, v in mean.items()},
                      f"per_item_{large // 1000}k_over_{small // 1000}k": round(mean[large] / mean[small], 3),
                      "ratio_per_repeat": [round(r, 3) for r in ratios], "workers": args.workers or "default"}))


if __name__ == "__main__":
    main()
