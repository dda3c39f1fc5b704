"""Which prompts GRPO sees, in which order: easy → hard by difficulty bucket, or at random.

`curriculum`: every epoch is a sweep from bucket 0 (easiest) to the hardest, shuffled within each
bucket, so the number of steps spent on a stage is proportional to its size (SARI trains on the
RL split sorted by difficulty). `random`: a fresh permutation per epoch (the baseline).
Optional online band-pass: the sampler keeps a running pass rate per item (seeded from the
difficulty table, updated from each GRPO group's accuracy) and skips items outside [low, high]
— mastered or hopeless ones give all-equal rewards and no gradient. If a whole epoch's worth of
items is out of band, it takes them anyway rather than stall.

The state (order, position, epoch, RNG, running rates) round-trips through `state_dict`, so a
resumed run draws exactly the prompts the uninterrupted run would have.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

SamplerMode = Literal["curriculum", "random"]


class CurriculumSampler:
    def __init__(self, ids: list[str], buckets: dict[str, int] | None = None, mode: SamplerMode = "curriculum",
                 seed: int = 0, band: tuple[float, float] | None = None,
                 pass_rates: dict[str, float] | None = None, ema: float = 0.5):
        if not ids:
            raise ValueError("the sampler needs at least one item")
        if mode == "curriculum":
            missing = [i for i in ids if buckets is None or i not in buckets]
            if missing:
                raise ValueError(f"{len(missing)} items have no difficulty bucket (e.g. {missing[0]}); "
                                 f"run `sari-data difficulty` first or use sampler: random")
        self.ids, self.mode, self.band, self.ema = list(ids), mode, band, ema
        self.buckets = dict(buckets or {})
        self.rates: dict[str, float] = dict(pass_rates or {})
        self.rng = np.random.default_rng(seed)
        self.epoch, self.position = 0, 0
        self.order = self._new_order()

    def _new_order(self) -> list[int]:
        permutation = self.rng.permutation(len(self.ids))
        if self.mode == "random":
            return permutation.tolist()
        # A stable sort of a random permutation by bucket: easy first, shuffled within buckets.
        return sorted(permutation.tolist(), key=lambda i: self.buckets[self.ids[i]])

    @property
    def epochs_done(self) -> float:
        """Epochs as a fraction (1.5: one pass and half of the next), as TRL logs `epoch`."""
        return self.epoch + self.position / len(self.order)

    def _in_band(self, item_id: str) -> bool:
        if self.band is None or item_id not in self.rates:
            return True
        low, high = self.band
        return low <= self.rates[item_id] <= high

    def _next(self) -> str:
        if self.position == len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
            self.order = self._new_order()
        item_id = self.ids[self.order[self.position]]
        self.position += 1
        return item_id

    def take(self, n: int) -> list[str]:
        """The next n item ids (an item can repeat only across epochs)."""
        out: list[str] = []
        skipped = 0
        while len(out) < n:
            item_id = self._next()
            if self._in_band(item_id) or skipped >= len(self.ids):
                out.append(item_id)
                skipped = 0
            else:
                skipped += 1
        return out

    def observe(self, item_id: str, pass_rate: float) -> None:
        """Fold a group's observed accuracy into the item's running pass rate."""
        old = self.rates.get(item_id)
        self.rates[item_id] = pass_rate if old is None else (1 - self.ema) * old + self.ema * pass_rate

    def stage(self, item_ids: list[str]) -> float:
        """Mean difficulty bucket of a batch (logged as `curriculum/bucket`)."""
        known = [self.buckets[i] for i in item_ids if i in self.buckets]
        return float(np.mean(known)) if known else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "order": self.order,
                "rng": self.rng.bit_generator.state, "rates": self.rates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.order = state["epoch"], state["position"], list(state["order"])
        self.rng.bit_generator.state = state["rng"]
        self.rates = dict(state["rates"])
