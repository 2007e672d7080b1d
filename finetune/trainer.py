"""SFTTrainer with CAS-IQA's loss and validation.

Loss = lm_loss_weight * LM loss on the answer + head_loss_weight * soft-label loss of the
metric heads (DeQA-Score) + findings_loss_weight * the findings heads' loss against the rows'
failure records (casiqa/model/findings.py; models with findings). For the first `head_warmup_steps` the language model is skipped
and only the vision encoder, MUST and heads learn: seeing comes before writing, and those
steps cost a fraction of a full one on CPU.
Evaluation reports SRCC/PLCC per metric of the heads' expected scores on the validation split.
"""

from __future__ import annotations

import numpy as np
import torch
from trl import SFTTrainer

from casiqa.metrics import METRICS
from casiqa.model.findings import findings_loss
from casiqa.model.levels import evidence_loss, expected_score, soft_label_loss
from casiqa.model.modeling import image_roles
from casiqa.stats import agreement


def unwrap(model):
    """The CasIqaForConditionalGeneration under PEFT / accelerate wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def image_heads(model, batch: dict):
    """MUST image outputs (level logits [B, M, L], routing, router logits) from images only, no LM."""
    base = unwrap(model)
    roles, samples = image_roles(batch["input_ids"], base.config)
    return base.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"], roles=roles, samples=samples,
                                         batch_size=batch["input_ids"].shape[0])


def head_logits(model, batch: dict) -> torch.Tensor:
    """Level logits [B, M, L] from images only."""
    return image_heads(model, batch).level_logits


class CasIqaSFTTrainer(SFTTrainer):
    def __init__(self, *args, head_loss_weight: float = 1.0, lm_loss_weight: float = 1.0, head_warmup_steps: int = 0,
                 evidence_loss_weight: float = 0.0, findings_loss_weight: float = 1.0, eval_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_loss_weight, self.lm_loss_weight = head_loss_weight, lm_loss_weight
        self.findings_loss_weight = findings_loss_weight
        self.evidence_loss_weight = evidence_loss_weight
        self.head_warmup_steps = head_warmup_steps
        self.eval_collator = eval_collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("level_targets")
        boxes = inputs.pop("evidence_targets", None)
        if not self.evidence_loss_weight:
            boxes = None
        found = inputs.pop("finding_targets", None)
        if not self.findings_loss_weight:
            found = None
        mode = "train" if model.training else "eval"
        if model.training and self.state.global_step < self.head_warmup_steps:
            feats = image_heads(model, inputs)
            head = soft_label_loss(feats.level_logits, targets)
            evidence = None if boxes is None else evidence_loss(feats.route_logits, boxes)
            findings = findings_loss(feats.finding_logits, found)
            lm, outputs = None, None
        else:
            inputs["use_cache"] = False
            outputs = model(**inputs, level_targets=targets, evidence_targets=boxes, finding_targets=found)
            head, evidence, lm = outputs.head_loss, outputs.evidence_loss, outputs.loss
            findings = outputs.findings_loss
        loss = self.head_loss_weight * head
        self._metrics[mode]["head_loss"].append(head.item())
        if lm is not None:
            loss = loss + self.lm_loss_weight * lm
            self._metrics[mode]["lm_loss"].append(lm.item())
        if evidence is not None:
            loss = loss + self.evidence_loss_weight * evidence
            self._metrics[mode]["evidence_loss"].append(evidence.item())
        if findings is not None:
            loss = loss + self.findings_loss_weight * findings
            self._metrics[mode]["findings_loss"].append(findings.item())
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Head agreement (SRCC/PLCC per metric) on the validation rows, logged and returned."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            return {}
        model = self.model
        was_training = model.training
        model.eval()
        preds, truth = [], []
        batch_size = self.args.per_device_eval_batch_size
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = self._prepare_inputs(self.eval_collator(rows))
                preds.append(expected_score(head_logits(model, batch)).float().cpu().numpy())
                truth.append(np.array([[float(r["scores"][m]["mos"]) for m in METRICS] for r in rows]))
        model.train(was_training)
        p, t = np.concatenate(preds), np.concatenate(truth)
        metrics = {}
        for j, m in enumerate(METRICS):
            a = agreement(p[:, j], t[:, j])
            metrics[f"{metric_key_prefix}_{m}_srcc"] = round(a["srcc"], 4)
            metrics[f"{metric_key_prefix}_{m}_plcc"] = round(a["plcc"], 4)
        mean = np.mean([metrics[f"{metric_key_prefix}_{m}_srcc"] for m in METRICS])
        metrics[f"{metric_key_prefix}_mean_srcc"] = round(float(mean), 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
