"""Adapters: fine-tuning specs that rewrite the graph, adding trainable parameters and the ops
that use them (LoRA/DoRA, SSF, (IA)³, PockEngine's partial-channel updates), and their export
to Hugging Face PEFT's files and merged weights. `edgetune.peft` re-exports the specs.

    base.py      targets -> layers, emitting next to a layer, the dropout counter
    lora.py      LoRA + DoRA, kaiming/gaussian/PiSSA/OLoRA inits
    ssf.py       SSF: per-channel scale and shift after a layer
    ia3.py       (IA)³ as Hugging Face PEFT's IA3: output (or feedforward input) scaling
    channels.py  PockEngine's partial-channel update: only some output channels' weights train
    export.py    export recipes, PEFT/edgetune adapter files, merged state_dicts
"""

from .channels import Channels
from .ia3 import IA3
from .lora import LoRA
from .ssf import SSF

__all__ = ["LoRA", "SSF", "IA3", "Channels"]
