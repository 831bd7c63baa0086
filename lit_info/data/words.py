"""Images of short words, one character image per position, as a LightningDataModule.

The word-image benchmark of MinSyn (Ver Steeg et al., "Disentangled representations via
synergy minimization", arXiv 1710.03839): an image shows a word of ``n_chars`` characters side
by side, every character a 28 x 28 image, so an image is ``1 x 28 x (28 * n_chars)``, float32
in [0, 1] (ink high, background 0) before the optional noise. A model is trained on the images
of *real words* and evaluated on *non-words* made of the same characters: a representation that
has disentangled the positions reads the characters of a non-word as well as those of a word.

Character sources (``source``):

* ``font`` (default; needs no file): glyphs of Pillow's embedded default font
  (``PIL.ImageFont.load_default``, FreeType, Pillow >= 10.1), the ASCII letters and digits.
  Every character gets ``images_per_char`` *variants*, each rendered with a random stroke width
  and a random affine jitter (rotation, scale, shift), as different writers would; see
  :func:`render_font_glyphs`. Rendering is supersampled 4x and box-filtered down to 28 x 28.
  Glyphs keep their place relative to a common baseline (so ``o`` and ``O`` stay distinct).
* ``mnist``: handwritten digits from the MNIST IDX files in torchvision's layout
  (``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, plain or ``.gz``),
  read by the validating reader of :mod:`lit_info.data.images`. The training files are used
  when both are present, else the test files (e.g. a folder that holds only ``t10k-*``).
  ``images_per_char`` images of every digit are drawn at random (None = all of them). The
  "words" are numbers.
* ``emnist``: handwritten letters of EMNIST's ``letters`` split (labels 1..26 for a..z, upper
  and lower case merged), read through ``torchvision.datasets.EMNIST(root=data_dir,
  split="letters", download=False)`` from ``<data_dir>/EMNIST/raw/emnist-letters-{train,test}-
  {images-idx3,labels-idx1}-ubyte`` (uncompressed, as torchvision extracts them; the training
  pair when present, else the test pair). Nothing is downloaded unless ``download=True``.
  EMNIST stores its images transposed; they are transposed back upright.

Alphabets. ``alphabet=None`` means, for letters (``font``, ``emnist``), the
``letters_per_position`` most common letters at each position among the words of the word list
(ties broken alphabetically), each alphabet sorted: with the shipped list of 3-letter words and
8 letters per position the 8^3 = 512 combinations of the paper's benchmark. For ``mnist`` it
means ``"0123456789"`` at every position. A string gives the same alphabet at every position,
a list of ``n_chars`` strings one alphabet per position (their order defines the labels).

The word list (``word_list``) is a text file, one word per line (blank lines and lines starting
with ``#`` ignored, repeated words counted once); the first ``max_words`` words of exactly
``n_chars`` characters are used. ``resources/words_3.txt`` (300 frequent English 3-letter
words, most frequent first) ships with the package and is the default for ``n_chars=3``.

The split is a split of *combinations* (strings of the product of the alphabets), never of
images, so no combination is seen in two splits:

* ``split="words"`` (the default): the combinations that are words of the list are the
  training set; the others, the non-words, are held out. When every alphabet consists of
  digits (``mnist``, or a digit alphabet for ``font``), all combinations are numbers, so
  "words" cannot separate them: the training set is then a fixed random subset, a fraction
  ``train_fraction`` of the combinations drawn with ``split_seed`` (the word list is not read).
* ``split="random"``: a random fraction ``train_fraction`` of the combinations (drawn with
  ``split_seed``) for training, whatever the source.

The held-out combinations are divided, again with ``split_seed``, into validation (a fraction
``val_fraction`` of them, rounded) and test (the rest). So train, validation and test are
disjoint and together hold every combination.

Samples. Every combination of a split gets ``samples_per_word`` (training) or
``eval_samples_per_word`` (validation, test) images; for each sample and each position one of
that character's images is picked uniformly at random. The same character images serve all
positions and all splits (the benchmark asks for new *combinations*, not new glyphs).
``noise_std`` adds Gaussian noise of that standard deviation to every pixel, drawn once at
setup (not clipped, so the noise keeps its standard deviation), so the data set is fixed.
Randomness comes from independent numpy streams of ``seed`` (character images, picks, noise,
per split) and ``split_seed`` (the split): equal arguments give identical tensors.

Items are ``(image (1, 28, 28 * n_chars) float32, labels (n_chars,) int64, index)``, ``labels``
holding the index of each character in its position's alphabet and ``index`` the item's
position in its split (as every lit_info data set). Everything is held in memory, about
``3 KiB * n_chars`` per sample.

Errors name the argument or the file: invalid plain arguments raise :class:`ValueError` in
``__init__`` (which reads no file); a missing word list or data folder raises
:class:`FileNotFoundError`, and an unknown character, an empty word list or a split that leaves
a set empty raise :class:`ValueError`, from :meth:`WordImageDataModule.check_files` (which the
CLI calls before anything is written) as from ``setup``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_info.data.images import DATASET_INFO, _read_mnist_split, expected_files

__all__ = [
    "DEFAULT_WORD_LIST",
    "FONT_CHARACTERS",
    "PREDICT_SPLITS",
    "SOURCES",
    "SPLITS",
    "TILE",
    "WordImageDataModule",
    "WordImageDataset",
    "default_alphabets",
    "read_word_list",
    "render_font_glyphs",
]

#: Names accepted for ``WordImageDataModule(source=...)``.
SOURCES: tuple[str, ...] = ("font", "mnist", "emnist")

#: Names accepted for ``WordImageDataModule(split=...)``.
SPLITS: tuple[str, ...] = ("words", "random")

#: Names accepted for ``WordImageDataModule(predict_split=...)``.
PREDICT_SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Side of one character image, in pixels.
TILE = 28

#: Characters the ``font`` source renders.
FONT_CHARACTERS = string.ascii_letters + string.digits

#: The shipped word list: 300 frequent English 3-letter words.
DEFAULT_WORD_LIST = Path(__file__).resolve().parent / "resources" / "words_3.txt"

# Characters per source and how to describe them in an error.
_SOURCE_CHARACTERS: dict[str, tuple[str, str]] = {
    "font": (FONT_CHARACTERS, "an ASCII letter or digit (the font source renders a-z, A-Z, 0-9)"),
    "mnist": (string.digits, "a digit (MNIST has the digits 0-9)"),
    "emnist": (
        string.ascii_lowercase,
        "a lower-case letter (EMNIST letters has the classes a-z, upper and lower case merged)",
    ),
}

# Font rendering: size at 28 px, supersampling factor, and the writer variation.
_FONT_SIZE = 22
_SUPERSAMPLE = 4
_MAX_ROTATION_DEG = 12.0
_SCALE_RANGE = (0.85, 1.1)
_MAX_SHIFT_PX = 2.0
_MAX_STROKE = 2  # in supersampled pixels: an outline of 0 .. 0.5 px at 28 x 28

# Independent random streams of ``seed``.
_STREAM_CHARS = 0
_STREAM_PICKS = 1
_STREAM_NOISE = 2

# EMNIST file names (torchvision's raw layout).
_EMNIST_PREFIX = {"train": "emnist-letters-train", "test": "emnist-letters-test"}
_EMNIST_LEGACY = ("training_letters.pt", "test_letters.pt")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Word lists and alphabets
# --------------------------------------------------------------------------------------------


def read_word_list(
    path: str | os.PathLike[str], n_chars: int, max_words: int | None = None
) -> list[str]:
    """Read the words of ``n_chars`` characters from a word list, in file order.

    One word per line; surrounding white space is stripped, blank lines and lines starting
    with ``#`` are skipped, and a repeated word is kept once (at its first line). Words of
    another length are skipped.

    Args:
        path: The text file.
        n_chars: Length of the words to keep.
        max_words: Keep only the first this many words (None = all).

    Returns:
        The words (possibly empty).

    Raises:
        FileNotFoundError: If the file does not exist (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word_list file not found: {str(path)!r}")
    words: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if not word or word.startswith("#") or len(word) != n_chars:
            continue
        words.setdefault(word, None)
        if max_words is not None and len(words) >= max_words:
            break
    return list(words)


def default_alphabets(words: Sequence[str], n_chars: int, letters_per_position: int) -> list[str]:
    """The most common characters at each position of a list of words.

    Args:
        words: Words of ``n_chars`` characters.
        n_chars: Number of positions.
        letters_per_position: Characters kept per position (fewer where fewer occur).

    Returns:
        ``n_chars`` strings, each the ``letters_per_position`` most frequent characters at that
        position (ties broken in alphabetical order), sorted.
    """
    alphabets = []
    for k in range(n_chars):
        counts = Counter(word[k] for word in words)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        alphabets.append("".join(sorted(char for char, _ in ranked[:letters_per_position])))
    return alphabets


def _check_characters(alphabets: Sequence[str], source: str, origin: str) -> None:
    """Raise a ValueError naming the first character (and position) the source lacks."""
    allowed, description = _SOURCE_CHARACTERS[source]
    for k, alphabet in enumerate(alphabets):
        for char in alphabet:
            if char not in allowed:
                raise ValueError(
                    f"{origin}: unknown character {char!r} at position {k}: source={source!r} "
                    f"needs {description}"
                )


def _alphabet_list(alphabet: str | Sequence[str], n_chars: int) -> list[str]:
    """Validate an explicit ``alphabet`` argument; return one string per position."""
    if isinstance(alphabet, str):
        alphabets = [alphabet] * n_chars
    elif isinstance(alphabet, Sequence) and all(isinstance(a, str) for a in alphabet):
        alphabets = list(alphabet)
        if len(alphabets) != n_chars:
            raise ValueError(
                f"alphabet must be a string or a list of n_chars={n_chars} strings, got a list "
                f"of {len(alphabets)}"
            )
    else:
        raise ValueError(
            f"alphabet must be None, a string or a list of {n_chars} strings, got {alphabet!r}"
        )
    for k, chars in enumerate(alphabets):
        if not chars:
            raise ValueError(f"alphabet: the alphabet of position {k} is empty")
        repeated = sorted({c for c in chars if chars.count(c) > 1})
        if repeated:
            raise ValueError(
                f"alphabet: position {k} ({chars!r}) lists {', '.join(map(repr, repeated))} more "
                "than once; give each character once"
            )
    return alphabets


# --------------------------------------------------------------------------------------------
# Character images
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _font(size: int) -> Any:
    from PIL import ImageFont, features

    if not features.check("freetype2"):
        raise RuntimeError(
            "source='font' needs Pillow built with FreeType (PIL.features.check('freetype2') is "
            "False); install a Pillow wheel from PyPI or use source 'mnist' or 'emnist'"
        )
    return ImageFont.load_default(size=size)


def render_font_glyphs(char: str, count: int, rng: np.random.Generator | int) -> np.ndarray:
    """Render ``count`` jittered 28 x 28 images of one character of Pillow's default font.

    Each variant draws, independently: a stroke width (an outline of 0 to 0.5 px added to the
    glyph), a rotation in [-12, 12] degrees, a scale in [0.85, 1.1] and a shift of up to 2 px
    in each direction. The glyph is centred horizontally on its bounding box and vertically on
    a common baseline, drawn at 4x resolution, transformed (bilinear) and box-filtered to
    28 x 28.

    Args:
        char: One character of :data:`FONT_CHARACTERS`.
        count: Number of variants.
        rng: Random generator, or a seed for one.

    Returns:
        ``(count, 28, 28)`` float32 array in [0, 1], ink high.

    Raises:
        ValueError: If ``char`` is not one character of :data:`FONT_CHARACTERS`.
    """
    from PIL import Image, ImageDraw

    if len(char) != 1 or char not in FONT_CHARACTERS:
        raise ValueError(f"render_font_glyphs: {char!r} is not an ASCII letter or digit")
    gen = np.random.default_rng(rng)
    font = _font(_FONT_SIZE * _SUPERSAMPLE)
    n = TILE * _SUPERSAMPLE
    centre = n / 2
    # Baseline below the centre: centres the span from the ascenders to the descenders.
    _, top, _, bottom = font.getbbox("Hdlgy", anchor="ls")
    baseline = -(top + bottom) / 2
    out = np.empty((count, TILE, TILE), dtype=np.float32)
    for i in range(count):
        stroke = int(gen.integers(0, _MAX_STROKE + 1))
        angle = math.radians(gen.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
        scale = gen.uniform(*_SCALE_RANGE)
        tx, ty = gen.uniform(-_MAX_SHIFT_PX, _MAX_SHIFT_PX, size=2) * _SUPERSAMPLE
        canvas = Image.new("L", (n, n), 0)
        draw = ImageDraw.Draw(canvas)
        left, _, right, _ = draw.textbbox((0, 0), char, font=font, anchor="ls", stroke_width=stroke)
        origin = (centre - (left + right) / 2, centre + baseline)
        draw.text(origin, char, fill=255, font=font, anchor="ls", stroke_width=stroke)
        # Inverse map (output -> input) of: rotate by angle and scale about the centre, shift.
        a = math.cos(angle) / scale
        b = math.sin(angle) / scale
        cx, cy = centre + tx, centre + ty
        coeffs = (a, b, centre - a * cx - b * cy, -b, a, centre + b * cx - a * cy)
        warped = canvas.transform((n, n), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        out[i] = np.asarray(warped.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0
    return out


def _pick(n_available: int, count: int | None, seed: int, char: str, what: str) -> np.ndarray:
    """Sorted indices of ``count`` of ``n_available`` images of one character (None = all)."""
    if count is None:
        return np.arange(n_available)
    if count > n_available:
        raise ValueError(
            f"images_per_char={count} exceeds the {n_available} images of {char!r} in {what}"
        )
    rng = np.random.default_rng([seed, _STREAM_CHARS, ord(char)])
    return np.sort(rng.choice(n_available, size=count, replace=False))


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class WordImageDataset(Dataset):
    """In-memory word images; items are ``(image, labels, index)``.

    Args:
        images: ``(N, 1, H, W)`` float32 images.
        labels: ``(N, n_chars)`` int64 index of each character in its position's alphabet.
        words: The word (combination) of every sample.
        char_indices: ``(N, n_chars)`` int64: which image of its character each tile shows
            (a row index into the module's ``char_images[char]``).

    Raises:
        ValueError: If the lengths disagree.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        words: list[str],
        char_indices: torch.Tensor,
    ) -> None:
        n = images.shape[0]
        if labels.shape[0] != n or len(words) != n or char_indices.shape != labels.shape:
            raise ValueError(
                f"images ({n}), labels {tuple(labels.shape)}, words ({len(words)}) and "
                f"char_indices {tuple(char_indices.shape)} disagree in length"
            )
        self.images = images
        self.labels = labels
        self.words = words
        self.char_indices = char_indices

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Return ``(image (1, H, W), labels (n_chars,), index)``."""
        return self.images[index], self.labels[index], int(index)


# --------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------


class WordImageDataModule(pl.LightningDataModule):
    """Images of words, a character image per position (the MinSyn word benchmark).

    Items are ``(image (1, 28, 28 * n_chars), labels (n_chars,), index)``; see the module
    docstring for the sources, the alphabets, the split of combinations and the sampling.

    Args:
        source: font (glyphs of Pillow's default font, no files), mnist (MNIST digits from
            data_dir) or emnist (EMNIST letters from data_dir, never downloaded).
        n_chars: Characters per word.
        alphabet: Characters per position: a string (every position), a list of n_chars
            strings, or unset = the letters_per_position most common letters per position of
            the word list (font, emnist) or 0123456789 (mnist).
        letters_per_position: Letters per position of the default alphabets.
        word_list: Text file of words, one per line (# starts a comment line); unset = the
            shipped list of 300 frequent English 3-letter words (n_chars 3 only). A relative
            path that does not exist from the working directory is looked up under data_dir.
        max_words: Use the first this many words of n_chars characters of the list; unset =
            all.
        split: words (train on the combinations that are words, hold out the non-words; a
            random subset for digit alphabets, where every combination is a number) or random
            (a random train_fraction of the combinations).
        train_fraction: Fraction of the combinations used for training by a random split.
        val_fraction: Fraction of the held-out combinations used for validation; the rest
            is the test set.
        images_per_char: Images per character: variants rendered (font) or images drawn at
            random (mnist, emnist; unset = all of them).
        samples_per_word: Training images per combination.
        eval_samples_per_word: Validation and test images per combination.
        noise_std: Standard deviation of the additive Gaussian pixel noise (fixed per sample).
        seed: Seed of the character images, of the samples, of the noise and of the shuffling
            of training batches.
        split_seed: Seed of the random splits of combinations.
        data_dir: Folder above MNIST/ or EMNIST/; unset = the LIT_INFO_DATA environment
            variable, else ./data.
        download: emnist only: let torchvision download EMNIST into data_dir (in
            ``prepare_data``) when its files are missing. Off by default: nothing is ever
            downloaded unless asked.
        batch_size: Batch size of every loader.
        num_workers: Data-loading worker processes; 0 = load in the main process.
        predict_split: Split served by predict: train, val or test.

    Attributes (after :meth:`setup`):
        alphabets: The alphabet of every position.
        train_words: Sorted training combinations (likewise ``val_words``, ``test_words``).
        train_set: :class:`WordImageDataset` of the training split (likewise ``val_set``,
            ``test_set``).
        char_images: ``{char: (n, 28, 28) float32 tensor}``, the images of every character.
        source_split: The split of the image files read (``"train"`` or ``"test"``; None for
            the font).

    Raises:
        ValueError: On any invalid argument (the message names it).
    """

    def __init__(
        self,
        source: Literal["font", "mnist", "emnist"] = "font",
        n_chars: int = 3,
        alphabet: str | list[str] | None = None,
        letters_per_position: int = 8,
        word_list: str | None = None,
        max_words: int | None = 300,
        split: Literal["words", "random"] = "words",
        train_fraction: float = 0.5,
        val_fraction: float = 0.2,
        images_per_char: int | None = 20,
        samples_per_word: int = 20,
        eval_samples_per_word: int = 5,
        noise_std: float = 0.0,
        seed: int = 0,
        split_seed: int = 0,
        data_dir: str | None = None,
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        predict_split: Literal["train", "val", "test"] = "test",
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(
                f"predict_split must be one of {list(PREDICT_SPLITS)}, got {predict_split!r}"
            )
        for name, value, low in (
            ("n_chars", n_chars, 1),
            ("letters_per_position", letters_per_position, 1),
            ("samples_per_word", samples_per_word, 1),
            ("eval_samples_per_word", eval_samples_per_word, 1),
            ("seed", seed, 0),
            ("split_seed", split_seed, 0),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("max_words", max_words), ("images_per_char", images_per_char)):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
        if images_per_char is None and source == "font":
            raise ValueError(
                "images_per_char must be an integer >= 1 for source='font' (the number of "
                "variants rendered per character); None (all images) needs mnist or emnist"
            )
        for name, value in (("train_fraction", train_fraction), ("val_fraction", val_fraction)):
            if not _is_number(value) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
        if not _is_number(noise_std) or not 0.0 <= float(noise_std) < math.inf:
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        alphabets = None if alphabet is None else _alphabet_list(alphabet, n_chars)
        if alphabets is not None:
            _check_characters(alphabets, source, "alphabet")
        # All-digit alphabets: every combination is a number, the word list is not used.
        digits = (source == "mnist") if alphabets is None else all(a.isdigit() for a in alphabets)
        needs_words = not digits and (alphabets is None or split == "words")
        if needs_words and word_list is None and n_chars != 3:
            why = "the default alphabets" if alphabets is None else "split='words'"
            raise ValueError(
                f"word_list is needed for n_chars={n_chars} ({why} come from the words; the "
                "shipped list has 3-letter words only): give a file of words, one per line"
            )

        self.save_hyperparameters()
        self.source = source
        self.n_chars = int(n_chars)
        self._alphabet_arg = alphabets
        self.letters_per_position = int(letters_per_position)
        self.word_list = None if word_list is None else Path(word_list)
        self.max_words = max_words
        self.split = split
        self.train_fraction = float(train_fraction)
        self.val_fraction = float(val_fraction)
        self.images_per_char = images_per_char
        self.samples_per_word = int(samples_per_word)
        self.eval_samples_per_word = int(eval_samples_per_word)
        self.noise_std = float(noise_std)
        self.seed = int(seed)
        self.split_seed = int(split_seed)
        self.data_dir = Path(data_dir or os.environ.get("LIT_INFO_DATA", "./data"))
        self.download = bool(download)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.predict_split = predict_split
        self._digits = digits
        self._needs_words = needs_words
        self.input_shape: tuple[int, int, int] = (1, TILE, TILE * self.n_chars)
        self.num_features: int = TILE * TILE * self.n_chars
        self._is_setup = False

    # ---------------------------------------------------------------- plan

    def _word_list_path(self) -> Path:
        if self.word_list is None:
            return DEFAULT_WORD_LIST
        path = self.word_list
        if not path.is_absolute() and not path.exists() and (self.data_dir / path).exists():
            path = self.data_dir / path
        return path

    def _words(self) -> tuple[list[str], Path]:
        path = self._word_list_path()
        words = read_word_list(path, self.n_chars, self.max_words)
        if not words:
            raise ValueError(
                f"word_list {str(path)!r} holds no word of n_chars={self.n_chars} characters "
                "(one word per line; lines starting with # are comments)"
            )
        return words, path

    def _plan(self) -> tuple[list[str], dict[str, list[str]]]:
        """Alphabets and the combinations of every split, from the arguments and the word list.

        Raises:
            FileNotFoundError: If the word list is missing.
            ValueError: If it is empty, a character is unknown, or a split would be empty.
        """
        words: list[str] = []
        path = None
        if self._needs_words:
            words, path = self._words()
        if self._alphabet_arg is not None:
            alphabets = list(self._alphabet_arg)
        elif self._digits:
            alphabets = [string.digits] * self.n_chars
        else:
            alphabets = default_alphabets(words, self.n_chars, self.letters_per_position)
            _check_characters(
                alphabets, self.source, f"the default alphabets {alphabets} (from {path})"
            )
        combos = sorted("".join(chars) for chars in itertools.product(*alphabets))
        rng = np.random.default_rng(self.split_seed)
        if self.split == "words" and not self._digits:
            word_set = set(words)
            train = [c for c in combos if c in word_set]
            held = [c for c in combos if c not in word_set]
            if not train:
                raise ValueError(
                    f"split='words': none of the {len(combos)} combinations of the alphabets "
                    f"{alphabets} is a word of {str(path)!r}; change alphabet or word_list, or "
                    "use split='random'"
                )
            if not held:
                raise ValueError(
                    f"split='words': all {len(combos)} combinations of the alphabets "
                    f"{alphabets} are words of {str(path)!r}, so no non-word is left for "
                    "validation and test; use larger alphabets or split='random'"
                )
        else:
            n_train = int(round(self.train_fraction * len(combos)))
            if not 0 < n_train < len(combos):
                raise ValueError(
                    f"train_fraction={self.train_fraction} of the {len(combos)} combinations of "
                    f"the alphabets {alphabets} leaves "
                    + ("no training combination" if n_train == 0 else "none held out")
                )
            chosen = np.zeros(len(combos), dtype=bool)
            chosen[rng.permutation(len(combos))[:n_train]] = True
            train = [c for c, keep in zip(combos, chosen, strict=True) if keep]
            held = [c for c, keep in zip(combos, chosen, strict=True) if not keep]
        n_val = int(round(self.val_fraction * len(held)))
        to_val = np.zeros(len(held), dtype=bool)
        to_val[rng.permutation(len(held))[:n_val]] = True
        val = [c for c, keep in zip(held, to_val, strict=True) if keep]
        test = [c for c, keep in zip(held, to_val, strict=True) if not keep]
        return alphabets, {"train": train, "val": val, "test": test}

    # ---------------------------------------------------------------- files

    def _emnist_raw(self) -> Path:
        return self.data_dir / "EMNIST" / "raw"

    def _emnist_split(self) -> str:
        """The EMNIST split read (train if both its files exist, else test).

        Raises:
            FileNotFoundError: Naming the folder and the expected files, if neither pair (nor
                torchvision's legacy ``processed/`` files) is there.
        """
        raw = self._emnist_raw()
        for split in ("train", "test"):
            prefix = _EMNIST_PREFIX[split]
            names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
            if all((raw / name).is_file() for name in names):
                return split
        processed = self.data_dir / "EMNIST" / "processed"
        if all((processed / name).is_file() for name in _EMNIST_LEGACY):
            return "train"
        raise FileNotFoundError(self._emnist_missing_message())

    def _emnist_missing_message(self) -> str:
        raw = self._emnist_raw()
        expected = [
            f"{_EMNIST_PREFIX[split]}-{kind}-ubyte"
            for split in ("train", "test")
            for kind in ("images-idx3", "labels-idx1")
        ]
        where = "no such folder" if not raw.is_dir() else "it lacks them"
        gz = [name for name in expected if (raw / f"{name}.gz").is_file()]
        hint = f"; {', '.join(gz)} are there compressed: gunzip them" if gz else ""
        return (
            f"EMNIST letters not found: {str(raw)!r} ({where}{hint}) must hold "
            f"{expected[0]} and {expected[1]}, or {expected[2]} and {expected[3]} (uncompressed, "
            "torchvision's EMNIST layout, extracted from NIST's gzip.zip). Set --data.data_dir to "
            f"the folder above EMNIST/ (now {str(self.data_dir)!r}); nothing is downloaded."
        )

    def _mnist_files(self) -> tuple[str, list[Path]]:
        """The MNIST split read (train if both its files exist, else test) and its files.

        Raises:
            FileNotFoundError: Naming the folder and the files, if neither pair is there.
        """
        files = expected_files("mnist", self.data_dir, resolve=True)
        for split in ("train", "test"):
            if all(p.is_file() for p in files[split]):
                return split, files[split]
        raw = self.data_dir / "MNIST" / "raw"
        where = "no such folder" if not raw.is_dir() else "it lacks them"
        names = [p.name for split in ("train", "test") for p in expected_files("mnist", ".")[split]]
        raise FileNotFoundError(
            f"MNIST not found: {str(raw)!r} ({where}) must hold {names[0]} and {names[1]}, or "
            f"{names[2]} and {names[3]} (each plain or .gz, torchvision's layout). Set "
            f"--data.data_dir to the folder above MNIST/ (now {str(self.data_dir)!r}; default: "
            "env LIT_INFO_DATA, else ./data)."
        )

    def check_files(self) -> None:
        """Fail early, before anything is written, with the errors :meth:`setup` would raise.

        Reads the word list (if one is needed), derives the alphabets and the split of the
        combinations, and checks the image files: MNIST files completely (streaming, nothing
        kept), EMNIST files for presence. Nothing is rendered or kept.

        Raises:
            FileNotFoundError: If the word list or the data files are missing.
            ValueError: If the word list is empty, a character is unknown, a split would be
                empty, or an MNIST file is damaged.
        """
        self._plan()
        if self.source == "mnist":
            _, files = self._mnist_files()
            _read_mnist_split(files, DATASET_INFO["mnist"], load_images=False)
        elif self.source == "emnist" and not self.download:
            self._emnist_split()

    def prepare_data(self) -> None:
        """Download EMNIST when asked (``download=True``) and its files are missing."""
        if self.source != "emnist" or not self.download:
            return
        try:
            self._emnist_split()
        except FileNotFoundError:
            from torchvision.datasets import EMNIST

            EMNIST(str(self.data_dir), split="letters", train=True, download=True)

    def model_hints(self) -> dict[str, Any]:
        """Return ``{"input_shape": (1, 28, 28 * n_chars)}`` (reads nothing)."""
        return {"input_shape": self.input_shape}

    # ---------------------------------------------------------------- setup

    def _char_images(self, chars: list[str]) -> tuple[dict[str, np.ndarray], str | None]:
        """Images of every character, ``{char: (n, 28, 28) float32}``, and the split read."""
        if self.source == "font":
            assert self.images_per_char is not None
            return {
                c: render_font_glyphs(
                    c,
                    self.images_per_char,
                    np.random.default_rng([self.seed, _STREAM_CHARS, ord(c)]),
                )
                for c in chars
            }, None
        if self.source == "mnist":
            split, files = self._mnist_files()
            images_t, labels_t = _read_mnist_split(files, DATASET_INFO["mnist"])
            assert images_t is not None
            images = images_t[:, 0].numpy()
            labels = labels_t.numpy()
            class_of = {c: int(c) for c in chars}
            what = f"the MNIST {split} files in {str(files[0].parent)!r}"
        else:
            split = self._emnist_split()
            images, labels = self._read_emnist(split)
            class_of = {c: ord(c) - ord("a") + 1 for c in chars}
            what = f"the EMNIST letters {split} files in {str(self._emnist_raw())!r}"
        out = {}
        for c in chars:
            rows = np.flatnonzero(labels == class_of[c])
            keep = rows[_pick(len(rows), self.images_per_char, self.seed, c, what)]
            out[c] = images[keep].astype(np.float32) / 255.0
        return out, split

    def _read_emnist(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """EMNIST letters of one split, upright: ``(uint8 (N, 28, 28), int64 (N,))``."""
        from torchvision.datasets import EMNIST

        try:
            ds = EMNIST(str(self.data_dir), split="letters", train=split == "train", download=False)
        except RuntimeError as err:
            if "not found" in str(err).lower():
                raise FileNotFoundError(self._emnist_missing_message()) from err
            raise
        data = ds.data.numpy()
        labels = ds.targets.numpy().astype(np.int64)
        if data.ndim != 3 or data.shape[1:] != (TILE, TILE):
            raise ValueError(
                f"EMNIST letters in {str(self._emnist_raw())!r}: images are "
                f"{tuple(data.shape[1:])}, expected (28, 28)"
            )
        return np.ascontiguousarray(data.transpose(0, 2, 1)), labels

    def _build(
        self,
        split_id: int,
        combos: list[str],
        alphabets: list[str],
        pools: list[np.ndarray],
        offsets: list[np.ndarray],
        counts: list[np.ndarray],
        per_word: int,
    ) -> WordImageDataset:
        """Draw the samples of one split (``per_word`` per combination, word by word)."""
        n_chars = self.n_chars
        n = len(combos) * per_word
        labels = np.array(
            [[alphabets[k].index(c[k]) for k in range(n_chars)] for c in combos], dtype=np.int64
        ).reshape(len(combos), n_chars)
        labels = np.repeat(labels, per_word, axis=0)
        picks = np.random.default_rng([self.seed, _STREAM_PICKS, split_id]).random((n, n_chars))
        images = np.empty((n, 1, TILE, TILE * n_chars), dtype=np.float32)
        char_indices = np.empty((n, n_chars), dtype=np.int64)
        for k in range(n_chars):
            lab = labels[:, k]
            within = np.minimum((picks[:, k] * counts[k][lab]).astype(np.int64), counts[k][lab] - 1)
            char_indices[:, k] = within
            images[:, 0, :, k * TILE : (k + 1) * TILE] = pools[k][offsets[k][lab] + within]
        if self.noise_std > 0:
            noise_rng = np.random.default_rng([self.seed, _STREAM_NOISE, split_id])
            images += self.noise_std * noise_rng.standard_normal(images.shape, dtype=np.float32)
        words = [c for c in combos for _ in range(per_word)]
        return WordImageDataset(
            torch.from_numpy(images),
            torch.from_numpy(labels),
            words,
            torch.from_numpy(char_indices),
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the alphabets, the split and the images of every split; idempotent.

        Args:
            stage: Lightning stage (ignored: all splits are built at once).

        Raises:
            FileNotFoundError: If the word list or the data files are missing.
            ValueError: If the word list is empty, a character is unknown, a split would be
                empty, or a data file is damaged.
        """
        if self._is_setup:
            return
        alphabets, splits = self._plan()
        chars = sorted(set("".join(alphabets)))
        char_images, source_split = self._char_images(chars)
        pools, offsets, counts = [], [], []
        for alphabet in alphabets:
            sizes = np.array([char_images[c].shape[0] for c in alphabet], dtype=np.int64)
            pools.append(np.concatenate([char_images[c] for c in alphabet]))
            offsets.append(np.concatenate([[0], np.cumsum(sizes)[:-1]]))
            counts.append(sizes)
        datasets = {
            split: self._build(
                split_id,
                splits[split],
                alphabets,
                pools,
                offsets,
                counts,
                self.samples_per_word if split == "train" else self.eval_samples_per_word,
            )
            for split_id, split in enumerate(PREDICT_SPLITS)
        }

        # Set all state at once (a failure above leaves the module untouched).
        self.alphabets: list[str] = alphabets
        self.train_words: list[str] = splits["train"]
        self.val_words: list[str] = splits["val"]
        self.test_words: list[str] = splits["test"]
        self.char_images: dict[str, torch.Tensor] = {
            c: torch.from_numpy(a) for c, a in char_images.items()
        }
        self.source_split: str | None = source_split
        self.train_set: WordImageDataset = datasets["train"]
        self.val_set: WordImageDataset = datasets["val"]
        self.test_set: WordImageDataset = datasets["test"]
        self._is_setup = True

    # ---------------------------------------------------------------- access

    def _require_setup(self) -> None:
        if not self._is_setup:
            self.setup()

    def _dataset(self, split: str, argument: str = "split") -> WordImageDataset:
        if split not in PREDICT_SPLITS:
            raise ValueError(f"{argument} must be one of {list(PREDICT_SPLITS)}, got {split!r}")
        self._require_setup()
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """One split as numpy arrays, for scikit-learn baselines (runs setup).

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``(x (N, H * W) float32, labels (N, n_chars) int64)``, in the split's order.

        Raises:
            ValueError: If ``split`` is unknown.
        """
        dataset = self._dataset(split)
        x = dataset.images.reshape(len(dataset), -1).numpy()
        return x, dataset.labels.numpy()

    # ---------------------------------------------------------------- loaders

    def _loader(self, dataset: WordImageDataset, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Training loader, shuffled (seeded by ``seed``).

        Under DDP Lightning replaces its sampler by a
        :class:`~torch.utils.data.DistributedSampler`, as usual.
        """
        self._require_setup()
        return self._loader(self.train_set, shuffle=True)

    def train_eval_dataloader(self) -> DataLoader:
        """Training split in order (unshuffled), e.g. to compute representations."""
        self._require_setup()
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """Validation loader (unshuffled); an empty list when the split holds no combination."""
        self._require_setup()
        return self._loader(self.val_set) if len(self.val_set) else []

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Test loader (unshuffled); an empty list when the split holds no combination."""
        self._require_setup()
        return self._loader(self.test_set) if len(self.test_set) else []

    def predict_dataloader(self) -> DataLoader:
        """Loader of the split chosen by ``predict_split`` (unshuffled), for ``trainer.predict``.

        Raises:
            ValueError: If that split holds no combination.
        """
        dataset = self._dataset(self.predict_split, "predict_split")
        if len(dataset) == 0:
            raise ValueError(
                f"predict_split={self.predict_split!r} selects an empty split (no combination "
                f"was assigned to it; see val_fraction)"
            )
        return self._loader(dataset)
