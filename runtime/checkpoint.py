"""Checkpoints of a Session: the Python side of the format `edgetune-train` writes.

The format is defined once, in csrc/tools/checkpoint.h: a .safetensors file with every weight
as "weights/<name>", every optimizer state (optim.lr, optim.step, moments, rng.counter) as
"state/<name>", and metadata {format: "edgetune.checkpoint", format_version: "1", plan_sha256,
model, steps, data_crc32, ...}. This module writes and reads exactly that, so a checkpoint from
`Session.save_checkpoint` resumes in `edgetune-train --resume` and the other way round (tests/
runtime/test_checkpoint.py runs both directions). Caller metadata is stored under "user.<key>".

data_crc32 is the CRC-32 (zlib.crc32) of the data section, i.e. of every tensor's bytes in file
order (the format requires the tensors to tile the data section exactly).
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np

from ..compiler.errors import InputError

FORMAT = "edgetune.checkpoint"
FORMAT_VERSION = "1"
WEIGHT_PREFIX, STATE_PREFIX, USER_PREFIX = "weights/", "state/", "user."
CORE_KEYS = ("format", "format_version", "plan_sha256", "model", "steps", "data_crc32")


def _data_section(blob: bytes) -> bytes:
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    return blob[8 + header_len:]


def encode(weights: dict, state: dict, *, plan_sha256: str, model: str, steps: int,
           metadata: dict | None = None) -> bytes:
    """The checkpoint file's bytes."""
    from safetensors.numpy import save
    # np.array(order="C"), not ascontiguousarray: that one turns a 0-d array (optim.lr) 1-d
    tensors = {WEIGHT_PREFIX + k: np.array(v, order="C") for k, v in weights.items()}
    tensors.update({STATE_PREFIX + k: np.array(v, order="C") for k, v in state.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "plan_sha256": plan_sha256, "model": model,
            "steps": str(int(steps)), "producer": "edgetune (Python)"}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(f"checkpoint metadata must map str to str, got {key!r}: {value!r}")
        meta[USER_PREFIX + key] = value
    # the CRC covers the data section, which does not depend on the metadata: write, measure, rewrite
    crc = zlib.crc32(_data_section(save(tensors, metadata=dict(meta, data_crc32="00000000"))))
    blob = save(tensors, metadata=dict(meta, data_crc32=f"{crc:08x}"))
    assert zlib.crc32(_data_section(blob)) == crc
    return blob


class Checkpoint:
    """A checkpoint file read and checked on its own (format, version, data CRC)."""

    def __init__(self, path):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"{path}: {'no such file' if not os.path.exists(path) else 'not a regular file'}")
        with open(path, "rb") as f:
            self._parse(f.read(), path)

    @classmethod
    def from_bytes(cls, blob: bytes, where: str = "checkpoint") -> "Checkpoint":
        self = cls.__new__(cls)
        self._parse(bytes(blob), where)
        return self

    def _parse(self, blob: bytes, path: str) -> None:
        from safetensors.numpy import load
        self.path = path
        try:
            (header_len,) = struct.unpack_from("<Q", blob, 0)
            header = json.loads(blob[8:8 + header_len])
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            self.tensors = load(blob)
        except Exception as e:  # struct, json and safetensors each raise their own error types
            raise InputError(f"{path}: not a readable safetensors file: {e}") from None
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise InputError(f"{path}: not a readable safetensors file: __metadata__ is not a map of strings")
        if meta.get("format") != FORMAT:
            raise InputError(f"{path}: not an edgetune checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: checkpoint format version {meta.get('format_version')!r}; this edgetune reads "
                             f"version {FORMAT_VERSION}")
        for key in ("plan_sha256", "steps", "data_crc32"):
            if key not in meta:
                raise InputError(f"{path}: checkpoint metadata has no '{key}'")
        crc = f"{zlib.crc32(_data_section(blob)):08x}"
        if crc != meta["data_crc32"]:
            raise InputError(f"{path}: checkpoint is damaged: its data CRC-32 is {crc}, the header says "
                             f"{meta['data_crc32']}")
        if not meta["steps"].isdigit() or len(meta["steps"]) > 18:
            raise InputError(f"{path}: checkpoint metadata 'steps' is not a step count: {meta['steps']!r}")
        self.metadata = meta
        self.steps = int(meta["steps"])
        self.plan_sha256 = meta["plan_sha256"]
        self.weights = {k[len(WEIGHT_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(WEIGHT_PREFIX)}
        self.state = {k[len(STATE_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(STATE_PREFIX)}
        stray = [k for k in self.tensors if not k.startswith((WEIGHT_PREFIX, STATE_PREFIX))]
        if stray:
            raise InputError(f"{path}: checkpoint tensor {stray[0]!r} is neither weights/ nor state/")

    @property
    def user_metadata(self) -> dict:
        """What the writer added: a Session's metadata (without "user."), edgetune-train's run.* keys."""
        return {(k[len(USER_PREFIX):] if k.startswith(USER_PREFIX) else k): v for k, v in self.metadata.items()
                if k not in CORE_KEYS and k != "producer"}
