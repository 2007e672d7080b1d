"""Fine-tuning CAS-IQA with TRL's SFT trainer (python -m finetune.sft)."""

import casiqa  # noqa: F401  (first: sets the CPU allocator's huge pages before torch loads)
