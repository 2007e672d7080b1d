"""Fine-tune CAS-IQA: TRL SFT on the answer + soft-label loss on the metric heads.

    python -m finetune.sft --config finetune/recipes/tiny-cpu.yaml
    python -m finetune.sft --config finetune/recipes/tiny-cpu.yaml --must false --findings false --output_dir runs/must-off
    accelerate launch --config_file finetune/accelerate/zero2.yaml -m finetune.sft --config finetune/recipes/qwen2.5-vl-7b.yaml
    python -m finetune.sft --config ... --resume_from_checkpoint runs/tiny-cpu/checkpoint-400

`model_name_or_path: tiny` builds the tiny architecture from scratch; a hub id or local path of a
Qwen2.5-VL model starts from it (MUST and heads new); a CAS-IQA directory continues training it;
`random:qwen2.5-vl-3b` (or -7b) builds that architecture with random weights, to check a GPU
recipe's memory and speed offline (benchmarks/bench_train.py).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def build_model(args, model_args, training_args):
    import torch

    from casiqa.metrics import METRICS
    from casiqa.model import MustSettings
    from casiqa.model.findings import phantom_vocabulary
    from casiqa.model.loading import TinySpec, build_tiny, from_architecture, from_base, load

    must = MustSettings(enabled=args.must, cross_attention=args.cross_attention, router=args.router,
                        pixel_path=args.pixel_path, pixel_tophat=args.pixel_tophat, pixel_dense=args.pixel_dense,
                        pixel_tophat_margin=args.pixel_tophat_margin,
                        pixel_compare=list(args.pixel_compare), pixel_width=args.pixel_width,
                        pixel_pool=args.pixel_pool, pixel_along=args.pixel_along, pixel_along_own=args.pixel_along_own,
                        pixel_profiles=args.pixel_profiles, profile_scores=args.profile_scores,
                        profile_half_px=args.profile_half_px, profile_samples=args.profile_samples,
                        profile_along=args.profile_along, profile_centre_lines=args.profile_centre_lines,
                        dihedral_scores=args.dihedral_scores, pool=args.pool,
                        findings=phantom_vocabulary(METRICS) if args.findings else {})
    name = model_args.model_name_or_path or "tiny"
    if name == "tiny":
        spec = TinySpec(hidden=args.tiny_hidden, layers=args.tiny_layers, vision_depth=args.tiny_vision_depth,
                        vision_hidden=args.tiny_vision_hidden, image_size=args.image_size, must=must)
        return build_tiny(spec, seed=training_args.seed)
    if (Path(name) / "config.json").is_file() and "casiqa" in (Path(name) / "config.json").read_text():
        return load(name)
    dtype = torch.bfloat16 if training_args.bf16 else None
    if name.startswith("random:"):
        print(f"{name}: random weights, for checking memory and speed only; what it learns means nothing")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return from_architecture(name.removeprefix("random:"), must=must, image_size=args.image_size,
                                 dtype=dtype or torch.float32, device=device, seed=training_args.seed,
                                 attn_implementation=model_args.attn_implementation)
    return from_base(name, must=must, image_size=args.image_size, dtype=dtype,
                     attn_implementation=model_args.attn_implementation)


def warmup_config(args, training_args):
    """The recipe's stage-1 settings (finetune.warmup.WarmupConfig)."""
    from finetune.warmup import WarmupConfig

    return WarmupConfig(epochs=args.pixel_warmup_epochs, batch_size=args.pixel_warmup_batch_size,
                        learning_rate=args.pixel_warmup_lr, aux_drop=args.aux_drop,
                        evidence_weight=args.pixel_warmup_evidence_weight, dense_weight=args.pixel_warmup_dense_weight,
                        score_weight=args.pixel_warmup_score_weight,
                        dense_damaged_weight=args.pixel_warmup_dense_damaged_weight,
                        findings_weight=args.pixel_warmup_findings_weight,
                        metric_weights=tuple(args.pixel_warmup_metric_weights), bf16=args.pixel_warmup_bf16,
                        seed=training_args.seed)


def lora_config(args, model_args):
    if not model_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                      target_modules=model_args.lora_target_modules or args.lora_target_regex,
                      modules_to_save=model_args.lora_modules_to_save or ["must"], task_type="CAUSAL_LM")


# the recipe fields that decide what stage 1 learns: a kept warm-up is reused only if they match
WARMUP_FIELDS = ("data", "max_train_samples", "image_size", "must", "pixel_path", "pixel_width", "pixel_tophat",
                 "pixel_tophat_margin",
                 "pixel_compare", "pixel_pool", "pixel_along", "pixel_along_own", "pixel_profiles", "profile_scores",
                 "profile_epochs", "profile_loss", "profile_half_px", "profile_samples", "profile_along",
                 "profile_centre_lines", "profile_point_weight", "profile_bf16", "profile_train_points",
                 "profile_weight_decay", "profile_views", "profile_mixup", "profile_mixup_of", "profile_mixup_metrics",
                 "pixel_dense",
                 "pool",
                 "findings", "use_aux",
                 "aux_drop", "pixel_warmup_findings_weight",
                 "pixel_warmup_epochs", "pixel_warmup_lr", "pixel_warmup_batch_size", "pixel_warmup_evidence_weight",
                 "pixel_warmup_dense_weight", "pixel_warmup_dense_damaged_weight", "pixel_warmup_score_weight",
                 "pixel_warmup_metric_weights", "pixel_warmup_bf16", "tiny_hidden", "tiny_layers", "tiny_vision_depth",
                 "tiny_vision_hidden")


def warmup_settings(args, model_args, training_args) -> dict:
    from casiqa.data.rows import data_fingerprint

    out = {f: getattr(args, f) for f in WARMUP_FIELDS}
    # the data's content, not only its path: a data set rebuilt in place must not meet a stale stage 1
    out.update(model=model_args.model_name_or_path or "tiny", seed=training_args.seed,
               data_fingerprint=data_fingerprint(args.data))
    return json.loads(json.dumps(out, default=str))


def _default(name: str):
    """A recipe field's default, as warmup_settings writes it."""
    from finetune.config import CasIqaArguments

    return json.loads(json.dumps(getattr(CasIqaArguments(), name, None), default=str))


def _bar(it, desc):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, mininterval=10)


def pixel_warmup(model, processor, args, training_args, train, val, settings: dict | None = None):
    """Stage 1 (finetune/warmup.py); its result is kept in output_dir with the settings that made
    it, so a rerun of the same recipe reuses it and a changed recipe is told to start afresh.
    Returns the training rows' pixel cache when it trained (for heads_scores), else None."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from finetune.trainer import unwrap
    from finetune.warmup import pixel_rows, warm_up

    must = unwrap(model).model.must
    if not args.pixel_warmup_epochs or getattr(must, "pixels", None) is None:
        return None
    saved = Path(training_args.output_dir) / "pixel-warmup" / "must.safetensors"
    kept = saved.parent / "settings.json"
    if saved.is_file():
        before = json.loads(kept.read_text()) if kept.is_file() else None
        # a field the kept settings lack did not exist when they were written: it had its default
        old = {k: (before or {}).get(k, _default(k)) for k in (settings or {})}
        changed = [k for k in (settings or {}) if before is not None and old[k] != settings[k]]
        if changed:
            diff = ", ".join(f"{k}: {old[k]!r} -> {settings[k]!r}" for k in changed)
            raise SystemExit(f"{saved.parent} was trained with other settings ({diff}); move it away or "
                             f"choose another --output_dir to train stage 1 afresh")
        print(f"pixel warm-up: reusing {saved}" + ("" if before is not None else " (made before settings were kept)"))
        must.load_state_dict(load_file(str(saved)))
        return None

    (saved.parent / HEADS_SCORES).unlink(missing_ok=True)  # the scores of a stage 1 this run replaces
    dense = bool(args.pixel_warmup_dense_weight)
    data = pixel_rows(train, processor, use_aux=args.use_aux, progress=_bar, dense=dense, pixels=must.pixels)
    check = pixel_rows(val, processor, use_aux=args.use_aux, progress=_bar, pixels=must.pixels)
    cfg = warmup_config(args, training_args)
    history = warm_up(model, data, check, cfg, log=lambda e: print(json.dumps(e)),
                      progress=lambda total, desc: tqdm(total=total, desc=desc, mininterval=10))
    if getattr(must, "profile_scorer", None) is not None:  # stage 1p, on the same pixel cache
        from finetune.profile_warmup import fit_shares, profile_config, profile_warm_up
        from finetune.warmup import predict, srcc_of

        profiles = profile_warm_up(must, data, check, profile_config(args, training_args.seed),
                                   log=lambda e: print(json.dumps(e)),
                                   progress=lambda total, desc: tqdm(total=total, desc=desc, mininterval=10))
        shares = fit_shares(must, check)                                           # the scorer's weight per metric
        print(json.dumps({"profile scorer shares (validation)": shares}))
        mixed = srcc_of(predict(must, check), check.mos)
        print(json.dumps({"validation SRCC, heads and profiles mixed": mixed}))
        saved.parent.mkdir(parents=True, exist_ok=True)
        (saved.parent / "profile-history.json").write_text(
            json.dumps(profiles + [{"shares": shares, "mixed_val_srcc": mixed}], indent=2))
    saved.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in must.state_dict().items()}, str(saved))
    (saved.parent / "history.json").write_text(json.dumps(history, indent=2))
    if settings is not None:
        kept.write_text(json.dumps(settings, indent=2))
    return data


HEADS_SCORES = "train-scores.json"  # beside stage 1's weights: the heads' scores of the training rows


def heads_scores(model, processor, args, training_args, train, data=None,
                 resuming: bool = False) -> dict[str, list[float]]:
    """The stage-1 heads' expected score of each training row (row id -> one per metric; pixel
    path alone, every auxiliary image given, the image as given), for `prompt_scores: heads`:
    the training prompts then show the levels the heads give, beside the recorded findings, as
    inference does. Kept beside stage 1's weights and reused with them; `data` is the rows' pixel
    cache if stage 1 just built it (else it is built here, ~2 min for the phantom on 2 cores)."""
    from finetune.trainer import unwrap
    from finetune.warmup import pixel_rows, predict, srcc_of

    path = Path(training_args.output_dir) / "pixel-warmup" / HEADS_SCORES
    ids = [str(i) for i in train["id"]] if "id" in getattr(train, "column_names", ()) else \
        [str(r.get("id")) for r in train]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{args.data}: training row ids repeat; prompt_scores: heads needs unique ids")
    if path.is_file():
        kept = json.loads(path.read_text())
        if set(ids) <= set(kept):
            print(f"prompt scores: the stage-1 heads' scores from {path}")
            return {i: kept[i] for i in ids}
    if resuming:  # the model is not loaded from the checkpoint yet, and its heads have moved on from stage 1's
        raise SystemExit(f"prompt_scores: heads: {path} is missing or lacks training rows, and a resumed run cannot "
                         "recompute it; resume in the output_dir of the run that made the checkpoint")
    must = unwrap(model).model.must
    if data is None:
        data = pixel_rows(train, processor, use_aux=args.use_aux, progress=_bar, pixels=must.pixels)
    scores = predict(must, data)
    out = {i: [round(float(x), 4) for x in row] for i, row in zip(ids, scores, strict=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    print(f"prompt scores: the stage-1 heads' scores of {len(out)} training rows, SRCC against their MOS "
          f"{srcc_of(scores, data.mos)}")
    return out


def check_failure_records(rows, data) -> None:
    """The findings heads learn from failure records: training rows without any would leave them
    untrained, and their random findings would then be written into every explanation."""
    from casiqa.data.rows import DatasetFieldError, failure_list
    from finetune.lm_warmup import text_rows

    if not any(failure_list(r) is not None for r in text_rows(rows)):
        raise DatasetFieldError(f"{data}: no training row has failure records (`failures`), which the findings heads "
                                "learn from; add them (casiqa/data/folder.py) or pass --findings false")


def language_warmup(model, processor, args, training_args, train, vocab, prompt_scores=None) -> None:
    """Stage 1b (finetune/lm_warmup.py): the language model alone on the rows' text; its loss per
    tenth of the run goes to output_dir/lm-warmup/history.json."""
    if not args.lm_warmup_steps:
        return
    from tqdm.auto import tqdm

    from finetune.data import Collator
    from finetune.lm_warmup import LmWarmupConfig, lm_warm_up

    cfg = LmWarmupConfig(steps=args.lm_warmup_steps, batch_size=args.lm_warmup_batch_size,
                         learning_rate=args.lm_warmup_lr, bf16=args.lm_warmup_bf16, seed=training_args.seed)
    collator = Collator(processor, aux_drop=args.aux_drop, use_aux=args.use_aux, seed=training_args.seed, vocab=vocab,
                        score_noise=args.prompt_score_noise, prompt_scores=prompt_scores,
                        answer_facts=args.answer_facts)
    history = lm_warm_up(model, collator, train, cfg, log=lambda e: print(json.dumps(e)),
                         progress=lambda total, desc: tqdm(total=total, desc=desc, mininterval=10))
    out = Path(training_args.output_dir) / "lm-warmup"
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history, indent=2))


def subset(rows, n: int):
    return rows if not n or n >= len(rows) else (rows.select(range(n)) if hasattr(rows, "select") else rows[:n])


@dataclass
class Run:
    """What `prepare` set up: the parsed recipe, the data and a trainer ready to train."""

    args: Any
    training_args: Any
    model_args: Any
    processor: Any
    trainer: Any
    started: float
    commit: str


def parse(argv: list[str] | None = None):
    """A recipe and its command-line overrides -> (CasIqaArguments, SFTConfig, ModelConfig)."""
    import torch
    from trl import ModelConfig, SFTConfig, TrlParser

    from finetune.config import CasIqaArguments

    parser = TrlParser((CasIqaArguments, SFTConfig, ModelConfig))
    try:
        args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as e:
        if "bf16" in str(e) and not torch.cuda.is_available():
            raise SystemExit(f"{e}\nThis recipe trains in bf16 on a GPU and this machine has none: "
                             f"pass --bf16 false to run it on the CPU.") from e
        raise
    if not torch.cuda.is_available():
        training_args.bf16 = False  # SFTConfig defaults to bf16, which fails on CPU
    return args, training_args, model_args


def prepare(argv: list[str] | None = None) -> Run:
    """Parse the recipe and its command-line overrides, load the data, build the model, run stage 1
    (the pixel warm-up) and return an SFT trainer ready to train."""
    from finetune.card import code_version
    from finetune.data import Collator, load_rows
    from finetune.trainer import CasIqaSFTTrainer

    started, commit = time.monotonic(), code_version()
    args, training_args, model_args = parse(argv)
    training_args.remove_unused_columns = False          # keep scores for the head loss
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}  # the collator does the tokenising
    training_args.max_length = None                      # truncation would cut image tokens

    train = subset(load_rows(args.data, "train"), args.max_train_samples)
    val = subset(load_rows(args.data, "validation"), args.eval_max_samples)
    if args.findings:
        check_failure_records(train, args.data)
    model, processor = build_model(args, model_args, training_args)
    data = None
    if not training_args.resume_from_checkpoint:  # a checkpoint already holds the warmed-up MUST
        data = pixel_warmup(model, processor, args, training_args, train, val,
                            warmup_settings(args, model_args, training_args))
    # on resuming, the scores kept beside stage 1's weights (the checkpoint's heads have moved on)
    shown = None
    if args.prompt_scores == "heads":
        shown = heads_scores(model, processor, args, training_args, train, data,
                             resuming=bool(training_args.resume_from_checkpoint))
    del data
    vocab = model.model.must.vocab
    if not training_args.resume_from_checkpoint:
        language_warmup(model, processor, args, training_args, train, vocab, shown)
    pixels = getattr(model.model.must, "pixels", None)
    if args.freeze_pixel_path and pixels is not None:
        pixels.freeze()
    trainer = CasIqaSFTTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=val, processing_class=processor,
        data_collator=Collator(processor, aux_drop=args.aux_drop, use_aux=args.use_aux, seed=training_args.seed,
                               vocab=vocab, score_noise=args.prompt_score_noise, prompt_scores=shown,
                               answer_facts=args.answer_facts),
        eval_collator=Collator(processor, use_aux=args.use_aux, train=False, vocab=vocab,
                                answer_facts=args.answer_facts),
        peft_config=lora_config(args, model_args), head_loss_weight=args.head_loss_weight,
        lm_loss_weight=args.lm_loss_weight, head_warmup_steps=args.head_warmup_steps,
        evidence_loss_weight=args.evidence_loss_weight, findings_loss_weight=args.findings_loss_weight,
    )
    return Run(args, training_args, model_args, processor, trainer, started, commit)


def final_validation(trainer) -> dict:
    """The validation metrics of the trained model: the trainer's own evaluation when it ran at the
    last step (each costs ~70 s on 2 CPU cores with eight views), else a new one."""
    last = [e for e in trainer.state.log_history if "eval_mean_srcc" in e]
    if last and last[-1].get("step") == trainer.state.global_step:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def main(argv: list[str] | None = None) -> int:
    from finetune.card import test_metrics, write_card

    run = prepare(argv)
    args, training_args, model_args, processor, trainer = (run.args, run.training_args, run.model_args,
                                                           run.processor, run.trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    out = Path(training_args.output_dir)
    final = trainer.model
    if hasattr(final, "merge_and_unload"):  # LoRA: keep the adapter, and export a merged model beside it
        trainer.save_model(str(out / "adapter"))
        final = final.merge_and_unload()
    from casiqa.model.loading import save

    save(final, processor, out)
    results = {"validation": final_validation(trainer)}
    if args.test_at_end:
        results["test"] = test_metrics(final, processor, args)
        command = "python -m finetune.sft " + " ".join(argv if argv is not None else sys.argv[1:])
        write_card(out, args, training_args, model_args, results, command=command,
                   wall_s=time.monotonic() - run.started, n_params=sum(p.numel() for p in final.parameters()),
                   commit=run.commit)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results.get("test", results["validation"]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
