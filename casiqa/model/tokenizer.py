"""A byte-level BPE tokenizer trained on the project's own text, with Qwen2.5-VL's special tokens.

The corpus is what the model reads and writes: the prompts, metric and level words, JSON keys,
and explanation facts of phantom cases. Each level word must be one token (with and without a
leading space) so that a level can be read off one position's logits (Q-Align's scorer).
"""

from __future__ import annotations

import json

from casiqa.metrics import LEVELS, METRIC_TITLES, METRICS

# Qwen2.5-VL's control tokens, plus one role marker per image kind (placed before <|vision_start|>).
ROLE_TOKENS = {"target": "<|target|>", "live": "<|live|>", "reference": "<|reference|>"}
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", *ROLE_TOKENS.values(),
]

# ChatML as Qwen uses it; images render as <|role|><|vision_start|><|image_pad|><|vision_end|>.
# {% generation %} marks assistant text for TRL's assistant-only loss.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>' }}{% endgeneration %}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{% set role = content['image_role'] if content['image_role'] is defined and content['image_role'] else 'target' %}"
    "{{ '<|' + role + '|><|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>' }}"
    "{% endif %}{% endif %}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus(n_anatomies: int = 40, seed: int = 12345) -> list[str]:
    """Texts the tokenizer is trained on: prompts, schema words and phantom explanation facts (as
    recorded and as plain facts)."""
    from casiqa.model.findings import prompt_findings, recorded_findings
    from casiqa.phantom.case import anatomy_cases
    from casiqa.phantom.config import PhantomConfig
    from casiqa.phantom.facts import plain_facts
    from casiqa.schema import json_schema, to_explanation
    from prompts import render

    texts = [json.dumps(json_schema())]
    titles = METRIC_TITLES
    texts.append(render("system.j2", metrics=METRICS, titles=titles))
    cfg = PhantomConfig(size=128)
    for anatomy in range(n_anatomies):
        for case in anatomy_cases(seed, anatomy, cfg):
            head = {m: {"level": case.scores[m].level, "score": case.scores[m].mos} for m in METRICS}
            found = prompt_findings(recorded_findings([f.to_json() for f in case.failures], METRICS))
            for aux in ([], ["live"], ["reference"], ["live", "reference"]):
                texts.append(render("assess.j2", aux=aux, head=head, metrics=METRICS, findings=None))
                texts.append(render("assess.j2", aux=aux, head=head, metrics=METRICS, findings=found))
            plain = plain_facts([f.to_json() for f in case.failures], METRICS)
            for facts in (case.facts, plain):  # the answers as recorded and as plain facts (finetune.data.answer_facts)
                answer = {m: {"level": case.scores[m].level, "explanation": to_explanation(facts[m])} for m in METRICS}
                texts.append(json.dumps(answer, separators=(",", ":")))
                texts.append(" ".join(f for m in METRICS for f in facts[m]))
    # level words often, in every context they appear in, so each becomes a single token
    for level in LEVELS:
        texts.extend([f'"{level}"', f" {level}", level, f"{level.capitalize()}"] * 50)
    texts.extend(f"{m} {titles[m]}" for m in METRICS for _ in range(20))
    texts.extend(str(i) for i in range(1000))
    return texts


def train_tokenizer(vocab_size: int = 2048, texts: list[str] | None = None, special_tokens: list[str] | None = None):
    """A PreTrainedTokenizerFast trained in ~1 s; `texts` defaults to `corpus()`, `special_tokens`
    to SPECIAL_TOKENS (the first three are ChatML's and must be there)."""
    special_tokens = list(SPECIAL_TOKENS if special_tokens is None else special_tokens)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts if texts is not None else corpus(), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=special_tokens[3:], chat_template=CHAT_TEMPLATE,
    )
    hf.padding_side = "left"  # generation pads on the left
    return hf


def level_token_ids(tokenizer) -> list[int]:
    """Token id of each level word (no leading space), in LEVELS order; raises if one is split."""
    ids = []
    for level in LEVELS:
        pieces = tokenizer.encode(level, add_special_tokens=False)
        if len(pieces) != 1:
            raise ValueError(f"level word {level!r} is {len(pieces)} tokens in this tokenizer; it must be one")
        ids.append(pieces[0])
    return ids
