"""Profiles across the structures (casiqa/model/profiles.py, MustSettings.pixel_profiles): points on
each structure, normals across it, the sampled dip, and the encoder's invariances."""

import numpy as np
import pytest
import torch

from casiqa.model.config import MustSettings
from casiqa.model.pixel import ALONG, PixelPath, structure_planes
from casiqa.model.profiles import (
    PROFILE_PLANES,
    PROFILE_POINTS,
    PROFILE_SAMPLES,
    ProfileEncoder,
    pick_points,
    point_normals,
    sample_profiles,
    structure_profiles,
)
from finetune.config import CasIqaArguments


def _planes(target, live=None, reference=None):
    path = PixelPath(dim=8, width=8, tophat=5)
    aux = {r: torch.as_tensor(a) for r, a in (("live", live), ("reference", reference)) if a is not None}
    x = path.channels(torch.as_tensor(target), aux)[None]
    return torch.cat([x, path.derived_planes(x)], dim=1)


def _scene(size=56, wire_row=None, fade=1.0):
    """A flat background; a dark wire in column 20 (live frame; the target's at `fade` of its
    contrast) and a dark vessel in columns 39-41 (reference and target). With `wire_row`, the
    wire runs along that row instead (horizontal)."""
    base = np.full((size, size), 0.6, np.float32)
    live, reference = base.copy(), base.copy()
    if wire_row is None:
        live[:, 20] -= 0.3
    else:
        live[wire_row, :] -= 0.3
    reference[:, 39:42] -= 0.3
    target = reference.copy()
    if wire_row is None:
        target[:, 20] -= 0.3 * fade
    else:
        target[wire_row, :] -= 0.3 * fade
    return target, live, reference


def test_points_lie_on_each_structure_and_none_without_its_image():
    target, live, reference = _scene()
    w = structure_planes(_planes(target, live, reference))
    points, valid = pick_points(w, ALONG, 16)
    assert points.shape == (1, len(ALONG), 16, 2) and valid.all()
    assert set(points[0, 0, :, 1].tolist()) == {20.0}                       # the live frame's wire
    assert set(points[0, 1, :, 1].tolist()) == {20.0}                       # the target's own wire
    assert points[0, 2, :, 1].min() >= 39 and points[0, 2, :, 1].max() <= 41  # the vessel
    assert points[0, 0, :, 0].max() - points[0, 0, :, 0].min() > 30         # spread along the wire, not bunched
    again, _ = pick_points(w, ALONG, 16)
    assert torch.equal(points, again)                                       # deterministic
    _, alone = pick_points(structure_planes(_planes(target)), ALONG, 16)    # no auxiliary image
    assert not alone[0, 0].any() and not alone[0, 2].any()


def test_centre_lines_run_along_the_middle_of_a_structure_whatever_its_width():
    from casiqa.model.profiles import centre_lines

    w = torch.zeros(1, 2, 32, 32)
    w[0, 0, 10:17, 4:28] = torch.tensor([0.2, 0.5, 0.8, 1.0, 0.8, 0.5, 0.2])[:, None]   # a wide horizontal vessel
    idx = torch.arange(4, 28)
    w[0, 1, idx, idx] = 1.0                                                            # a thin diagonal one
    ridge = centre_lines(w)[0]
    assert ridge[0, 13, 6:26].all() and not ridge[0, 11, 6:26].any() and not ridge[0, 15, 6:26].any()
    assert ridge[1, idx[2:-2], idx[2:-2]].all() and not ridge[1, idx[2:-2], idx[2:-2] + 2].any()


def test_points_on_centre_lines_are_spread_by_length_not_area():
    w = torch.zeros(1, 1, 64, 64)
    d = (torch.arange(64.0) - 14) / 4.5
    w[0, 0, 8:40] = (1 - d ** 2).clamp(min=0).sqrt()    # a main vessel 9 px wide (a tube's projected depth)
    w[0, 0, 8:40, 45] = 0.5                             # a branch 1 px wide, as long
    by_area, _ = pick_points(w, ("true vessels",), 40)
    by_length, valid = pick_points(w, ("true vessels",), 40, centre=True)
    thin = lambda p: float((p[0, 0, :, 1] > 30).float().mean())     # noqa: E731
    assert thin(by_area) < 0.15 and 0.35 < thin(by_length) < 0.65 and valid.all()
    # devices keep their points by strength: centre lines are for the vessels only
    same, _ = pick_points(w.expand(1, 2, -1, -1), ("live devices", "target devices"), 40, centre=True)
    plain, _ = pick_points(w.expand(1, 2, -1, -1), ("live devices", "target devices"), 40)
    assert torch.equal(same, plain)


@pytest.mark.parametrize("wire_row", [None, 30])
def test_normals_point_across_the_structure(wire_row):
    target, live, reference = _scene(wire_row=wire_row)
    w = structure_planes(_planes(target, live, reference))
    points, _ = pick_points(w, ALONG, 8)
    n = point_normals(w, points)[0, 0]                                      # across the live wire
    inner = (points[0, 0, :, 0 if wire_row is None else 1] - 28).abs() < 20  # away from the frame's edge
    across = n[inner, 1 if wire_row is None else 0].abs()
    assert across.min() > 0.99


def test_profiles_show_the_dip_and_its_fade():
    target, live, reference = _scene()
    faded, _, _ = _scene(fade=0.3)
    prof = {}
    for name, t in (("intact", target), ("faded", faded)):
        x = _planes(t, live, reference)
        p, valid = structure_profiles(x, structure_planes(x), ALONG, n=8)
        assert p.shape == (1, len(ALONG), 8, len(PROFILE_PLANES), PROFILE_SAMPLES) and valid.all()
        prof[name] = p[0, 0, :, 3]                                          # target - reference across the live wire
    mid, edge = PROFILE_SAMPLES // 2, 0
    intact_dip = (prof["intact"][:, edge] - prof["intact"][:, mid]).mean()
    faded_dip = (prof["faded"][:, edge] - prof["faded"][:, mid]).mean()
    assert intact_dip > 0.5 and faded_dip < 0.5 * intact_dip


def test_sampling_is_bilinear_across_the_normal():
    planes = torch.arange(10.0).repeat(10, 1)[None, None]                   # value = x
    points = torch.tensor([[[[5.0, 4.0]]]])                                 # y 5, x 4
    normal = torch.tensor([[[[0.0, 1.0]]]])                                 # along +x
    out = sample_profiles(planes, points, normal, half_px=1.0, samples=5)
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor([3.0, 3.5, 4.0, 4.5, 5.0]))


def test_encoder_is_flip_invariant_and_zero_without_points():
    torch.manual_seed(0)
    enc = ProfileEncoder(len(ALONG), 6)
    prof = torch.randn(2, len(ALONG), 5, len(PROFILE_PLANES), PROFILE_SAMPLES)
    valid = torch.ones(2, len(ALONG), 5, dtype=torch.bool)
    valid[1, 2] = False
    out = enc(prof, valid)
    assert out.shape == (2, len(ALONG), 6)
    assert torch.allclose(out, enc(prof.flip(-1), valid), atol=1e-5)       # the normal's sign does not matter
    assert torch.allclose(out, enc(prof[:, :, torch.randperm(5)], valid), atol=1e-5)  # a set: order does not matter
    assert torch.equal(out[1, 2], torch.zeros(6))
    valid[0, 0, 3:] = False                                                 # invalid points are ignored
    changed = prof.clone()
    changed[0, 0, 3:] = 100.0
    assert torch.allclose(enc(prof, valid)[0, 0], enc(changed, valid)[0, 0])


def test_path_adds_the_profiles_to_the_summary_and_they_train():
    torch.manual_seed(0)
    plain = PixelPath(dim=16, width=8, tophat=5, dense=3, along=True, along_own=True)
    path = PixelPath(dim=16, width=8, tophat=5, dense=3, along=True, along_own=True, profiles=4)
    target, live, reference = _scene()
    x = _planes(target, live, reference)
    _, _, summary = path(x, dense=True, along=True)
    assert path.along_dim == plain.along_dim + len(ALONG) * 4 and summary.shape == (1, path.along_dim)
    summary.square().sum().backward()
    assert path.profiles.point[0][0].weight.grad.abs().sum() > 0            # the live devices' encoder learns
    assert PROFILE_POINTS > 0


def test_profiles_need_the_summary_along_the_structures():
    with pytest.raises(ValueError, match="pixel_profiles needs pixel_along"):
        PixelPath(dim=16, width=8, tophat=5, profiles=4)
    with pytest.raises(ValueError, match="pixel_profiles needs pixel_along"):
        MustSettings(pixel_tophat=5, pixel_profiles=4)
    with pytest.raises(ValueError, match="number of features"):
        CasIqaArguments(pixel_tophat=5, pixel_along=True, pixel_profiles=-1)


def _scored_must():
    from casiqa.metrics import METRICS
    from casiqa.model.levels import LEVELS
    from casiqa.model.must import Must

    torch.manual_seed(0)
    return Must(MustSettings(pixel_tophat=5, profile_scores=True), dim=16, patch_dim=8, metrics=METRICS,
                n_levels=len(LEVELS), n_paths=1).eval()


def _wire_rows(n=24, size=56):
    """PixelRows of a learnable toy: the target's wire faded by a random share, the guidewire MOS
    falling with it (live and reference given, derived planes cached as stage 1 caches them)."""
    from casiqa.model.levels import soft_levels
    from finetune.warmup import PixelRows

    rng = np.random.default_rng(0)
    path = PixelPath(dim=8, width=8, tophat=5)
    fade = rng.uniform(0, 1, n)
    target, aux, planes = [], [], []
    for f in fade:
        t, live, reference = _scene(size, fade=1.0 - float(f))
        t = t + rng.normal(0, 0.01, t.shape).astype(np.float32)
        target.append(torch.as_tensor(t).half())
        aux.append({"live": torch.as_tensor(live).half(), "reference": torch.as_tensor(reference).half()})
        x = path.channels(torch.as_tensor(t), {"live": torch.as_tensor(live), "reference": torch.as_tensor(reference)})
        planes.append(path.derived_planes(x[None])[0].half())
    mos = np.stack([5.0 - 4.0 * fade, np.full(n, 4.0), np.full(n, 4.0)], 1).astype(np.float32)
    levels = soft_levels(torch.tensor(mos), torch.full((n, 3), 0.3))
    return PixelRows(target, aux, levels, mos, [None] * n, tophat=planes)


def test_scorer_moves_no_score_until_trained_and_only_its_metrics_after():
    from casiqa.metrics import METRICS

    must = _scored_must()
    scorer = must.profile_scorer
    assert scorer.scored == ("guidewire_visibility", "branch_discernibility")
    target, live, reference = _scene()
    x = _planes(target, live, reference)
    heads = must.score_pixels(x[:, :8])[0]
    scorer.trained.fill_(1.0)
    mixed = must.score_pixels(x[:, :8])[0]
    art = METRICS.index("artifact_interference")
    assert torch.equal(mixed[:, art], heads[:, art])
    assert not torch.allclose(mixed[:, 0].softmax(-1), heads[:, 0].softmax(-1))
    # the two level distributions averaged
    own = scorer(*scorer.profiles(x)).softmax(-1)[:, 0]
    p = mixed[:, 0].softmax(-1)
    assert torch.allclose(p, 0.5 * heads[:, 0].softmax(-1) + 0.5 * own, atol=1e-5)
    for share in (0.0, 0.8, 1.0):                                     # the scorer's share of the mixture
        scorer.share[0] = share
        p = must.score_pixels(x[:, :8])[0][:, 0].softmax(-1)
        assert torch.allclose(p, (1 - share) * heads[:, 0].softmax(-1) + share * own, atol=1e-5)
    scorer.share.fill_(0.5)
    must.train()                                                     # training: the heads alone
    with torch.no_grad():
        trained = must.score_pixels(x[:, :8])[0]
        scorer.trained.fill_(0.0)
        assert torch.equal(must.score_pixels(x[:, :8])[0], trained)


def test_scorer_without_its_structure_leaves_the_heads_scores(monkeypatch):
    must = _scored_must()
    scorer = must.profile_scorer
    target, _, _ = _scene()
    x = _planes(target)
    before = must.score_pixels(x[:, :8])[0]
    scorer.trained.fill_(1.0)
    assert torch.equal(must.score_pixels(x[:, :8])[0], before)
    # nothing to read in one view is nothing in any: the other seven views are not sampled
    sampled = []
    profiles = type(scorer).profiles
    monkeypatch.setattr(type(scorer), "profiles", lambda self, y, *a: sampled.append(1) or profiles(self, y, *a))
    heads = torch.randn(1, 3, 5)
    assert torch.equal(scorer.mix(heads, x, views=True), heads)
    assert len(sampled) == 1


def test_profile_stage_learns_the_fade_and_marks_the_scorer_trained(monkeypatch):
    from finetune.profile_warmup import ProfileWarmupConfig, fit_shares, profile_rows, profile_warm_up

    must = _scored_must()
    rows = _wire_rows()
    profiles, valid = profile_rows(must, rows)
    assert profiles.shape[:3] == (len(rows), 2, 256) and valid.all()
    before = {k: v.clone() for k, v in must.profile_scorer.state_dict().items()}
    log = profile_warm_up(must, rows, rows, ProfileWarmupConfig(epochs=10, batch_size=8, train_points=32))
    assert len(log) == 10 and log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["val_guidewire_visibility_srcc"] > 0.8
    after = must.profile_scorer.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k != "trained")
    assert float(must.profile_scorer.trained) == 1.0
    # the untrained heads know nothing of the fade (they rank it backwards): the mixture ranks as the
    # scorer alone does, and of equal shares the even one is kept; the constant branch MOS ranks nothing
    shares = fit_shares(must, rows)
    wire = shares["guidewire_visibility"]
    assert wire["heads_srcc"] < 0.5 < wire["scorer_srcc"] and wire["mixed_srcc"] == wire["scorer_srcc"]
    assert wire["share"] == 0.5 and float(must.profile_scorer.share[0]) == 0.5
    assert shares["branch_discernibility"]["share"] == 0.5
    assert float(must.profile_scorer.trained) == 1.0
    # heads that rank the MOS exactly and a scorer that ranks it backwards: the heads keep the mixture
    monkeypatch.setattr("finetune.warmup.predict", lambda must, val: val.mos.copy())
    last = must.profile_scorer.heads[0][-1]
    last.weight.data.copy_(last.weight.data.flip(0))                  # level 1 <-> 5, 2 <-> 4
    last.bias.data.copy_(last.bias.data.flip(0))
    wire = fit_shares(must, rows)["guidewire_visibility"]
    assert wire["scorer_srcc"] < -0.5 and wire["heads_srcc"] == 1.0 == wire["mixed_srcc"]
    assert wire["share"] < 0.5 and float(must.profile_scorer.share[0]) == pytest.approx(wire["share"])


def test_profile_stage_under_bf16_autocast_learns_the_fade_and_keeps_fp32_weights():
    from finetune.profile_warmup import ProfileWarmupConfig, profile_warm_up

    must = _scored_must()
    rows = _wire_rows()
    log = profile_warm_up(must, rows, rows, ProfileWarmupConfig(epochs=10, batch_size=8, train_points=32, bf16=True))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["val_guidewire_visibility_srcc"] > 0.8
    assert all(p.dtype == torch.float32 for p in must.profile_scorer.parameters())


def test_points_read_the_damage_map_cell_they_fall_in():
    from finetune.profile_warmup import point_damage

    d = torch.zeros(3, 4, 4)
    d[0, 1, 2] = 0.7                                        # guidewire map: the cell of px y 4-7, x 8-11 at 16 px
    d[1, 3, 0] = 0.4                                        # branches map: y 12-15, x 0-3
    points = torch.tensor([[[[5.0, 9.0], [0.0, 0.0]], [[13.0, 2.0], [5.0, 9.0]]]])   # [N=1, S=2, n=2, (y, x)]
    labels, known = point_damage([d], points, (16, 16), [0, 1])
    assert labels.tolist() == [[[pytest.approx(0.7), 0.0], [pytest.approx(0.4), 0.0]]]
    labels, known = point_damage([None, d], points.expand(2, -1, -1, -1), (16, 16), [0, 1])
    assert known.tolist() == [False, True] and labels[0].abs().sum() == 0


def test_profile_stage_point_loss_learns_where_the_damage_is_and_is_not_kept():
    from finetune.profile_warmup import ProfileWarmupConfig, profile_warm_up

    must = _scored_must()
    rows = _wire_rows()
    keys = set(must.profile_scorer.state_dict())
    # the guidewire's damage: the fade's severity on the wire's cells (column 20 of 56 px: cell 5 of 14)
    rows.damage = []
    for mos in rows.mos[:, 0]:
        d = torch.zeros(3, 14, 14)
        d[0, :, 5] = float((5.0 - mos) / 4.0)
        rows.damage.append(d.half())
    log = profile_warm_up(must, rows, rows, ProfileWarmupConfig(epochs=6, batch_size=8, train_points=32,
                                                                 point_weight=1.0))
    assert all("point_loss" in e for e in log) and log[-1]["point_loss"] < log[0]["point_loss"]
    assert set(must.profile_scorer.state_dict()) == keys          # the probe is not part of the model
    rows.damage = None
    with pytest.raises(ValueError, match="dense damage maps"):
        profile_warm_up(_scored_must(), rows, None, ProfileWarmupConfig(epochs=1, point_weight=1.0))


def test_profile_scores_need_the_pixel_path_and_stage_one():
    with pytest.raises(ValueError, match="profile_scores finds the structures"):
        MustSettings(profile_scores=True)
    with pytest.raises(ValueError, match="profile_scores needs"):
        CasIqaArguments(pixel_tophat=5, profile_scores=True)
    with pytest.raises(ValueError, match="profile_point_weight reads the rows' dense damage maps"):
        CasIqaArguments(pixel_tophat=5, pixel_warmup_epochs=1, profile_scores=True, profile_point_weight=1.0)
    for points in (0, 257):                                          # a batch's points: some of each image's 256
        with pytest.raises(ValueError, match="profile_train_points must be 1..256"):
            CasIqaArguments(profile_train_points=points)
    with pytest.raises(ValueError, match="profile_weight_decay must be >= 0"):
        CasIqaArguments(profile_weight_decay=-0.1)


def test_profile_stage_refuses_rows_without_the_structures():
    from finetune.profile_warmup import ProfileWarmupConfig, profile_warm_up

    rows = _wire_rows(n=4)
    rows.aux = [{} for _ in rows.aux]
    rows.tophat = None
    with pytest.raises(ValueError, match="no training row shows the structure guidewire_visibility"):
        profile_warm_up(_scored_must(), rows, None, ProfileWarmupConfig(epochs=1))
    with pytest.raises(ValueError, match="use_aux false"):
        CasIqaArguments(pixel_tophat=5, pixel_warmup_epochs=1, profile_scores=True, use_aux=False)


def test_scorer_over_the_eight_views_does_not_change_with_orientation():
    from casiqa.model.pixel import dihedral

    must = _scored_must()
    scorer = must.profile_scorer
    scorer.trained.fill_(1.0)
    rng = np.random.default_rng(1)
    target, live, reference = (a + rng.normal(0, 0.05, a.shape).astype(np.float32) for a in _scene())
    target[10:14, 18:23] = 0.6                                             # a gap: an asymmetric wire
    x = _planes(target, live, reference)
    heads = torch.randn(1, 3, 5)
    given = scorer.mix(heads, x, views=True)
    turned = [dihedral(x, k, flip) for k, flip in ((1, False), (2, True), (3, False))]
    for y in turned:
        assert torch.allclose(scorer.mix(heads, y, views=True), given, atol=1e-4)
    # one view alone is not invariant: its points, spread in raster order, move with the turn
    assert any(not torch.allclose(scorer.mix(heads, y), scorer.mix(heads, x), atol=1e-4) for y in turned)


def test_scorer_losses_pull_the_expected_score_to_the_mos():
    from casiqa.model.levels import expected_score
    from finetune.profile_warmup import ProfileWarmupConfig, scorer_loss

    with pytest.raises(ValueError, match="profile loss 'rank'"):
        ProfileWarmupConfig(loss="rank")
    with pytest.raises(ValueError, match="profile loss 'rank'"):                 # at parse time, before stage 1
        CasIqaArguments(profile_loss="rank")
    mos = torch.tensor([[1.5, 4.5]])
    soft = torch.tensor([[[0.5, 0.5, 0, 0, 0], [0, 0, 0, 0.5, 0.5]]])
    for loss in ("levels", "mos", "both"):
        logits = torch.zeros(1, 2, 5, requires_grad=True)
        opt = torch.optim.SGD([logits], lr=1.0)
        for _ in range(200):
            opt.zero_grad()
            scorer_loss(logits, soft, mos, loss).backward()
            opt.step()
        assert torch.allclose(expected_score(logits.detach()), mos, atol=0.1), loss
    # the MOS loss is zero where the expected score meets the MOS, whatever the spread of the levels
    flat = torch.zeros(1, 1, 5)
    assert scorer_loss(flat, soft[:, :1], torch.tensor([[3.0]]), "mos").item() == 0.0
    assert scorer_loss(flat, soft[:, :1], torch.tensor([[3.0]]), "levels").item() > 0.0


def test_scorer_window_sets_the_profiles_it_reads():
    from casiqa.metrics import METRICS
    from casiqa.model.profiles import ProfileScorer

    scorer = ProfileScorer(METRICS, 5, half_px=12.0, samples=41)
    x = _planes(*_scene())
    profiles, valid = scorer.profiles(x)
    assert profiles.shape[-1] == 41 and valid.any()
    assert scorer(profiles, valid).shape == (1, 2, 5)
    # the model's settings carry the window to MUST's scorer (and so into a saved config)
    from casiqa.model.levels import LEVELS
    from casiqa.model.must import Must

    must = Must(MustSettings(pixel_tophat=5, profile_scores=True, profile_half_px=12.0, profile_samples=41), dim=16,
                patch_dim=8, metrics=METRICS, n_levels=len(LEVELS), n_paths=1)
    assert (must.profile_scorer.half_px, must.profile_scorer.samples) == (12.0, 41)
    with pytest.raises(ValueError, match="profile_samples >= 5"):
        MustSettings(pixel_tophat=5, profile_scores=True, profile_samples=3)


def test_the_scorer_share_is_saved_and_older_checkpoints_mix_evenly(tmp_path):
    from safetensors.torch import load_file, save_file

    from casiqa.model.loading import CheckpointError, TinySpec, build_tiny, load, save

    model, processor = build_tiny(TinySpec(must=MustSettings(pixel_tophat=5, profile_scores=True)))
    scorer = model.model.must.profile_scorer
    assert scorer.share.tolist() == [0.5, 0.5]
    scorer.share.copy_(torch.tensor([0.8, 0.3]))
    save(model, processor, tmp_path / "m")
    assert load(tmp_path / "m")[0].model.must.profile_scorer.share.tolist() == pytest.approx([0.8, 0.3])
    weights = load_file(tmp_path / "m" / "model.safetensors")
    del weights["model.must.profile_scorer.share"]                   # saved before the share existed
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    older = load(tmp_path / "m")[0].model.must.profile_scorer
    assert older.share.tolist() == [0.5, 0.5]
    assert torch.equal(older.heads[0][-1].weight, scorer.heads[0][-1].weight)
    del weights["model.must.profile_scorer.trained"]                 # any other missing weight is refused
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="profile_scorer.trained"):
        load(tmp_path / "m")


def test_profiles_along_the_structure_show_a_gap_that_profiles_across_miss():
    """Along the wire (the tangent through the point), a gap in the target's wire shows as the
    target plane's dark line vanishing over exactly the gap's rows; the across half is unchanged."""
    target, live, reference = _scene()
    gapped = target.copy()
    gapped[26:31, 20] += 0.3                                                # a 5 px gap in the target's wire
    points = torch.tensor([[[[24.0, 20.0]]]])                               # 2 px before the gap, on the wire
    normal = torch.tensor([[[[0.0, 1.0]]]])                                 # across: along +x
    got = {}
    for name, t in (("intact", target), ("gapped", gapped)):
        x = _planes(t, live, reference)[:, list(PROFILE_PLANES)]
        got[name] = sample_profiles(x, points, normal, half_px=8.0, samples=17, along=True)[0, 0, 0]
    planes = len(PROFILE_PLANES)
    assert got["intact"].shape == (2 * planes, 17)
    assert torch.allclose(got["intact"][:planes], got["gapped"][:planes])   # across the point: no change
    # the tangent is the normal turned a quarter, (y, x) = (1, 0): samples at rows 16..32 in 1 px steps
    along = got["gapped"][planes] - got["intact"][planes]                   # the target plane, along the wire
    assert torch.allclose(along[10:15], torch.full((5,), 0.3), atol=1e-5)   # rows 26-30: the gap
    assert along[:10].abs().max() < 1e-5 and along[15:].abs().max() < 1e-5


def test_the_scorer_along_reads_twice_the_planes_and_keeps_its_symmetry():
    from casiqa.metrics import METRICS
    from casiqa.model.levels import LEVELS
    from casiqa.model.must import Must
    from casiqa.model.profiles import ProfileScorer

    torch.manual_seed(0)
    scorer = ProfileScorer(METRICS, 5, half_px=8.0, samples=17, along=True).eval()
    profiles, valid = scorer.profiles(_planes(*_scene()))
    assert profiles.shape[-2:] == (2 * len(PROFILE_PLANES), 17) and valid.any()
    logits = scorer(profiles, valid)
    assert logits.shape == (1, 2, 5)
    # flipping the normal flips the tangent too: one mirror of both halves changes nothing
    assert torch.allclose(logits, scorer(profiles.flip(-1), valid), atol=1e-5)
    must = Must(MustSettings(pixel_tophat=5, profile_scores=True, profile_along=True), dim=16, patch_dim=8,
                metrics=METRICS, n_levels=len(LEVELS), n_paths=1)
    assert must.profile_scorer.along
    assert not Must(MustSettings(pixel_tophat=5, profile_scores=True), dim=16, patch_dim=8, metrics=METRICS,
                    n_levels=len(LEVELS), n_paths=1).profile_scorer.along


def test_mixup_takes_each_rows_share_of_points_from_itself_and_the_rest_from_its_partner():
    from finetune.profile_warmup import mix_draw, mix_points

    x = torch.arange(2 * 2 * 4, dtype=torch.float32).reshape(2, 2, 4)            # [B, S, n]
    share = torch.tensor([[0.5, 1.0], [0.25, 1.0]])                                 # the second structure not mixed
    out = mix_points(x, share, torch.tensor([1, 0]))
    assert out.tolist() == [[[0, 1, 10, 11], [4, 5, 6, 7]], [[8, 1, 2, 3], [12, 13, 14, 15]]]
    profiles = torch.randn(2, 2, 4, 3, 5)                                           # per-point trailing dims follow
    assert torch.equal(mix_points(profiles, share, torch.tensor([1, 0]))[0, 0, 2:], profiles[1, 0, 2:])
    lam, other = mix_draw(64, 0.4, "points", 128)
    assert torch.equal(lam * 128, (lam * 128).round()) and sorted(other.tolist()) == list(range(64))


@pytest.mark.parametrize("of", ["points", "features"])
def test_profile_stage_with_mixup_still_learns_the_fade(of):
    from finetune.profile_warmup import ProfileWarmupConfig, profile_warm_up

    must = _scored_must()
    rows = _wire_rows()
    log = profile_warm_up(must, rows, rows, ProfileWarmupConfig(epochs=10, batch_size=8, train_points=32, mixup=0.4,
                                                                 mixup_of=of, mixup_metrics=("guidewire_visibility",)))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["val_guidewire_visibility_srcc"] > 0.8


def test_a_mixup_that_cannot_run_is_refused_at_parse_time():
    from finetune.config import CasIqaArguments
    from finetune.profile_warmup import ProfileWarmupConfig

    with pytest.raises(ValueError, match="profile mixup must be >= 0"):
        CasIqaArguments(profile_mixup=-0.1)
    with pytest.raises(ValueError, match="mixup_of 'tokens' is not one of"):
        CasIqaArguments(profile_mixup_of="tokens")
    with pytest.raises(ValueError, match=r"\['artifact_interference'\] are not scored from profiles"):
        ProfileWarmupConfig(mixup_metrics=("artifact_interference",))


def test_views_sample_the_turned_images_and_their_points_read_the_turned_damage_maps():
    from casiqa.model.pixel import DIHEDRAL
    from finetune.profile_warmup import profile_rows_at, stacked_views, view_damage

    must = _scored_must()
    rows = _wire_rows(n=4)
    views = (DIHEDRAL[0], (0, True), (1, False))                   # as given, flipped left-right, a quarter turn
    profiles, valid, points = stacked_views(must, rows, views)
    assert profiles.shape[:4] == (3, 4, 2, 256) and valid.shape == (3, 4, 2, 256)
    as_given = profile_rows_at(must, rows)
    assert torch.equal(profiles[0], as_given[0]) and torch.equal(points[0], as_given[2])
    wire = points[:, :, 0][valid[:, :, 0]].reshape(3, -1, 2).float()   # the guidewire's points, per view
    assert (wire[0, :, 1] - 20).abs().max() <= 1                   # the wire in column 20 of 56 px...
    assert (wire[1, :, 1] - 35).abs().max() <= 1                   # ...flipped: column 35
    assert (wire[2, :, 0] - 35).abs().max() <= 1                   # ...turned a quarter (counter-clockwise): row 35
    damage = [torch.zeros(3, 14, 14) for _ in range(4)]
    for d in damage:
        d[0, :, 5] = 0.8                                           # the wire's cells: column 5 of 14
    labels, known = view_damage(damage, views, points, (56, 56), [0, 1])
    assert known.all() and labels.shape == (3, 4, 2, 256)
    on_wire = labels[:, :, 0][valid[:, :, 0]].reshape(3, -1)
    assert torch.allclose(on_wire, torch.tensor(0.8)) and labels[:, :, 1].abs().max() == 0   # every view finds it


def test_profile_stage_over_the_eight_views_learns_the_fade():
    from finetune.profile_warmup import ProfileWarmupConfig, profile_warm_up

    must = _scored_must()
    rows = _wire_rows()
    log = profile_warm_up(must, rows, rows, ProfileWarmupConfig(epochs=10, batch_size=8, train_points=32, views=8))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["val_guidewire_visibility_srcc"] > 0.8


def test_views_that_do_not_exist_are_refused_at_parse_time():
    from finetune.config import CasIqaArguments
    from finetune.profile_warmup import ProfileWarmupConfig

    for bad in (0, 9):
        with pytest.raises(ValueError, match="profile views must be 1..8"):
            CasIqaArguments(profile_views=bad)
        with pytest.raises(ValueError, match="profile views must be 1..8"):
            ProfileWarmupConfig(views=bad)
