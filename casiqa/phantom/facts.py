"""Explanation facts: what is wrong per metric, how badly and where, in clinical words."""

from __future__ import annotations

from casiqa.metrics import METRICS
from casiqa.phantom.anatomy import clinical_name
from casiqa.phantom.failures import KINDS, Failure, kinds_of
from casiqa.phantom.render import Scene


def clean_fact(metric: str, scene: Scene) -> str:
    if metric == "guidewire_visibility":
        return (f"guidewire sharp and continuous from the catheter tip into the "
                f"{clinical_name(scene.devices.wire_branch)}; catheter visible")
    if metric == "branch_discernibility":
        return "vessel tree complete: main vessels and side branches discernible down to distal segments"
    return "no artefacts"


def explanation_facts(failures: list[Failure], scene: Scene) -> dict[str, list[str]]:
    """Per metric, one sentence per failure of its family (worst first), or a clean statement."""
    out: dict[str, list[str]] = {}
    for metric in METRICS:
        own = sorted((f for f in failures if f.metric == metric), key=lambda f: -f.severity)
        out[metric] = [KINDS[f.kind].fact(f) for f in own] or [clean_fact(metric, scene)]
    return out


def named_kinds(text: str, metric: str) -> set[str]:
    """The failure kinds of `metric` that an explanation names: the inverse of the facts, for
    checking what a model wrote. Each kind's `FailureKind.phrase` is looked for, longest first,
    and a phrase found is taken out before shorter ones are looked for ("onwards missing" is a
    distal deletion, not a branch deletion as well). A clean statement names none."""
    rest, out = text.lower(), set()
    for name in sorted(kinds_of(metric), key=lambda k: (-len(KINDS[k].phrase), k)):
        phrase = KINDS[name].phrase
        if phrase and phrase in rest:
            out.add(name)
            rest = rest.replace(phrase, " ")
    return out
