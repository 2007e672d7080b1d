"""Every failure kind lowers its own metric monotonically with severity, changes the pixels more
the more severe it is, and leaves the other two metrics alone."""

import dataclasses

import numpy as np
import pytest

from casiqa.metrics import METRICS
from casiqa.phantom.case import build_scene
from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.failures import KINDS, kinds_of, render_view
from casiqa.phantom.scoring import ground_truth, quality

CFG = PhantomConfig(size=256)
SEVERITIES = (0.0, 0.2, 0.6, 1.0)


@pytest.fixture(scope="module")
def scenes():
    # one left and one right coronary system, so every branch-based kind has its targets
    out = {}
    for anatomy in range(20):
        scene, _ = build_scene(7, anatomy, CFG)
        out.setdefault(scene.tree.system, scene)
        if len(out) == 2:
            return list(out.values())
    raise AssertionError("no left and right systems among 20 anatomies")


def test_every_metric_has_failure_kinds():
    assert {k.metric for k in KINDS.values()} == set(METRICS)
    assert all(len(kinds_of(m)) >= 6 for m in METRICS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ground_truth_is_monotone_and_separate(kind, scenes):
    for scene in scenes:
        base = KINDS[kind].sample(np.random.default_rng(3), scene, 0.5)
        qualities, moses = [], []
        for s in SEVERITIES:
            f = [dataclasses.replace(base, severity=s)]
            qualities.append(quality(f, base.metric))
            truth = ground_truth(f, np.random.default_rng(11), CFG)  # same panel for every severity
            moses.append(truth[base.metric].mos)
            for other in METRICS:
                if other != base.metric:
                    assert quality(f, other) == 5.0
                    assert truth[other] == ground_truth([], np.random.default_rng(11), CFG)[other]
        assert qualities[0] == 5.0
        assert all(a > b for a, b in zip(qualities, qualities[1:], strict=False)), qualities
        assert all(a >= b for a, b in zip(moses, moses[1:], strict=False)), moses
        assert moses[0] > moses[-1]


# Moving the wire saturates the plain pixel change once the moved copy no longer overlaps the true
# wire; what keeps growing is how far from the true wire the change lies.
OFFSET_KINDS = {"wire_displacement", "wire_duplication"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pixels_change_more_with_severity(kind, scenes):
    from scipy import ndimage

    for scene in scenes:
        base = KINDS[kind].sample(np.random.default_rng(3), scene, 0.5)
        weight = 1.0
        if kind in OFFSET_KINDS:
            weight = ndimage.distance_transform_edt(scene.device_labels() != 2)

        def image(s, base=base, scene=scene):
            failures = [dataclasses.replace(base, severity=s)] if s > 0 else []
            return render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=failures)

        clean = image(0.0)
        change = [float((np.abs(image(s) - clean) * weight).sum()) for s in SEVERITIES[1:]]
        assert change[0] > 0, f"{kind} at severity {SEVERITIES[1]} changed nothing"
        assert change[0] < change[1] < change[2], f"{kind}: pixel change {change} not increasing"


def test_facts_name_the_failure(scenes):
    from casiqa.phantom.facts import explanation_facts

    scene = scenes[0]
    f = KINDS["branch_deletion"].sample(np.random.default_rng(0), scene, 0.1)
    facts = explanation_facts([f], scene)
    assert facts["branch_discernibility"] == [f"branch deletion: {scene.tree.branches[f.params['order'][0]].name} missing"]
    assert facts["artifact_interference"] == ["no artefacts"]
    assert "guidewire" in facts["guidewire_visibility"][0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_fact_begins_with_the_words_its_finding_uses(kind, scenes):
    """The language model writes what the findings say first: each fact opens with the kind's
    name as the prompt's findings write it, so an explanation's first words are read off the
    prompt rather than guessed from the image."""
    from casiqa.model.findings import describe
    from casiqa.phantom.facts import explanation_facts

    words = describe([(kind, 0.9)]).removeprefix('"').removesuffix(' (severe)"')
    for scene in scenes:
        failure = KINDS[kind].sample(np.random.default_rng(1), scene, 0.9)
        fact = explanation_facts([failure], scene)[KINDS[kind].metric]
        assert fact == [KINDS[kind].fact(failure)] and fact[0].startswith(words + ": "), fact


@pytest.mark.parametrize("kind", sorted(OFFSET_KINDS))
def test_a_moved_wire_is_masked_and_boxed_where_it_was_drawn(kind, scenes):
    """A displaced or ghost wire: the extra-wire mask lies where the rendered wire moved (off the
    true wire, farther the more severe) and the failure's box holds it; other kinds add none."""
    from scipy import ndimage

    from casiqa.phantom.failures import extra_wire_mask, render

    scene = scenes[0]
    away = ndimage.distance_transform_edt(scene.device_labels() != 2)
    distances = []
    for s in (0.3, 1.0):
        f = KINDS[kind].sample(np.random.default_rng(3), scene, s)
        mask = extra_wire_mask(render(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=[f]), scene)
        assert mask.sum() > 20 and not (mask & (scene.device_labels() == 2)).any()
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = (np.array(f.bbox) * scene.size).tolist()
        inside = (xs >= x0 - 1) & (xs <= x1 + 1) & (ys >= y0 - 1) & (ys <= y1 + 1)
        assert inside.mean() > 0.99, f"{kind}: {1 - inside.mean():.1%} of the drawn wire outside its box"
        distances.append(float(np.median(away[mask])))
    assert distances[0] < distances[1], distances
    fade = KINDS["wire_fade"].sample(np.random.default_rng(3), scene, 1.0)
    assert not extra_wire_mask(render(scene, np.random.default_rng(5), CFG, contrast=True, wire=True,
                                      failures=[fade]), scene).any()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_explanation_is_read_back_into_the_kind_it_describes(kind, scenes):
    """named_kinds inverts the facts: each kind's description, at any severity, names that kind and
    no other of its metric; clean statements name none; two facts name both kinds."""
    from casiqa.phantom.facts import clean_fact, named_kinds

    metric = KINDS[kind].metric
    for scene in scenes:
        for s in (0.1, 0.5, 0.95):
            failure = KINDS[kind].sample(np.random.default_rng(3), scene, s)
            for text in (KINDS[kind].describe(failure), KINDS[kind].fact(failure)):
                assert named_kinds(text, metric) == {kind}, text
        assert named_kinds(clean_fact(metric, scene), metric) == set()
        other = next(k for k in kinds_of(metric) if k != kind)
        both = "; ".join(KINDS[k].fact(KINDS[k].sample(np.random.default_rng(3), scene, 0.5)) for k in (kind, other))
        assert named_kinds(both, metric) == {kind, other}, both


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_plain_fact_says_only_what_the_findings_carry(kind, scenes):
    """The plain fact (what an assessor's answer explains: finetune.data.answer_facts) opens as
    the prompt's finding does, grades the severity by the findings' thirds, is read back into its
    kind alone, and names no vessel or field, where the full fact often does."""
    from casiqa.metrics import severity_adverb, severity_word
    from casiqa.model.findings import describe
    from casiqa.phantom.facts import named_kinds, named_locations

    metric = KINDS[kind].metric
    for s in (0.05, 0.34, 0.5, 0.67, 0.99):
        text = KINDS[kind].plain_fact(s)
        assert text.startswith(describe([(kind, s)]).removeprefix('"').removesuffix(f' ({severity_word(s)})"') + ": "), text
        assert severity_adverb(s) in text.split(": ", 1)[1], text
        assert named_kinds(text, metric) == {kind}, text
        assert named_locations(text) == set(), text


def test_plain_facts_per_metric_worst_first_and_the_clean_statements_name_no_branch(scenes):
    from casiqa.phantom.facts import clean_fact, named_locations, plain_facts

    gw = "guidewire_visibility"
    records = [{"metric": gw, "kind": "wire_fade", "severity": 0.2}, {"metric": gw, "kind": "wire_gaps", "severity": 0.9},
               {"metric": gw, "kind": "some_new_kind", "severity": 0.5}]   # a user's own kind: title and severity
    facts = plain_facts(records)
    assert facts[gw] == ["wire gaps: guidewire severely broken by gaps", "some new kind: moderate",
                         "wire fade: guidewire slightly faded"]
    assert facts["branch_discernibility"] == [clean_fact("branch_discernibility")]
    assert facts["artifact_interference"] == ["no artefacts"]
    assert named_locations(clean_fact(gw)) == set()
    for scene in scenes:  # the phantom's own clean statement names the wire's branch; the plain one does not
        assert named_locations(clean_fact(gw, scene))


def test_named_locations_reads_vessels_and_fields_as_whole_words():
    from casiqa.phantom.facts import named_locations

    assert named_locations("discontinuity: mid LAD interrupted by 2 gap(s)") == {"LAD"}
    assert named_locations("blotches over the upper-left field; streaks across the left field") == {
        "upper-left field", "left field"}
    assert named_locations("second diagonal missing; branch of the first obtuse marginal missing") == {
        "second diagonal", "first obtuse marginal"}
    assert named_locations("banding across the frame; vessel contrast reduced by haze over the whole tree") == set()
    assert named_locations("a bladder") == set()   # no "LAD" inside a word


def _smoothing_on_the_wire(scene, severity):
    from casiqa.phantom.failures import Failure

    y, x = np.divmod(int(scene.wire.index[len(scene.wire.index) // 2]), scene.size)
    return Failure("over_smoothing", severity, "central field", [0.0, 0.0, 1.0, 1.0],
                   {"cx": x / scene.size, "cy": y / scene.size, "seed": 1})


def test_over_smoothing_on_the_wire_and_vessels_implies_their_blur(scenes):
    """A rater asked whether the wire is seen sharp marks down a wire the artefact blurred: the
    over-smoothing adds derived wire and vessel blurs that grow with it and are not drawn twice."""
    from casiqa.phantom.failures.derived import derived_failures

    for scene in scenes:
        got = {s: {f.kind: f for f in derived_failures([_smoothing_on_the_wire(scene, s)], scene)} for s in (0.3, 1.0)}
        for kind, metric in (("wire_blur", "guidewire_visibility"), ("vessel_blur", "branch_discernibility")):
            weak, strong = got[0.3][kind], got[1.0][kind]
            assert weak.metric == metric and weak.params["derived_from"] == "over_smoothing"
            assert 0.05 <= weak.severity < strong.severity <= 1.0
        smooth = _smoothing_on_the_wire(scene, 1.0)
        drawn = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=[smooth])
        both = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True,
                           failures=[smooth, *got[1.0].values()])
        np.testing.assert_array_equal(drawn, both)
        assert quality([smooth, *got[1.0].values()], "guidewire_visibility") < 5.0


def test_over_smoothing_away_from_the_wire_implies_nothing_for_it(scenes):
    from casiqa.phantom.failures import Failure
    from casiqa.phantom.failures.derived import derived_failures

    for scene in scenes:
        y, x = np.divmod(scene.wire.index, scene.size)
        # the frame's corner farthest from every wire pixel, with the smallest disc (radius 0.2 + 0.5 * 0.05)
        corners = [(cx, cy) for cx in (0.0, 1.0) for cy in (0.0, 1.0)]
        cx, cy = max(corners, key=lambda c: np.hypot(x / scene.size - c[0], y / scene.size - c[1]).min())
        far = Failure("over_smoothing", 0.05, "corner", [0.0, 0.0, 1.0, 1.0], {"cx": cx, "cy": cy, "seed": 1})
        assert "wire_blur" not in {f.kind for f in derived_failures([far], scene)}


def test_sampled_failures_carry_their_derived_records():
    from casiqa.phantom.failures import sample_failures
    from casiqa.phantom.failures.derived import derived_failures, is_derived

    scene, _ = build_scene(7, 0, CFG)
    seen = 0
    for seed in range(200):
        got = sample_failures(np.random.default_rng(seed), scene, CFG)
        drawn = [f for f in got if not is_derived(f)]
        assert got == drawn + derived_failures(drawn, scene)
        seen += len(got) - len(drawn)
    assert seen > 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_sampled_failure_records_no_severity_its_picture_does_not_show(kind, scenes):
    """The truth is a function of the picture: two draws of a kind at one place that render the
    same image record the same severity (a branch deletion shows how many branches went and
    nothing more of its drawn severity, so it records the middle of its count's severities), and
    draws that record different severities render different images."""
    scene = scenes[0]
    drawn = np.linspace(0.05, 1.0, 9)
    seen: dict[bytes, float] = {}
    for s in drawn:
        failure = KINDS[kind].sample(np.random.default_rng(3), scene, float(s))
        image = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=[failure])
        key = np.round(image, 5).tobytes()
        assert seen.setdefault(key, failure.severity) == failure.severity, \
            f"{kind}: drawn severity {s:.3f} rendered an image another draw rendered, yet records {failure.severity}"
    assert len(set(seen.values())) == len(seen), f"{kind}: one recorded severity rendered two images"


def test_a_deletion_records_the_branches_it_removed():
    from casiqa.phantom.failures.branches import _deleted_count, deletion_severity

    for count in range(1, 5):
        assert _deleted_count(deletion_severity(count), 10) == count
    assert deletion_severity(0) == 0.0
    assert [deletion_severity(_deleted_count(s, 2)) for s in (0.1, 0.3, 0.9)] == [0.125, 0.375, 0.375]


@pytest.mark.parametrize("kind", ["branch_deletion", "discontinuity", "distal_deletion", "wire_gaps"])
def test_a_failure_box_holds_what_it_drew_and_no_more_than_it_needs(kind, scenes):
    """The box says where a failure acts: the pixels it changed lie inside it (a deleted branch's
    twigs go with it), and a failure drawn smaller gets a smaller box (a discontinuity with one gap
    is boxed round that gap, not round the starts of gaps it did not draw)."""
    for scene in scenes:
        clean = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True)
        areas = []
        for s in (0.05, 0.95):
            failure = KINDS[kind].sample(np.random.default_rng(2), scene, s)
            image = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=[failure])
            change = np.abs(image - clean)
            x0, y0, x1, y1 = failure.bbox
            h, w = change.shape
            pad = 3                                                  # px: the rendering's blur reaches past a structure
            inside = np.zeros_like(change, dtype=bool)
            rows = slice(max(int(y0 * h) - pad, 0), int(np.ceil(y1 * h)) + pad)
            cols = slice(max(int(x0 * w) - pad, 0), int(np.ceil(x1 * w)) + pad)
            inside[rows, cols] = True
            share = change[inside].sum() / change.sum()
            assert share > 0.97, f"{kind} at {s}: only {share:.1%} of its change inside its box {failure.bbox}"
            areas.append((x1 - x0) * (y1 - y0))
        assert areas[0] < areas[1], f"{kind}: the milder draw has a box as large or larger ({areas})"


def test_a_distal_deletion_loses_the_share_of_the_tree_its_severity_records(scenes):
    """A distal deletion's cut falls where the contrast it loses (the vessel beyond the cut and the
    branches leaving there, inside the field) is the share of the image's tree its recorded severity
    names, and a more severe draw loses more. Cut as a share of the vessel's length, one severity
    had lost anything from 0.3 % to 17 % of the picture's tree."""
    from unittest.mock import patch

    from casiqa.phantom.failures.base import Failure, View
    from casiqa.phantom.failures.branches import DISTAL_CUT, _cut_point, _mains, distal_share
    from casiqa.phantom.render import contrast_iodine

    def lost(scene, i, cut):
        view = View(vessel_weights=[np.ones(v.thickness.shape) for v in scene.vessels],
                    wire_weight=np.zeros(scene.wire.thickness.shape))
        with patch("casiqa.phantom.failures.branches._cut_point", lambda *_: cut):
            KINDS["distal_deletion"].apply(view, scene, Failure("distal_deletion", 0.5, "", [0, 0, 1, 1], {"branch": i}))
        full = contrast_iodine(scene) * scene.fov
        return float((full - contrast_iodine(scene, view.vessel_weights) * scene.fov).sum() / full.sum())

    checked = 0
    for scene in scenes:
        for i in _mains(scene):
            most = lost(scene, i, DISTAL_CUT[0])                  # all the vessel can lose
            shares = []
            for s in (0.05, 0.5, 0.95):
                with patch("casiqa.phantom.failures.branches._mains", return_value=[i]):   # draw vessel i
                    f = KINDS["distal_deletion"].sample(np.random.default_rng(0), scene, s)
                assert f.params["branch"] == i
                share = lost(scene, i, _cut_point(scene, i, f.severity))
                if distal_share(s) < most:                         # the vessel holds what the draw asks
                    off = share - distal_share(f.severity)          # a cut past the scale records its end
                    past = (f.severity == 1.0 and off > 0) or (f.severity == 0.01 and off < 0)
                    assert abs(off) < 0.01 or past, (scene.tree.system, i, s, share, f.severity)
                    checked += 1
                else:                                              # it loses all it can, and records that
                    assert abs(share - most) < 1e-9 and f.severity <= s + 1e-9, (scene.tree.system, i, s, share, most)
                shares.append(share)
            assert shares[0] <= shares[1] <= shares[2], (scene.tree.system, i, shares)
            assert shares[0] < shares[2], (scene.tree.system, i, shares)
    assert checked >= 6, checked


def test_a_discontinuity_is_drawn_where_a_gap_shows(scenes):
    """Its gaps lie on vessel at least GAP_MIN_RADIUS wide inside the field, apart from each other,
    one more per third of severity and longer the more severe; drawn as a share of the vessel
    anywhere on it, a severe one had fallen on a sub-pixel distal stretch and shown nothing."""
    from casiqa.phantom.failures.branches import GAP_MIN_RADIUS, _gap_count, _gaps
    from casiqa.phantom.geometry import arclength

    for scene in scenes:
        k = scene.size / 512
        for seed in range(4):
            lengths = []
            for s in (0.05, 0.5, 0.95):
                f = KINDS["discontinuity"].sample(np.random.default_rng(seed), scene, s)
                branch = scene.tree.branches[f.params["branch"]]
                t = arclength(branch.points) / arclength(branch.points)[-1]
                gaps = _gaps(scene, f.params["branch"], s, f.params["offsets"])
                assert len(gaps) == _gap_count(s)
                assert all(a[1] < b[0] for a, b in zip(gaps, gaps[1:], strict=False)), gaps   # apart: the count shows
                for t0, t1 in gaps:
                    on = (t >= t0) & (t <= t1)
                    assert on.any() and branch.radii[on].min() >= GAP_MIN_RADIUS * k, (s, t0, t1)
                    x, y = np.round(branch.points[on]).astype(int).T
                    assert scene.fov[y.clip(0, scene.size - 1), x.clip(0, scene.size - 1)].min() > 0.5
                lengths.append(np.mean([t1 - t0 for t0, t1 in gaps]))
                clean = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True)
                image = render_view(scene, np.random.default_rng(5), CFG, contrast=True, wire=True, failures=[f])
                assert np.abs(image - clean).max() > 0.04, f"a discontinuity at {s} does not show"   # 10 grey levels
            assert lengths[0] < lengths[1] < lengths[2], lengths
