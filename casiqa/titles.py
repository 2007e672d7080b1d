"""Explanations that open each fact with the kind the findings list, enforced while decoding.

The explanation is written from the findings heads' findings, each fact beginning with the kind's
name as the prompt lists it ("haze: vessel contrast moderately reduced ..."). A small language
model copies those names from the prompt unreliably: one training run of the tiny model put
another kind first on 29 of 47 test images whose findings listed vessel blur, the next run of
the same recipe (quoted findings) copied every branch kind and lost the artefacts' (29 % of the
worst failures named, against 90 % before; docs/training-log.md, sixth session). So the assessor
pins what is not the model's to choose: the n-th fact of a metric's explanation begins with the
n-th kind its findings list ("haze:"), and only the rest of the fact (how it is described) is the
model's. A metric with no finding, and any fact after the listed ones, is not pinned.

`TitlePins` says, per row, which tokens continue the pinned opening: it reads each row's generated
text back, finds which metric's explanation is open and which fact, and while that fact has not yet
spelt its title, allows only the tokens that continue it. Facts are separated by ';' (the answers
join them with '; '). `PinnedGrammar` applies it after the Outlines grammar, on what the grammar
allows: a token that continues a title can still be one the grammar refuses (the explanation's
word budget spent, or a piece that goes on past the title with a character the schema does not
take there), and pinning separately
from the grammar, as a `prefix_allowed_tokens_fn`, then left no token at all: `generate` picked
token 0 and the grammar raised (found with an untrained model and a retrained tokenizer). Where
the grammar leaves no pinned token, the pin yields to the grammar.
"""

from __future__ import annotations

from casiqa.metrics import METRICS, kind_title

EXPLANATION_KEY = '"explanation":"'


def fact_openings(findings: dict[str, list[tuple[str, float]]] | None) -> dict[str, list[str]]:
    """Per metric, what its facts must open with, in order: each listed kind's title and a colon
    ('wire gaps:'), as the training answers' facts begin (casiqa.phantom.failures.FailureKind)."""
    return {m: [f"{kind_title(kind)}:" for kind, _ in (findings or {}).get(m, [])] for m in METRICS}


def pending_opening(generated: str, openings: dict[str, list[str]]) -> tuple[str, str] | None:
    """(what the open fact has written, what it must open with) when the text generated so far is
    inside a pinned fact's opening; None when nothing is pinned at this point (outside every
    explanation, in a metric or a fact without a listed kind, or past the opening)."""
    start = generated.rfind(EXPLANATION_KEY)
    if start < 0:
        return None
    body = generated[start + len(EXPLANATION_KEY):]
    if '"' in body:                           # that explanation is closed
        return None
    head = generated[:start]
    metric = max(METRICS, key=lambda m: head.rfind(f'"{m}":'))
    if head.rfind(f'"{metric}":') < 0:
        return None
    facts = body.split(";")
    index, written = len(facts) - 1, facts[-1]
    pins = openings.get(metric, [])
    if index >= len(pins):
        return None
    target = pins[index] if index == 0 else " " + pins[index]
    if len(written) >= len(target) or not target.startswith(written):
        return None                           # spelt already (or departed from it: nothing to enforce)
    return written, target


def allowed_tokens(written: str, target: str, pieces: list[str]) -> list[int]:
    """Token ids whose text (`pieces[id]`) continues `written` along `target`: it stays a prefix of
    the target, or completes it and goes on."""
    out = []
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        text = written + piece
        if target.startswith(text) or text.startswith(target):
            out.append(i)
    return out


class TitlePins:
    """The tokens allowed to each row (called with its batch index and its ids so far), pinning its
    fact openings (`openings[b]`, fact_openings) in one `generate` call; rows are told apart by
    their index in the batch, and the prompt's length is taken at the first step (left-padded
    prompts share it)."""

    def __init__(self, tokenizer, openings: list[dict[str, list[str]]], pieces: list[str] | None = None):
        self.tokenizer = tokenizer
        self.openings = openings
        self.pieces = pieces if pieces is not None else token_pieces(tokenizer)
        self.everything = list(range(len(self.pieces)))
        self.prompt_len: int | None = None

    def __call__(self, batch_id: int, input_ids) -> list[int]:
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[-1])
        generated = self.tokenizer.decode(input_ids[self.prompt_len:], skip_special_tokens=True)
        pending = pending_opening(generated, self.openings[batch_id])
        if pending is None:
            return self.everything
        allowed = allowed_tokens(*pending, self.pieces)
        return allowed or self.everything     # no token continues it: leave the choice to the grammar


class PinnedGrammar:
    """A logits processor: the grammar's (Outlines) first, then each row's title pins on the tokens
    it left; a row whose pinned tokens the grammar all refused keeps the grammar's choice, so the
    two never leave an empty one. `reset()` readies both for the next `generate` call."""

    def __init__(self, grammar, pins: TitlePins):
        self.grammar, self.pins = grammar, pins

    def reset(self) -> None:
        if self.grammar is not None:
            self.grammar.reset()
        self.pins.prompt_len = None

    def __call__(self, input_ids, scores):
        import torch

        if self.grammar is not None:
            scores = self.grammar(input_ids, scores)
        for b in range(input_ids.shape[0]):
            allowed = self.pins(b, input_ids[b])
            if allowed is self.pins.everything:
                continue
            index = torch.tensor(allowed, dtype=torch.long, device=scores.device)
            index = index[index < scores.shape[-1]]
            kept = scores[b, index]
            if torch.isfinite(kept).any():
                row = torch.full_like(scores[b], float("-inf"))
                row[index] = kept
                scores[b] = row
        return scores


def token_pieces(tokenizer) -> list[str]:
    """Each token id's text as decoding writes it (special tokens as the empty string)."""
    special = set(tokenizer.all_special_ids)
    size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    texts = tokenizer.batch_decode([[i] for i in range(size)])   # one call: ~150k tokens for Qwen's vocabulary
    return ["" if i in special else t for i, t in enumerate(texts)]
