import pytest
import torch

from mdqe.engine.train_loop import IterationSeeder, MDQESimpleTrainer, check_losses_finite, iteration_seed


class ToyLossModel(torch.nn.Module):
    """Two loss terms; `loss_b` becomes NaN from iteration `nan_at` on (counted by forward calls)."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, batch):
        x = torch.stack(batch).mean(0)
        loss_b = (self.weight * x).sum() ** 2
        if self.calls >= self.nan_at:
            loss_b = loss_b * float("nan")
        self.calls += 1
        return {"loss_a": (self.weight - x).abs().sum(), "loss_b": loss_b}


def _batches():
    while True:
        yield [torch.arange(3.0), torch.ones(3)]


def test_finite_losses_pass():
    check_losses_finite({"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(0.0)}, iteration=3)


def test_non_finite_loss_error_names_iteration_and_terms():
    losses = {
        "loss_cls": torch.tensor(0.5),
        "loss_mask_2": torch.tensor(float("inf")),
        "loss_dice": torch.tensor(float("nan")),
    }
    with pytest.raises(FloatingPointError) as info:
        check_losses_finite(losses, iteration=17)
    message = str(info.value)
    assert "iteration 17" in message
    assert "loss_mask_2=inf" in message and "loss_dice=nan" in message
    assert "2 of 3 terms" in message and "loss_cls=0.5" in message


def test_trainer_stops_at_the_nan_iteration_before_updating_the_weights():
    model = ToyLossModel(nan_at=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = MDQESimpleTrainer(model, _batches(), optimizer)
    with pytest.raises(FloatingPointError, match=r"iteration 2 .*loss_b=nan"):
        trainer.train(0, 5)
    assert trainer.iter == 2
    assert torch.isfinite(model.weight).all()


def test_iteration_seed_depends_on_seed_iteration_and_rank():
    seeds = {iteration_seed(s, i, r) for s in (0, 1) for i in (0, 1, 1000) for r in (0, 1)}
    assert len(seeds) == 12
    assert iteration_seed(5, 7, 1) == iteration_seed(5, 7, 1)
    assert all(0 <= s < 2**31 for s in seeds)


def test_iteration_seeder_makes_each_step_draw_the_same_numbers():
    class Draws(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.draws = []

        def forward(self, batch):
            self.draws.append(torch.randperm(1000)[:5].tolist())
            return {"loss": self.weight.sum() * 0}

    def run(start, stop, noise):
        model = Draws()
        trainer = MDQESimpleTrainer(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.1))
        trainer.register_hooks([IterationSeeder(seed=3)])
        torch.rand(noise)  # a different global generator state before training
        trainer.train(start, stop)
        return model.draws

    full = run(0, 4, noise=1)
    assert run(2, 4, noise=7) == full[2:]
    assert full[0] != full[1]
