"""The step's bookkeeping: metrics summed over micro-batches into means, the batch std."""

import pytest
import torch

from sari_train.grpo.groups import Tally, pooled_std


class OneProcess:
    device = torch.device("cpu")

    def reduce(self, tensor, reduction):
        return tensor


def test_tally_weights_each_observation_once_across_micro_batches():
    tally = Tally()
    tally.add_values({"reward": torch.tensor([1.0, 2.0, 3.0])})
    tally.add_values({"reward": torch.tensor([6.0])})
    tally.add({"kl": torch.tensor([0.5, 2.0]), "empty": torch.tensor([0.0, 0.0])})  # (sum, count) pairs
    assert tally.means(OneProcess()) == {"reward": pytest.approx(3.0), "kl": pytest.approx(0.25), "empty": None}


def test_pooled_std_is_the_unbiased_std():
    values = torch.tensor([1.0, 2.0, 4.0, 7.0])
    assert float(pooled_std(values, OneProcess())) == pytest.approx(float(values.std()), rel=1e-6)
