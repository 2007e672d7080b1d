"""Locations inside the repository, resolved from this file."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "cas-iqa-tiny"   # the shipped default model (trained by finetune.sft)
