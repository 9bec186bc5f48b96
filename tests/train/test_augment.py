"""DiffAugment's transforms: what each does to known images, that they are differentiable, and shared draws; the
colour transforms a translation model's content code learns to ignore."""

from __future__ import annotations

import pytest
import torch

from gvtool.train.augment import cut_out, diff_augment, random_recolour, recolour, translate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ramp(b=2, c=1, h=6, w=5) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


class TestTranslate:
    def test_zero_shift_is_the_identity(self):
        x = _ramp()
        torch.testing.assert_close(translate(x, torch.zeros(2, 2, dtype=torch.long)), x)

    def test_shifts_rows_down_and_columns_right_repeating_the_edge(self):
        x = _ramp(b=1)
        out = translate(x, torch.tensor([[2, -1]]))
        torch.testing.assert_close(out[0, 0, 2:, :-1], x[0, 0, :-2, 1:])  # the content moved by (+2, -1)
        torch.testing.assert_close(out[0, 0, :2, :-1], x[0, 0, :1, 1:].expand(2, -1))  # the top edge repeated
        torch.testing.assert_close(out[0, 0, 2:, -1], x[0, 0, :-2, -1])  # the right edge repeated

    def test_each_item_takes_its_own_shift(self):
        x = _ramp()
        out = translate(x, torch.tensor([[0, 0], [1, 0]]))
        torch.testing.assert_close(out[0], x[0])
        assert not torch.equal(out[1], x[1])

    def test_gradient_flows_back_to_the_pixels(self):
        x = _ramp().requires_grad_(True)
        translate(x, torch.tensor([[1, 1], [-1, 2]])).sum().backward()
        assert x.grad is not None and x.grad.sum() == x.numel()  # every output pixel came from one input pixel


class TestCutOut:
    def test_zeroes_a_rectangle_around_the_centre_and_keeps_the_rest(self):
        x = torch.ones(1, 2, 6, 6)
        out = cut_out(x, torch.tensor([[3, 3]]), (2, 4))
        assert torch.equal(out[:, :, 2:4, 1:5], torch.zeros(1, 2, 2, 4))
        assert out.sum() == x.sum() - 2 * 2 * 4

    def test_rectangle_is_clipped_at_the_edge(self):
        out = cut_out(torch.ones(1, 1, 6, 6), torch.tensor([[0, 0]]), (4, 4))
        assert out.sum() == 36 - 2 * 2  # rows 0-1, columns 0-1 of the 4x4 square fall inside


class TestDiffAugment:
    def test_no_policy_returns_the_input(self):
        x = _ramp()
        assert diff_augment(x, ()) is x

    def test_items_with_one_draw_get_the_same_transform(self):
        torch.manual_seed(0)
        x = torch.rand(4, 1, 16, 16)
        x = torch.cat([x, x])  # items i and i + 4 are equal
        out = diff_augment(x, ("translation", "cutout"), torch.arange(4).repeat(2), n_draws=4)
        torch.testing.assert_close(out[:4], out[4:])

    def test_a_draw_without_its_count_is_refused(self):
        with pytest.raises(ValueError, match="n_draws"):
            diff_augment(_ramp(), ("translation",), torch.zeros(1, dtype=torch.int64))

    def test_makes_no_host_read_of_the_draws(self, monkeypatch):
        """A captured CUDA graph cannot sync with the host: the draws are never read back."""
        monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("diff_augment read a tensor on the host"))
        monkeypatch.setattr(torch.Tensor, "__int__", lambda self: pytest.fail("diff_augment read a tensor on the host"))
        diff_augment(torch.rand(6, 1, 16, 16), ("translation", "cutout"), torch.arange(3).repeat(2), n_draws=3)

    def test_items_with_their_own_draws_differ(self):
        torch.manual_seed(0)
        x = torch.rand(1, 1, 16, 16).expand(8, -1, -1, -1)
        out = diff_augment(x, ("translation", "cutout"))
        assert len({tuple(o.flatten().tolist()) for o in out}) > 1

    def test_translation_stays_within_an_eighth_of_the_side(self):
        torch.manual_seed(0)
        x = torch.zeros(256, 1, 16, 16)
        x[:, :, 8, 8] = 1.0  # one bright pixel in the middle
        out = diff_augment(x, ("translation",))
        rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
        assert (rows - 8).abs().max() == 2 and (cols - 8).abs().max() == 2  # 16 / 8 = 2 pixels at most, both reached

    def test_cutout_blanks_a_quarter_of_the_area_away_from_the_edges(self):
        torch.manual_seed(0)
        out = diff_augment(torch.ones(64, 1, 16, 16), ("cutout",))
        blanked = (out == 0).flatten(1).sum(dim=1)
        assert blanked.max() == 8 * 8 and blanked.min() > 0


class TestRecolour:
    def test_inverts_the_marked_items_and_reorders_each_items_channels(self):
        x = torch.stack([torch.full((2, 2), v) for v in (-1.0, 0.5, 1.0)]).expand(2, 3, 2, 2)  # channels -1, .5, 1
        out = recolour(x, torch.tensor([False, True]), torch.tensor([[2, 0, 1], [0, 1, 2]]))
        assert out[0, :, 0, 0].tolist() == [1.0, -1.0, 0.5]  # item 0: channels 2, 0, 1, not inverted
        assert out[1, :, 0, 0].tolist() == [1.0, -0.5, -1.0]  # item 1: its own order, inverted

    def test_a_random_draw_inverts_some_items_and_permutes_channels(self):
        torch.manual_seed(0)
        x = torch.rand(256, 3, 4, 4) * 2 - 1
        out = random_recolour(x)
        inverted = (out.sum(dim=(1, 2, 3)) - -x.sum(dim=(1, 2, 3))).abs() < 1e-4  # reordering keeps an item's sum
        assert 0.35 < inverted.float().mean() < 0.65
        # each item's channels are its own channels, reordered (sorted values compare whatever the order)
        kept = torch.where(inverted.view(-1, 1, 1, 1), -out, out)
        torch.testing.assert_close(kept.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
        assert (kept[:, 0] != x[:, 0]).flatten(1).any(dim=1).float().mean() > 0.4  # the first channel moved

    def test_a_grey_item_keeps_its_channel_and_the_gradient_flows(self):
        x = (torch.rand(8, 1, 4, 4) * 2 - 1).requires_grad_(True)
        out = random_recolour(x)
        assert ((out - x).abs().flatten(1).amax(dim=1) < 1e-6).logical_or((out + x).abs().flatten(1).amax(dim=1)
                                                                            < 1e-6).all()
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() == x.numel()
