"""Deterministic chains of thought for synthetic items, written from the known scene.

A synthetic item's caption is the ground-truth scene and its meta holds the family and the
construction parameters, so a template can reason correctly with no LLM at all: this is what
`make demo` uses when no endpoint is configured. Parameters are read with `.get`; when one is
missing the reasoning falls back to the caption alone, so a renamed parameter degrades the prose,
never the correctness (the chain still goes through the same checks as an LLM's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corpus.records import Item
from sari_data.sources.synthetic import PITCH_BOUNDARY_HZ, scene_caption

# What to listen for, per family (the planning step).
FOCUS: dict[str, str] = {
    "count_beeps": "count the separate beeps",
    "order_tone_noise": "notice whether the steady tone or the noise burst starts first",
    "louder_first_second": "compare the loudness of the two tones",
    "longer_first_second": "compare how long each of the two tones lasts",
    "chirp_direction": "follow the pitch of the sweep from start to end",
    "pitch_high_low": f"estimate the pitch of the tone against the {PITCH_BOUNDARY_HZ:.0f} Hz mark",
    "pitch_compare": "compare the pitch of the two tones",
    "tempo_fast_slow": "estimate the tempo of the clicks in beats per minute",
    "chord_major_minor": "hear the intervals of the chord above its root",
}


def _hz(values: list[float]) -> str:
    return " and ".join(f"{v:.0f} Hz" for v in values)


def _count(p: dict[str, Any], a: str) -> str | None:
    onsets = p.get("onsets_s")
    return f"Beeps start at {', '.join(f'{t:.2f}' for t in onsets)} s: {len(onsets)} in all." if onsets else None


def _order(p: dict[str, Any], a: str) -> str | None:
    t, n = p.get("tone_onset_s"), p.get("noise_onset_s")
    return None if t is None or n is None else f"The tone starts at {t:.2f} s and the noise at {n:.2f} s, so {a} comes first."


def _louder(p: dict[str, Any], a: str) -> str | None:
    g = p.get("gains_db")
    return f"The first tone is at {g[0]:+.1f} dB and the second at {g[1]:+.1f} dB, so {a} is louder." if g else None


def _longer(p: dict[str, Any], a: str) -> str | None:
    d = p.get("durations_s")
    return f"The first tone lasts {d[0]:.2f} s and the second {d[1]:.2f} s, so {a} is longer." if d else None


def _chirp(p: dict[str, Any], a: str) -> str | None:
    f0, f1 = p.get("f_start_hz"), p.get("f_end_hz")
    return None if f0 is None or f1 is None else f"The sweep moves from {f0:.0f} Hz to {f1:.0f} Hz, so its pitch is {a}."


def _high_low(p: dict[str, Any], a: str) -> str | None:
    f = p.get("freq_hz")
    side = "above" if a == "high" else "below"
    return None if f is None else f"The tone sits at about {f:.0f} Hz, {side} {PITCH_BOUNDARY_HZ:.0f} Hz, so it is {a}."


def _compare(p: dict[str, Any], a: str) -> str | None:
    f = p.get("freqs_hz")
    return f"The tones are at {_hz(f[:2])} in turn, so {a} is higher." if f else None


def _tempo(p: dict[str, Any], a: str) -> str | None:
    bpm = p.get("bpm")
    return None if bpm is None else f"The clicks come at about {bpm:.0f} beats per minute, so the tempo is {a}."


def _chord(p: dict[str, Any], a: str) -> str | None:
    f = p.get("freqs_hz")
    return f"The notes are {', '.join(f'{x:.0f}' for x in f)} Hz; their intervals make a {a} triad." if f else None


REASON: dict[str, Callable[[dict[str, Any], str], str | None]] = {
    "count_beeps": _count, "order_tone_noise": _order, "louder_first_second": _louder,
    "longer_first_second": _longer, "chirp_direction": _chirp, "pitch_high_low": _high_low,
    "pitch_compare": _compare, "tempo_fast_slow": _tempo, "chord_major_minor": _chord,
}


def is_synthetic(item: Item) -> bool:
    """Items whose caption is the ground-truth scene and whose meta names their family."""
    return item.caption_source == "ground-truth" and bool(item.caption) and "family" in item.meta


def template_chains(item: Item) -> dict[str, str]:
    """The structured and the free-form chain (the text inside <think>) for a synthetic item."""
    family = str(item.meta.get("family", ""))
    focus = FOCUS.get(family, "listen for what the question asks about")
    others = ", ".join(repr(c) for c in item.choices if c != item.answer)
    rule = REASON.get(family)
    fact = rule(item.meta.get("params") or {}, item.answer) if rule else None
    fact = fact or f"The scene matches {item.answer!r}."
    reasoning = f"{fact} That rules out {others}."
    scene = scene_caption(item.caption or "")
    # The planning names the skill, not the question again: restating the prompt doubles a chain's
    # length and is the part toy models garble first.
    structured = (f"<planning>I need to {focus}, then pick the option that matches.</planning>\n"
                  f"<caption>{scene}</caption>\n"
                  f"<reasoning>{reasoning}</reasoning>\n"
                  f"<summary>The answer is {item.answer}.</summary>")
    free = f"To answer this I {focus}. {scene} {reasoning} So the answer is {item.answer}."
    return {"structured": structured, "free": free}
