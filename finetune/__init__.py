"""Fine-tuning CAS-IQA with TRL's SFT trainer (python -m finetune.sft)."""
