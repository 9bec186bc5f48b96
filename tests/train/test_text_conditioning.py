"""Text-conditioned training (--captions): captions files, the networks taking sentence embeddings in place of
labels, and a tiny run."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gvtool.errors import BadInputError
from gvtool.train import rundir
from gvtool.train.captions import BUILTIN, MAX_CAPTION_CHARS, load_captions
from gvtool.train.data import load_dataset
from gvtool.train.loop import complete_config, load_data, train
from gvtool.train.models import Decoder, Discriminator
from gvtool.train.snapshots import PROMPTS_FILE
from gvtool.train.text import embed_captions, text_dim

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two class folders of 3 grey images each: a/0.png a/1.png a/2.png b/0.png ..."""
    root = tmp_path_factory.mktemp("captioned")
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(3):
            Image.new("L", (16, 16), 40 * i).save(root / cls / f"{i}.png")
    return root


def files_of(folder):
    return [f"{c}/{i}.png" for c in ("a", "b") for i in range(3)]


class TestCaptionFiles:
    def test_a_txt_file_gives_one_caption_per_line_in_load_order(self, folder, tmp_path):
        (tmp_path / "c.txt").write_text("".join(f"caption {i}\n" for i in range(6)) + "\n\n")
        got = load_captions(str(tmp_path / "c.txt"), load_dataset(str(folder)))
        assert got == [[f"caption {i}"] for i in range(6)]

    def test_a_json_object_and_a_csv_name_the_files(self, folder, tmp_path):
        names = files_of(folder)
        mapping = {name: f"the image {name}" for name in names} | {"b/2.png": ["one", "two"]}
        (tmp_path / "c.json").write_text(json.dumps(mapping))
        data = load_dataset(str(folder))
        got = load_captions(str(tmp_path / "c.json"), data)
        assert got[0] == ["the image a/0.png"] and got[5] == ["one", "two"]
        (tmp_path / "c.csv").write_text("file,caption\n" + "".join(f"{n},\"a {n}, drawn\"\n" for n in names[::-1]))
        assert load_captions(str(tmp_path / "c.csv"), data)[1] == ["a a/1.png, drawn"]

    def test_a_json_list_is_in_item_order(self, labelled_npz, tmp_path):
        (tmp_path / "c.json").write_text(json.dumps([f"item {i}" if i % 2 else [f"item {i}", "x"] for i in range(N)]))
        got = load_captions(str(tmp_path / "c.json"), load_dataset(labelled_npz))
        assert got[1] == ["item 1"] and got[2] == ["item 2", "x"]

    @pytest.mark.parametrize("name, text, message", [
        ("c.txt", "one\ntwo\n", "2 lines for 6 images"),
        ("c.json", '["a", "b"]', "lists 2 captions for 6"),
        ("c.json", '{"a/0.png": "x"}', "5 images have no caption"),
        ("c.json", '{"a/9.png": "x"}', "'a/9.png' is not an image"),
        ("c.json", '3', "expected a JSON list"),
        ("c.csv", "name,text\na/0.png,x\n", "columns 'file' and 'caption'"),
        ("c.txt", "x\n" * 5 + "y" * (MAX_CAPTION_CHARS + 1) + "\n", "not one line of 1 to"),
        ("c.json", json.dumps(["x"] * 5 + ["two\nlines"]), "not one line"),
        ("c.json", json.dumps(["x"] * 5 + [[]]), "has no caption"),
        ("c.yaml", "x", "expected a .txt, .json or .csv"),
    ])
    def test_a_bad_captions_file_is_refused_with_one_line(self, folder, tmp_path, name, text, message):
        (tmp_path / name).write_text(text)
        with pytest.raises(BadInputError, match=message):
            load_captions(str(tmp_path / name), load_dataset(str(folder)))

    def test_a_missing_file_and_builtin_captions_of_non_digits_are_refused(self, labelled_npz, tmp_path):
        with pytest.raises(BadInputError, match="no such file"):
            load_captions(str(tmp_path / "none.txt"), load_dataset(labelled_npz))
        with pytest.raises(BadInputError, match="grey digits labelled 0-9"):
            load_captions(BUILTIN, load_dataset(labelled_npz))  # 4 classes

    def test_captions_by_file_need_a_folder(self, labelled_npz, tmp_path):
        (tmp_path / "c.json").write_text('{"x.png": "x"}')
        with pytest.raises(BadInputError, match="not a folder of images"):
            load_captions(str(tmp_path / "c.json"), load_dataset(labelled_npz))

    def test_builtin_captions_follow_each_digit_through_a_split(self):
        data = load_dataset("digits").with_captions(load_captions(BUILTIN, load_dataset("digits")))
        part = data.subset(torch.tensor([5, 900]))
        assert part.captions == (data.captions[5], data.captions[900])
        for caption, label in zip(part.captions, part.y.tolist()):
            names = (str(label), ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")[label])
            assert all(any(n in c.split(" ") or n + "," in c for n in names) for c in caption)


class TestConfig:
    def test_text_conditioning_is_for_one_decoder_one_discriminator_kinds(self, make_model_config):
        for kind in ("vaegan", "vae", "gan"):
            make_model_config(kind=kind, conditional=True, text_dim=8)
        for kind, message in (("ali", "not a ali"), ("hier", "not a hier")):
            with pytest.raises(BadInputError, match=message):
                make_model_config(kind=kind, conditional=True, text_dim=8)
        with pytest.raises(BadInputError, match="is conditional"):
            make_model_config(text_dim=8)
        with pytest.raises(BadInputError, match="not vector data"):
            make_model_config(conditional=True, text_dim=8, data_kind="vector")

    @pytest.mark.text_encoder
    def test_captions_fill_in_the_text_dim_and_no_classes(self, make_train_config, labelled_npz, tmp_path):
        (tmp_path / "c.txt").write_text("a thing\n" * N)
        config = make_train_config(labelled_npz, conditional=True, captions=str(tmp_path / "c.txt"))
        data, _ = load_data(config)
        model = complete_config(config, data).model
        assert (model.text_dim, model.num_classes, model.condition_size) == (text_dim(), 0, 384)

    def test_captions_need_a_conditional_model(self, make_train_config, labelled_npz):
        with pytest.raises(BadInputError, match="needs model.conditional"):
            make_train_config(labelled_npz, captions="builtin")


class TestNetworks:
    def test_the_decoder_and_discriminator_take_the_sentence_embedding(self, make_model_config):
        cfg = make_model_config(conditional=True, text_dim=6, image_size=16)
        torch.manual_seed(0)
        decoder, discriminator = Decoder(cfg).eval(), Discriminator(cfg).eval()
        z, e1, e2 = torch.randn(3, cfg.latent_dim), torch.randn(3, 6), torch.randn(3, 6)
        assert decoder(z, e1).shape == (3, 1, 16, 16)
        assert not torch.allclose(decoder(z, e1), decoder(z, e2))
        x = torch.randn(3, 1, 16, 16)
        (l1, f1), (l2, f2) = discriminator(x, e1), discriminator(x, e2)
        assert torch.equal(f1, f2) and not torch.allclose(l1, l2)  # the projection term alone sees the text


class TestEmbedCaptions:
    @pytest.mark.text_encoder
    def test_items_with_fewer_captions_repeat_their_own(self):
        e = embed_captions((("a thin 4", "a thick 4"), ("a 7",)), torch.device("cpu"))
        assert e.shape == (2, 2, 384)
        assert torch.equal(e[1, 0], e[1, 1]) and not torch.equal(e[0, 0], e[0, 1])


@pytest.mark.text_encoder
def test_a_tiny_text_conditioned_run_trains_resumes_and_lists_its_prompts(make_train_config, labelled_npz, tmp_path):
    (tmp_path / "c.txt").write_text("".join(f"a {'thin' if i % 2 else 'thick'} {i % 4}\n" for i in range(N)))
    config = make_train_config(labelled_npz, conditional=True, captions=str(tmp_path / "c.txt"))
    run = tmp_path / "run"
    train(config, run)
    stored = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert stored["captions"] == str(tmp_path / "c.txt") and stored["model"]["text_dim"] == 384
    prompts = (run / rundir.SAMPLES_DIR / PROMPTS_FILE).read_text().splitlines()
    assert len(prompts) == config.n_fixed and set(prompts) <= {f"a {t} {d}" for t in ("thin", "thick") for d in range(4)}
    result = train(config.replace(epochs=2), run, resume=True)
    assert result.epoch == 2
