"""The CAS-IQA model: Qwen2.5-VL + MUST + metric heads, registered with the Auto classes."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from casiqa.model.config import MODEL_TYPE, CasIqaConfig, MustSettings
from casiqa.model.modeling import CasIqaForConditionalGeneration, CasIqaModel
from casiqa.model.processor import CasIqaProcessor


def _register() -> None:
    AutoConfig.register(MODEL_TYPE, CasIqaConfig, exist_ok=True)
    AutoModelForImageTextToText.register(CasIqaConfig, CasIqaForConditionalGeneration, exist_ok=True)
    # A new class gets no checkpoint key renaming of its own: reuse Qwen2.5-VL's, so that hub
    # checkpoints (visual.*, model.layers.*) load into model.visual / model.language_model.
    pairs = ((CasIqaForConditionalGeneration, "Qwen2_5_VLForConditionalGeneration"), (CasIqaModel, "Qwen2_5_VLModel"))
    for ours, theirs in pairs:
        mapping = get_checkpoint_conversion_mapping(theirs)
        if mapping is not None:
            register_checkpoint_conversion_mapping(ours.__name__, mapping, overwrite=True)


_register()

__all__ = ["CasIqaConfig", "CasIqaForConditionalGeneration", "CasIqaModel", "CasIqaProcessor", "MustSettings", "MODEL_TYPE"]
