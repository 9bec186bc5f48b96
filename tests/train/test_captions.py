"""Tests for gvtool.train.captions: attributes measured from known images, the words they get, and the captions."""

import numpy as np
import pytest

from gvtool.errors import BadInputError
from gvtool.train import captions as C


def bar(width=3, slant_degrees=0.0, height=20, side=28, dx=0, dy=0):
    """A vertical stroke `width` pixels wide and `height` high, sheared so its top leans right by slant_degrees."""
    image = np.zeros((side, side), np.uint8)
    top = (side - height) // 2 + dy
    for r in range(top, top + height):
        shift = -np.tan(np.radians(slant_degrees)) * (r - (top + height / 2 - 0.5))
        left = int(round(side / 2 - width / 2 + shift)) + dx
        image[r, max(left, 0):max(left + width, 0)] = 255
    return image


def measured(*images):
    return C.measure(np.stack(images)[:, None])


class TestMeasure:
    def test_thickness_follows_the_stroke_width(self):
        a = measured(bar(2), bar(4), bar(6))
        assert np.all(np.diff(a.thickness) > 1.5)
        np.testing.assert_allclose(a.thickness, [2, 4, 6], atol=1.0)

    def test_slant_is_the_shear_angle_positive_leaning_right(self):
        a = measured(bar(slant_degrees=20), bar(slant_degrees=0), bar(slant_degrees=-20))
        np.testing.assert_allclose(a.slant, [20, 0, -20], atol=2.0)

    def test_size_and_offset_in_pixels(self):
        a = measured(bar(width=4, height=12, dx=4, dy=-3))
        assert (a.width[0], a.height[0]) == (4, 12)
        assert a.dx[0] == pytest.approx(4, abs=0.6)
        assert a.dy[0] == pytest.approx(-3, abs=0.6)

    def test_is_at_the_28_pixel_scale_whatever_the_image_size(self):
        small, large = bar(width=4, height=20), np.kron(bar(width=4, height=20), np.ones((2, 2), np.uint8))
        a, b = C.measure(small[None]), C.measure(large[None])
        assert b.height[0] == a.height[0] and b.width[0] == a.width[0]
        assert b.thickness[0] == pytest.approx(a.thickness[0], abs=0.6)

    def test_an_empty_image_measures_zero(self):
        a = measured(np.zeros((28, 28), np.uint8))
        assert (a.thickness[0], a.slant[0], a.height[0]) == (0, 0, 0)

    def test_refuses_colour_images(self):
        with pytest.raises(BadInputError, match="3 channels"):
            C.measure(np.zeros((2, 3, 28, 28), np.uint8))


class TestBands:
    def test_words_only_beyond_the_bands(self):
        images = [bar(2), bar(6), bar(4, slant_degrees=25), bar(4, slant_degrees=-15), bar(4, slant_degrees=9)]
        said = C.bands(measured(*images), np.zeros(len(images), int))
        assert said[0]["thickness"] == "thin" and said[1]["thickness"] == "thick"
        assert said[0]["slant"] == said[1]["slant"] == "upright"
        assert (said[2]["slant"], said[3]["slant"]) == ("right", "left")
        assert "slant" not in said[4]  # between upright and leaning right: unsaid

    def test_width_is_judged_within_the_class(self):
        images = [bar(4), bar(4), bar(4), bar(8)] + [bar(8)] * 3 + [bar(4)]
        said = C.bands(measured(*images), np.array([1, 1, 1, 1, 0, 0, 0, 0]))
        assert said[3]["width"] == "wide" and said[7]["width"] == "narrow"
        assert "width" not in said[0] and "width" not in said[4]

    def test_size_and_position(self):
        said = C.bands(measured(bar(4, height=12), bar(4, dx=6), bar(4, dy=-5)), np.zeros(3, int))
        assert said[0]["size"] == "small"
        assert said[1]["position"] == "east" and said[2]["position"] == "high"


class TestCaptions:
    def test_says_the_digit_and_its_attributes(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            text = C.caption(7, {"thickness": "thick", "slant": "left"}, rng)
            assert "seven" in text or "7" in text
            assert any(w in text for w in C.TRAIN_WORDS["thick"])
            assert any(w in text for w in C.TRAIN_WORDS["left"])

    def test_a_digit_with_nothing_to_say_is_just_named(self):
        text = C.caption(3, {}, np.random.default_rng(0))
        assert "  " not in text and not text.endswith((",", " "))
        assert "three" in text or "3" in text

    def test_an_before_a_vowel_sound(self):
        texts = {C.caption(8, {"slant": "upright"}, np.random.default_rng(s)) for s in range(40)}
        assert not any(" a 8" in f" {t}" or " a eight" in f" {t}" for t in texts)
        assert any("an 8" in t or "an eight" in t for t in texts)

    def test_held_out_captions_use_templates_never_used_in_training(self):
        rng = np.random.default_rng(0)
        train = {C.caption(4, {"thickness": "thin"}, rng) for _ in range(200)}
        held = {C.caption(4, {"thickness": "thin"}, rng, held_out=True) for _ in range(200)}
        assert not train & held
        openings = {t.split(" ", 2)[0] + t.split(" ", 2)[1] for t in held}
        assert openings <= {"someonedrew", "hereis", "apicture"}

    def test_the_same_images_and_seed_give_the_same_captions(self):
        images, labels = np.stack([bar(2), bar(6, slant_degrees=20)])[:, None], np.array([1, 4])
        assert C.captions(images, labels, per_image=3, seed=5) == C.captions(images, labels, per_image=3, seed=5)
        assert C.captions(images, labels, per_image=3, seed=5) != C.captions(images, labels, per_image=3, seed=6)

    def test_refuses_labels_it_cannot_name(self):
        with pytest.raises(BadInputError, match="0-9"):
            C.captions(np.zeros((1, 1, 28, 28), np.uint8), np.array([12]))
        with pytest.raises(BadInputError, match="labels"):
            C.captions(np.zeros((2, 1, 28, 28), np.uint8), np.array([1]))
