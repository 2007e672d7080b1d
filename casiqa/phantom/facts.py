"""Explanation facts: what is wrong per metric, how badly and where, in clinical words."""

from __future__ import annotations

from casiqa.metrics import METRICS
from casiqa.phantom.anatomy import clinical_name
from casiqa.phantom.failures import KINDS, Failure, kinds_of
from casiqa.phantom.render import Scene


def clean_fact(metric: str, scene: Scene | None = None) -> str:
    """A metric's statement of no failure; without the scene, nothing the image alone would have
    to tell (which branch the wire enters)."""
    if metric == "guidewire_visibility":
        into = f" into the {clinical_name(scene.devices.wire_branch)}" if scene is not None else ""
        return f"guidewire sharp and continuous from the catheter tip{into}; catheter visible"
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


def plain_facts(failures: list[dict], metrics: tuple[str, ...] = METRICS) -> dict[str, list[str]]:
    """Per metric, a row's failure records (metric, kind, severity) as plain facts, worst first
    (FailureKind.plain_fact: the kind and its severity's third, no place, branch or count), or the
    plain clean statement: what an explanation written from an assessor's findings can say. A
    kind the phantom lacks is stated by its title and severity alone."""
    from casiqa.metrics import kind_title, severity_word

    out: dict[str, list[str]] = {}
    for metric in metrics:
        own = sorted((f for f in failures if f.get("metric") == metric), key=lambda f: -float(f.get("severity", 1.0)))
        out[metric] = [KINDS[f["kind"]].plain_fact(float(f.get("severity", 1.0))) if f.get("kind") in KINDS
                       else f"{kind_title(str(f.get('kind')))}: {severity_word(float(f.get('severity', 1.0)))}"
                       for f in own] or [clean_fact(metric)]
    return out


def location_terms() -> tuple[str, ...]:
    """Every word group the phantom's facts use to say where: vessel names (LAD, second diagonal,
    diagonal, ...) and frame regions (upper-left field, ...), longest first."""
    from casiqa.phantom.anatomy import CLINICAL_NAMES, ORDINALS, SIDE_NAMES
    from casiqa.phantom.failures.base import REGION_COLS, REGION_ROWS, region_name

    terms = set(CLINICAL_NAMES.values()) | set(SIDE_NAMES.values())
    terms |= {f"{o} {side}" for o in ORDINALS for side in SIDE_NAMES.values()}
    terms |= {region_name((c + 0.5) / 3, (r + 0.5) / 3) for r in range(len(REGION_ROWS)) for c in range(len(REGION_COLS))}
    return tuple(sorted(terms, key=lambda t: (-len(t), t)))


def named_locations(text: str) -> set[str]:
    """The places an explanation names (location_terms), each found as whole words; a longer term
    found is taken out before shorter ones are looked for ('upper-left field' is not also a 'left
    field')."""
    import re

    rest, out = f" {text.lower()} ", set()
    for term in location_terms():
        pattern = rf"(?<![a-z0-9-]){re.escape(term.lower())}(?![a-z0-9-])"
        if re.search(pattern, rest):
            out.add(term)
            rest = re.sub(pattern, " ", rest)
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
