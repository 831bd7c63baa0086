import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from make_mnist_fixture import read_idx, write_idx

from lit_info.data import WordImageDataModule
from lit_info.data.words import DEFAULT_WORD_LIST, TILE, read_word_list, render_font_glyphs

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def font_dm() -> WordImageDataModule:
    dm = WordImageDataModule()
    dm.setup()
    return dm


def _split_words(dm):
    return {"train": dm.train_words, "val": dm.val_words, "test": dm.test_words}


def _split_sets(dm):
    return {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}


def _shipped_words(n: int = 300) -> list[str]:
    words = []
    for line in DEFAULT_WORD_LIST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and len(line) == 3 and line not in words:
            words.append(line)
    return words[:n]


def _tiles(images: torch.Tensor, n_chars: int) -> np.ndarray:
    """(N, 1, 28, 28 n) -> (N, n, 28, 28)."""
    x = images[:, 0].numpy()
    return np.stack([x[:, :, k * TILE : (k + 1) * TILE] for k in range(n_chars)], axis=1)


def _write_words(path: Path, words) -> Path:
    path.write_text("# a comment line\n" + "\n".join(words) + "\n")
    return path


# ------------------------------------------------------------------ word list and alphabets


def test_shipped_word_list_is_real_three_letter_words():
    text = DEFAULT_WORD_LIST.read_text()
    assert text.startswith("#") and "lit_info" in text.splitlines()[0]
    words = [w for w in text.splitlines() if w and not w.startswith("#")]
    assert 280 <= len(words) <= 330
    assert len(set(words)) == len(words)
    assert all(len(w) == 3 and w.isascii() and w.isalpha() and w.islower() for w in words)
    assert words[:10] == ["the", "and", "for", "you", "not", "are", "all", "new", "was", "can"]
    assert read_word_list(DEFAULT_WORD_LIST, 3) == words


def test_default_alphabets_are_the_most_common_letters_per_position(font_dm):
    words = _shipped_words()
    expected = []
    for k in range(3):
        counts = Counter(w[k] for w in words)
        top = sorted(counts, key=lambda c: (-counts[c], c))[:8]
        expected.append("".join(sorted(top)))
    assert font_dm.alphabets == expected
    assert all(len(a) == 8 for a in font_dm.alphabets)


def test_max_words_and_letters_per_position(tmp_path):
    words = ["cat", "car", "cab", "dog", "dot", "cut", "cot", "dug", "bat"]
    path = _write_words(tmp_path / "w.txt", words + ["longer", "ab", "cat"])
    assert read_word_list(path, 3) == words
    assert read_word_list(path, 3, max_words=4) == words[:4]
    dm = WordImageDataModule(word_list=str(path), max_words=5, letters_per_position=2)
    dm.setup()
    # first 5 words: cat car cab dog dot -> position 0: c 3, d 2; 1: a 3, o 2; 2: t 2, then b/g/r
    assert dm.alphabets == ["cd", "ao", "bt"]
    assert set(dm.train_words) == {"cab", "cat", "dot"}


# ------------------------------------------------------------------ the split


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"split": "random", "train_fraction": 0.3, "samples_per_word": 2},
        {"alphabet": ["abc", "xyz"], "n_chars": 2, "split": "random", "split_seed": 3},
        {"alphabet": "0123", "n_chars": 3, "samples_per_word": 1},  # digits: a random split
    ],
)
def test_split_never_leaks(font_dm, kwargs):
    if kwargs:
        dm = WordImageDataModule(**kwargs, eval_samples_per_word=2)
        dm.setup()
    else:
        dm = font_dm
    words = _split_words(dm)
    sets = {s: set(w) for s, w in words.items()}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not sets[a] & sets[b], (a, b)
    full = {"".join(p) for p in itertools.product(*dm.alphabets)}
    assert sets["train"] | sets["val"] | sets["test"] == full
    for split in SPLITS:
        assert words[split] == sorted(words[split])
    n_held = len(full) - len(sets["train"])
    assert len(sets["val"]) == round(dm.val_fraction * n_held)
    if dm.split == "random" or dm.alphabets[0].isdigit():
        assert len(sets["train"]) == round(dm.train_fraction * len(full))
    # every sample's labels decode to its word, which lies in its split
    for split, dataset in _split_sets(dm).items():
        assert len(dataset) == len(words[split]) * (
            dm.samples_per_word if split == "train" else dm.eval_samples_per_word
        )
        assert set(dataset.words) == sets[split]
        decoded = [
            "".join(dm.alphabets[k][int(i)] for k, i in enumerate(row)) for row in dataset.labels
        ]
        assert decoded == dataset.words


def test_words_split_trains_on_words_and_tests_on_non_words(font_dm):
    words = set(_shipped_words())
    assert font_dm.train_words and all(w in words for w in font_dm.train_words)
    assert not words & set(font_dm.val_words) and not words & set(font_dm.test_words)
    full = {"".join(p) for p in itertools.product(*font_dm.alphabets)}
    assert set(font_dm.train_words) == full & words
    assert (len(font_dm.train_words), len(font_dm.val_words), len(font_dm.test_words)) == (
        109,
        81,
        322,
    )


def test_split_seed_changes_a_random_split_only():
    a = WordImageDataModule(alphabet="abcd", n_chars=2, split="random")
    b = WordImageDataModule(alphabet="abcd", n_chars=2, split="random", split_seed=1)
    a.setup(), b.setup()
    assert a.train_words != b.train_words
    c = WordImageDataModule(alphabet="abcd", n_chars=2, split="random", seed=5)
    c.setup()
    assert c.train_words == a.train_words and c.test_words == a.test_words


# ------------------------------------------------------------------ images


def test_items_shapes_and_dtypes(font_dm):
    x, y, i = font_dm.train_set[7]
    assert x.shape == (1, 28, 84) and x.dtype == torch.float32
    assert y.shape == (3,) and y.dtype == torch.int64 and i == 7
    assert font_dm.train_set.images.shape == (len(font_dm.train_set), 1, 28, 84)
    assert font_dm.train_set.labels.shape == (len(font_dm.train_set), 3)
    assert float(font_dm.train_set.images.min()) >= 0 and float(font_dm.train_set.images.max()) <= 1
    assert font_dm.input_shape == (1, 28, 84) and font_dm.num_features == 28 * 84
    assert font_dm.model_hints() == {"input_shape": (1, 28, 84)}
    assert all(imgs.shape == (20, 28, 28) for imgs in font_dm.char_images.values())


def test_every_tile_is_one_image_of_its_character(font_dm):
    # index every character image by its bytes: the tile must be exactly one of them, and one
    # of its own character (images of different characters never coincide)
    owner: dict[bytes, set[str]] = {}
    for char, imgs in font_dm.char_images.items():
        for img in imgs.numpy():
            owner.setdefault(img.tobytes(), set()).add(char)
        assert len({img.tobytes() for img in imgs.numpy()}) == len(imgs)  # distinct variants
    assert all(len(chars) == 1 for chars in owner.values())
    used: dict[str, set[int]] = {}
    for split, dataset in _split_sets(font_dm).items():
        tiles = _tiles(dataset.images, 3)
        for n in range(0, len(dataset), 7):
            for k in range(3):
                char = dataset.words[n][k]
                assert owner[tiles[n, k].tobytes()] == {char}, (split, n, k)
                j = int(dataset.char_indices[n, k])
                assert np.array_equal(tiles[n, k], font_dm.char_images[char][j].numpy())
                used.setdefault(char, set()).add(j)
    # the picks spread over the variants
    assert max(len(v) for v in used.values()) == 20


def test_font_characters_are_recognisable_across_variants():
    # leave-one-out 1-nearest-neighbour over 100 variants per character: the jitter varies a
    # glyph, but its nearest other variant is almost always of the same character
    dm = WordImageDataModule(images_per_char=100, samples_per_word=1, eval_samples_per_word=1)
    dm.setup()
    chars = sorted(dm.char_images)
    x = np.concatenate([dm.char_images[c].numpy() for c in chars]).reshape(-1, 784)
    x = x.astype(np.float64)
    y = np.repeat(np.arange(len(chars)), 100)
    sq = (x**2).sum(1)
    dist = sq[:, None] + sq[None] - 2 * x @ x.T
    np.fill_diagonal(dist, np.inf)
    assert (y[dist.argmin(1)] == y).mean() > 0.8  # chance: 1 / 18
    ink = x.reshape(len(x), 28, 28)
    assert (ink.max((1, 2)) > 0.9).all() and ink.mean() < 0.3  # ink on black
    # upper and lower case are different images (common baseline, no size normalisation)
    assert not np.allclose(
        render_font_glyphs("o", 1, np.random.default_rng(0)),
        render_font_glyphs("O", 1, np.random.default_rng(0)),
        atol=0.1,
    )
    with pytest.raises(ValueError, match="is not an ASCII letter or digit"):
        render_font_glyphs("é", 1, 0)


def test_noise_has_the_requested_std_and_is_fixed():
    kwargs = {"alphabet": "abc", "n_chars": 2, "split": "random", "samples_per_word": 10}
    clean = WordImageDataModule(**kwargs)
    noisy = WordImageDataModule(**kwargs, noise_std=0.3)
    clean.setup(), noisy.setup()
    assert clean.train_words == noisy.train_words
    assert torch.equal(clean.train_set.labels, noisy.train_set.labels)
    assert torch.equal(clean.train_set.char_indices, noisy.train_set.char_indices)
    diff = (noisy.train_set.images - clean.train_set.images).flatten().double()
    assert diff.numel() > 50_000
    assert abs(float(diff.std()) - 0.3) < 0.01 and abs(float(diff.mean())) < 0.01
    # the noise belongs to the sample: reading an item twice gives the same tensor
    assert torch.equal(noisy.train_set[3][0], noisy.train_set[3][0])
    assert torch.equal(next(iter(noisy.train_eval_dataloader()))[0][0], noisy.train_set[0][0])


def test_same_arguments_give_identical_tensors_and_other_seeds_differ():
    kwargs = {"noise_std": 0.1, "images_per_char": 5, "samples_per_word": 3}
    a, b = WordImageDataModule(**kwargs), WordImageDataModule(**kwargs)
    c = WordImageDataModule(**kwargs, seed=1)
    for dm in (a, b, c):
        dm.setup()
    for split in SPLITS:
        sa, sb, sc = (_split_sets(dm)[split] for dm in (a, b, c))
        assert torch.equal(sa.images, sb.images) and torch.equal(sa.labels, sb.labels)
        assert sa.words == sb.words and sa.words == sc.words  # seed leaves the split
        assert not torch.equal(sa.images, sc.images)
    for char in a.char_images:
        assert torch.equal(a.char_images[char], b.char_images[char])
        assert not torch.equal(a.char_images[char], c.char_images[char])


def test_arrays_for_scikit_learn(font_dm):
    x, y = font_dm.arrays("val")
    assert x.shape == (len(font_dm.val_set), 28 * 84) and x.dtype == np.float32
    assert y.shape == (len(font_dm.val_set), 3) and y.dtype == np.int64
    assert np.array_equal(x[4].reshape(28, 84), font_dm.val_set.images[4, 0].numpy())
    assert np.array_equal(y, font_dm.val_set.labels.numpy())
    with pytest.raises(ValueError, match="split must be one of"):
        font_dm.arrays("dev")


def test_loaders(font_dm):
    train = font_dm.train_dataloader()
    x, y, index = next(iter(train))
    assert x.shape == (128, 1, 28, 84) and y.shape == (128, 3)
    assert torch.equal(x, font_dm.train_set.images[index])
    assert not torch.equal(index, torch.arange(128))  # shuffled
    x, y, index = next(iter(font_dm.train_eval_dataloader()))
    assert torch.equal(index, torch.arange(128)) and torch.equal(y, font_dm.train_set.labels[:128])
    for loader, dataset in (
        (font_dm.val_dataloader(), font_dm.val_set),
        (font_dm.test_dataloader(), font_dm.test_set),
        (font_dm.predict_dataloader(), font_dm.test_set),
    ):
        assert sum(len(batch[2]) for batch in loader) == len(dataset)
    dm = WordImageDataModule(predict_split="val", images_per_char=2, samples_per_word=1)
    _, y, index = next(iter(dm.predict_dataloader()))
    assert torch.equal(y, dm.val_set.labels[index])


def test_other_lengths_with_a_word_list(tmp_path):
    path = _write_words(tmp_path / "w4.txt", ["that", "this", "than", "then", "them", "thin"])
    dm = WordImageDataModule(n_chars=4, word_list=str(path), letters_per_position=2)
    dm.setup()
    assert dm.train_set.images.shape[1:] == (1, 28, 112)
    assert dm.model_hints() == {"input_shape": (1, 28, 112)}
    assert all(w in {"that", "this", "than", "then", "them", "thin"} for w in dm.train_words)
    one = WordImageDataModule(n_chars=1, alphabet="xyz", split="random", train_fraction=0.4)
    one.setup()
    assert one.input_shape == (1, 28, 28) and len(one.train_words) == 1


# ------------------------------------------------------------------ MNIST


def test_mnist_digits_are_real_mnist_images(datasets_dir):
    raw = datasets_dir / "MNIST" / "raw"
    if not (raw / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST test files not found in {raw}")
    images = read_idx(raw / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    digit_of = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    dm = WordImageDataModule(
        source="mnist", data_dir=str(datasets_dir), n_chars=2, samples_per_word=3
    )
    dm.check_files()
    dm.setup()
    has_train = (raw / "train-images-idx3-ubyte.gz").is_file() or (
        raw / "train-images-idx3-ubyte"
    ).is_file()
    assert dm.source_split == ("train" if has_train else "test")
    assert dm.alphabets == ["0123456789"] * 2
    assert len(dm.train_words) == 50 and len(dm.val_words) == 10 and len(dm.test_words) == 40
    if has_train:
        return  # the pixels below are checked against the test images only
    for dataset in _split_sets(dm).values():
        tiles = _tiles(dataset.images, 2)
        for n in range(len(dataset)):
            for k in range(2):
                u8 = np.rint(tiles[n, k] * 255).astype(np.uint8)
                assert np.array_equal(u8.astype(np.float32) / 255, tiles[n, k])
                assert digit_of[u8.tobytes()] == int(dataset.words[n][k])
    assert all(len(v) == 20 for v in dm.char_images.values())


def test_mnist_images_per_char_none_uses_all_images_of_a_digit(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    dm = WordImageDataModule(
        source="mnist", data_dir=str(tmp_path), n_chars=2, images_per_char=None
    )
    dm.setup()
    assert [len(dm.char_images[str(d)]) for d in range(10)] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    with pytest.raises(ValueError, match=r"images_per_char=4 exceeds the 3 images of '0'"):
        WordImageDataModule(source="mnist", data_dir=str(tmp_path), images_per_char=4).setup()


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST not found: .*no such folder"):
        WordImageDataModule(source="mnist", data_dir=str(tmp_path / "none")).check_files()
    with pytest.raises(ValueError, match=r"alphabet: unknown character 'a' at position 1"):
        WordImageDataModule(source="mnist", alphabet=["01", "0a"], n_chars=2)
    # model hints need no file
    dm = WordImageDataModule(source="mnist", data_dir=str(tmp_path / "none"), n_chars=4)
    assert dm.model_hints() == {"input_shape": (1, 28, 112)}


# ------------------------------------------------------------------ EMNIST


def _make_emnist(root: Path, split: str, per_letter: int, seed: int) -> np.ndarray:
    """Write EMNIST letters files (torchvision's raw layout); return the upright images."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(1, 27, dtype=np.uint8), per_letter)
    upright = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    upright[:, :, :14] //= 4  # dark left half: transposing shows
    prefix = f"emnist-letters-{split}"
    write_idx(raw / f"{prefix}-images-idx3-ubyte", upright.transpose(0, 2, 1))  # stored transposed
    write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return upright


def test_emnist_letters_are_read_upright(tmp_path):
    upright = _make_emnist(tmp_path, "train", per_letter=3, seed=0)
    _make_emnist(tmp_path, "test", per_letter=2, seed=1)
    dm = WordImageDataModule(source="emnist", data_dir=str(tmp_path), images_per_char=2)
    dm.check_files()
    dm.setup()
    assert dm.source_split == "train"
    owner = {img.tobytes(): chr(ord("a") + i // 3) for i, img in enumerate(upright)}
    for char, imgs in dm.char_images.items():
        for img in imgs.numpy():
            u8 = np.rint(img * 255).astype(np.uint8)
            assert owner[u8.tobytes()] == char
            assert u8[:, :14].mean() < u8[:, 14:].mean()  # upright: the dark half is the left
    tiles = _tiles(dm.test_set.images, 3)
    for n in range(len(dm.test_set)):
        for k in range(3):
            u8 = np.rint(tiles[n, k] * 255).astype(np.uint8)
            assert owner[u8.tobytes()] == dm.test_set.words[n][k]


def test_emnist_test_split_when_train_is_absent(tmp_path):
    upright = _make_emnist(tmp_path, "test", per_letter=2, seed=1)
    dm = WordImageDataModule(source="emnist", data_dir=str(tmp_path), images_per_char=None)
    dm.setup()
    assert dm.source_split == "test"
    assert torch.equal(dm.char_images["b"], torch.from_numpy(upright[2:4].astype(np.float32) / 255))


def test_emnist_missing_folder_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    dm = WordImageDataModule(source="emnist", data_dir=str(missing))
    assert dm.model_hints() == {"input_shape": (1, 28, 84)}  # reads nothing
    pattern = r"EMNIST letters not found: '.*nowhere/EMNIST/raw' \(no such folder\).*"
    pattern += r"emnist-letters-train-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError, match=pattern):
        dm.check_files()
    with pytest.raises(FileNotFoundError, match=pattern):
        dm.setup()
    raw = tmp_path / "gz" / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "emnist-letters-test-images-idx3-ubyte.gz", np.zeros((1, 28, 28)))
    with pytest.raises(FileNotFoundError, match=r"it lacks them; .*test-images-idx3-ubyte are th"):
        WordImageDataModule(source="emnist", data_dir=str(tmp_path / "gz")).check_files()


def test_emnist_downloads_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeEMNIST:
        def __init__(self, root, split, train, download):
            calls.append((root, split, train, download))

    monkeypatch.setattr(torchvision.datasets, "EMNIST", FakeEMNIST)
    missing = str(tmp_path / "empty")
    WordImageDataModule(source="emnist", data_dir=missing).prepare_data()
    assert calls == []  # the default never downloads
    asked = WordImageDataModule(source="emnist", data_dir=missing, download=True)
    asked.check_files()  # no file check before the download
    asked.prepare_data()
    assert calls == [(missing, "letters", True, True)]


def test_emnist_rejects_digits_and_upper_case():
    with pytest.raises(ValueError, match=r"unknown character '1' at position 2: .*emnist"):
        WordImageDataModule(source="emnist", alphabet=["ab", "cd", "e1"])
    with pytest.raises(ValueError, match=r"unknown character 'A' at position 0"):
        WordImageDataModule(source="emnist", alphabet="Ab")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_chars": 0}, r"n_chars must be an integer >= 1, got 0"),
        ({"letters_per_position": 0}, r"letters_per_position must be an integer >= 1"),
        ({"train_fraction": 0.0}, r"train_fraction must lie strictly between 0 and 1"),
        ({"train_fraction": 1.5}, r"train_fraction must lie strictly between 0 and 1"),
        ({"val_fraction": 1.0}, r"val_fraction must lie strictly between 0 and 1"),
        ({"noise_std": -0.1}, r"noise_std must be a finite number >= 0"),
        ({"source": "svhn"}, r"source must be one of \['font', 'mnist', 'emnist'\]"),
        ({"split": "letters"}, r"split must be one of \['words', 'random'\]"),
        ({"predict_split": "dev"}, r"predict_split must be one of"),
        ({"samples_per_word": 0}, r"samples_per_word must be an integer >= 1"),
        ({"images_per_char": None}, r"images_per_char must be an integer >= 1 for source='font'"),
        ({"alphabet": "abé"}, r"alphabet: unknown character 'é' at position 0: source='font'"),
        ({"alphabet": ["ab", "c d", "e"]}, r"unknown character ' ' at position 1"),
        ({"alphabet": ["ab", "cd"]}, r"alphabet must be a string or a list of n_chars=3"),
        ({"alphabet": "aba"}, r"alphabet: position 0 \('aba'\) lists 'a' more than once"),
        ({"alphabet": ["ab", "", "c"]}, r"alphabet: the alphabet of position 1 is empty"),
        ({"n_chars": 4}, r"word_list is needed for n_chars=4"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WordImageDataModule(**kwargs)


def test_word_list_errors(tmp_path):
    missing = tmp_path / "no_such_words.txt"
    dm = WordImageDataModule(word_list=str(missing))
    with pytest.raises(FileNotFoundError, match=r"word_list file not found: .*no_such_words\.txt"):
        dm.check_files()
    with pytest.raises(FileNotFoundError, match=r"no_such_words\.txt"):
        dm.setup()
    empty = _write_words(tmp_path / "long_words.txt", ["apple", "table", "# the"])
    dm = WordImageDataModule(word_list=str(empty))
    with pytest.raises(ValueError, match=r"word_list '.*long_words\.txt' holds no word of n_chars"):
        dm.check_files()
    with pytest.raises(ValueError, match=r"long_words\.txt' holds no word"):
        dm.setup()
    # a non-ASCII letter that the default alphabets pick up
    accents = _write_words(tmp_path / "accents.txt", ["été", "été", "ami"])
    pattern = r"default alphabets .* \(from .*accents\.txt\): unknown character 'é' at position 0"
    with pytest.raises(ValueError, match=pattern):
        WordImageDataModule(word_list=str(accents)).check_files()


def test_words_split_errors(tmp_path):
    dm = WordImageDataModule(alphabet="xq")
    with pytest.raises(ValueError, match=r"split='words': none of the 8 combinations .*words_3"):
        dm.check_files()
    every = _write_words(tmp_path / "all.txt", ["".join(p) for p in itertools.product("ab", "ab")])
    dm = WordImageDataModule(n_chars=2, alphabet="ab", word_list=str(every))
    with pytest.raises(ValueError, match=r"all 4 combinations .* no non-word is left"):
        dm.setup()
    assert not dm._is_setup and not hasattr(dm, "train_set")  # a failed setup sets nothing
    with pytest.raises(ValueError, match=r"train_fraction=0.1 of the 4 combinations .* leaves no"):
        WordImageDataModule(n_chars=2, alphabet="ab", split="random", train_fraction=0.1).setup()
    # words split with digit alphabets is a random split; the word list is never read
    dm = WordImageDataModule(alphabet="01", n_chars=3, word_list=str(tmp_path / "absent.txt"))
    dm.setup()
    assert len(dm.train_words) == 4
