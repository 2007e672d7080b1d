"""Explanations open each fact with the kind the findings list: the pins read back what was written
and allow only the tokens that spell the listed kind's title."""

import numpy as np
import pytest
import torch

from casiqa.titles import allowed_tokens, fact_openings, pending_opening

G, B, A = "guidewire_visibility", "branch_discernibility", "artifact_interference"
OPEN = fact_openings({G: [("wire_gaps", 0.9), ("wire_fade", 0.2)], B: [], A: [("haze", 0.5)]})


def test_openings_are_the_listed_kinds_titles_in_order():
    assert OPEN == {G: ["wire gaps:", "wire fade:"], B: [], A: ["haze:"]}
    assert fact_openings(None) == {G: [], B: [], A: []}


@pytest.mark.parametrize(("generated", "expected"), [
    ('{"', None),                                                               # no explanation open
    ('{"guidewire_visibility":{"level":"poor","explanation":"', ("", "wire gaps:")),
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire g', ("wire g", "wire gaps:")),
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps:', None),      # spelt
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps: guidewire severely broken by gaps;',
     ("", " wire fade:")),                                                       # the second fact
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps: x; wire fade: y;', None),  # past the list
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps: x"},"branch_discernibility":'
     '{"level":"good","explanation":"', None),                                   # no finding listed: free
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps: x"},"branch_discernibility":'
     '{"level":"good","explanation":"v"},"artifact_interference":{"level":"fair","explanation":"ha', ("ha", "haze:")),
    ('{"guidewire_visibility":{"level":"poor","explanation":"wire gaps: x"},', None),  # closed
])
def test_the_open_fact_is_found_from_the_text_generated_so_far(generated, expected):
    assert pending_opening(generated, OPEN) == expected


def test_only_tokens_that_spell_the_title_are_allowed():
    pieces = ["", "wire", " gaps", " gap", "w", "haze", ":", ": guidewire", " wire", "wired", " fade"]
    assert allowed_tokens("", "wire gaps:", pieces) == [1, 4]              # "wire", "w"; not "wired"
    assert allowed_tokens("wire", "wire gaps:", pieces) == [2, 3]          # " gaps", " gap"
    assert allowed_tokens("wire gaps", "wire gaps:", pieces) == [6, 7]     # ":", or ": guidewire" past the title
    assert allowed_tokens("", " wire fade:", pieces) == [8]                # after "; " the title's leading space


def test_an_assessment_opens_each_explanation_with_its_listed_kinds():
    """End to end on an untrained tiny model whose findings heads are set to find wire gaps and wire
    fade (and nothing else of the guidewire): whatever its language model would write, the
    guidewire's explanation opens with 'wire gaps:', and a second fact, if it writes one, with
    'wire fade:'."""
    from casiqa.assessor import Assessor
    from casiqa.inputs import AssessInput
    from tests.test_findings import _tiny_with_findings

    model, processor = _tiny_with_findings()
    must = model.model.must
    with torch.no_grad():
        for branch in must.branches:
            branch.findings.weight.zero_()
            branch.findings.bias.copy_(torch.tensor([[-5.0, 0.0]] * (branch.findings.out_features // 2)).flatten())
        kinds = [k for m, k in must.vocab if m == G]
        head = must.branches[0].findings
        head.bias[2 * kinds.index("wire_gaps")] = 5.0
        head.bias[2 * kinds.index("wire_gaps") + 1] = 3.0
        head.bias[2 * kinds.index("wire_fade")] = 4.0
    grey = np.random.default_rng(0).random((112, 112)).astype(np.float32)
    inp = AssessInput(target=grey)
    pinned = Assessor(model, processor, model_id="test", device="cpu")
    head = pinned.heads([inp])[0]
    assert [k for k, _ in head.findings[G]] == ["wire_gaps", "wire_fade"]
    text = getattr(pinned.assess([inp], heads=[head])[0].metrics, G).explanation
    assert text.startswith("wire gaps:"), text
    facts = text.split(";")
    if len(facts) > 1 and facts[1].strip():   # a random model can spend the grammar's word budget on the first
        assert facts[1].startswith(" wire fade:"), text


class _Refusing:
    """A stand-in grammar that allows only the given token ids."""

    def __init__(self, allowed):
        self.allowed = allowed

    def reset(self):
        pass

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        out[:, self.allowed] = scores[:, self.allowed]
        return out


def test_pins_apply_on_what_the_grammar_allows_and_yield_where_it_allows_none():
    """Pinned separately from the grammar, a title token the grammar refused left no token at all
    (generate then picked token 0 and the grammar raised); applied after it, the pins keep the
    grammar's choice where they and it share no token."""
    from casiqa.titles import PinnedGrammar, TitlePins

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return '{"' + G + '":{"level":"poor","explanation":"'

    pieces = ["", "wire", " gaps", "x", '"', "wire gaps:"]
    pins = TitlePins(Tok(), [{m: (["wire gaps:"] if m == G else []) for m in (G, B, A)}], pieces)
    ids, scores = torch.zeros((1, 3), dtype=torch.long), torch.zeros((1, len(pieces)))
    shared = PinnedGrammar(_Refusing([1, 3, 4]), pins)(ids, scores.clone())
    assert torch.isfinite(shared[0]).nonzero().flatten().tolist() == [1]           # "wire": pinned and allowed
    pins.prompt_len = None
    none = PinnedGrammar(_Refusing([3, 4]), pins)(ids, scores.clone())
    assert torch.isfinite(none[0]).nonzero().flatten().tolist() == [3, 4]         # the grammar's choice, not an empty one
