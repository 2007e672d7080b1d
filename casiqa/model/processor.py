"""The processor: Qwen2.5-VL's, built from the PIL image processor and our tokenizer.

Without torchvision, Qwen2_5_VLProcessor fails in its video-processor set-up (STACK-NOTES);
angiograms here are single frames, so this subclass has no video processor at all.
"""

from __future__ import annotations

from transformers import ProcessorMixin
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class CasIqaProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = "<|image_pad|>"
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def make_processor(tokenizer, image_size: int) -> CasIqaProcessor:
    """Images are resized to at most image_size^2 pixels (multiples of 28 px per side)."""
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=image_size * image_size)
    return CasIqaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)
