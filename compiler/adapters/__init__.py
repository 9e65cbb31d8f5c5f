"""Adapters: fine-tuning specs that rewrite the graph, adding trainable parameters and the ops
that use them (LoRA/DoRA, SSF, (IA)³, PockEngine's partial-channel updates), and their export
to Hugging Face PEFT's files and merged weights. `edgetune.peft` re-exports the specs.

    base.py      targets -> layers, emitting next to a layer, the dropout counter
    lora.py      LoRA + DoRA, kaiming/gaussian/PiSSA/OLoRA inits
    export.py    export recipes, PEFT/edgetune adapter files, merged state_dicts
"""

from .lora import LoRA

__all__ = ["LoRA"]
