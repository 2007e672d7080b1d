import json
from types import SimpleNamespace

from casiqa.metrics import METRICS
from finetune.card import write_card


def test_card_records_measured_figures_and_warmup_history(tmp_path):
    (tmp_path / "pixel-warmup").mkdir()
    history = [{"step": 90 * e, "epoch": float(e), "loss": 2.0 / e, **{f"val_{m}_srcc": 0.1 * e for m in METRICS}}
               for e in (1, 2)]
    (tmp_path / "pixel-warmup" / "history.json").write_text(json.dumps(history))
    args = SimpleNamespace(data="data/phantom", must=True, use_aux=True, image_size=224, pixel_warmup_epochs=2,
                           pixel_warmup_batch_size=32, pixel_warmup_lr=2e-3, pixel_warmup_evidence_weight=1.0,
                           pixel_warmup_metric_weights=[2.0, 1.0, 1.0], pixel_tophat=5, freeze_pixel_path=True,
                           pixel_warmup_dense_weight=1.0, pool="attention+mass", pixel_pool="max+mean",
                           pixel_warmup_score_weight=0.5, pixel_warmup_dense_damaged_weight=10.0,
                           dihedral_scores=True, prompt_scores="heads", answer_facts="plain")
    training = SimpleNamespace(seed=0, max_steps=60, per_device_train_batch_size=16, learning_rate=5e-4)
    test = {m: {"srcc": 0.5, "plcc": 0.6, "krcc": 0.4, "rmse": 0.9} for m in METRICS} | {"n": 355}
    write_card(tmp_path, args, training, SimpleNamespace(model_name_or_path="tiny"), {"test": test},
               command="python -m finetune.sft --config x.yaml", wall_s=1387.0, n_params=6_300_000, commit="abc1234")
    card = (tmp_path / "README.md").read_text()
    assert "commit abc1234." in card    # the commit the run started from, not whatever HEAD is at its end
    assert "23.1 min" in card and "6.3 M parameters" in card and "224 px" in card
    assert "top-hat planes of 5 px" in card and "metric weights 2/1/1" in card
    assert "dense damage maps weight 1 (damaged cells x10)" in card and "mass pooling" in card
    assert "max+mean token pooling" in card and "score squared-error weight 0.5" in card
    assert "averaged over the eight flips and rotations" in card
    assert "show as the heads' result the stage-1 heads' scores of each row" in card
    assert "explain each recorded failure by its kind and severity alone (answer_facts: plain)" in card
    assert "| 2 | 0.200 | 0.200 | 0.200 |" in card          # the warm-up history, one row per epoch
    assert "| guidewire_visibility | 0.500 | 0.600 | 0.400 | 0.900 |" in card


def test_card_says_how_the_profile_scorer_was_trained_and_over_which_views(tmp_path):
    base = dict(data="data/phantom", must=True, use_aux=True, image_size=224, pixel_warmup_epochs=2,
                pixel_warmup_batch_size=32, pixel_warmup_lr=2e-3, pixel_warmup_evidence_weight=1.0,
                pixel_warmup_metric_weights=[1.0, 1.0, 1.0], pixel_tophat=5, profile_scores=True,
                profile_epochs=30, profile_train_points=64, profile_along=True)
    training = SimpleNamespace(seed=0, max_steps=60, per_device_train_batch_size=16, learning_rate=5e-4)
    test = {m: {"srcc": 0.5, "plcc": 0.6, "krcc": 0.4, "rmse": 0.9} for m in METRICS} | {"n": 355}
    cards = {}
    for views in (1, 8):
        out = tmp_path / str(views)
        out.mkdir()
        write_card(out, SimpleNamespace(**base, profile_views=views), training,
                   SimpleNamespace(model_name_or_path="tiny"), {"test": test}, command="python -m finetune.sft",
                   wall_s=60.0, n_params=1_000_000, commit="abc1234")
        cards[views] = (out / "README.md").read_text()
    assert "30 epochs of 64 points per image and structure per batch, weight decay" in cards[1]
    assert "across and along the structure" in cards[1] and "flips and quarter turns" not in cards[1]
    assert "structure per batch (each row in one of 8 of its flips and quarter turns), weight decay" in cards[8]
