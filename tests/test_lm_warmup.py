"""Language warm-up: the language model alone learns the answers from the rows' text; nothing else moves."""

import torch

from casiqa.metrics import METRICS


def _small():
    from casiqa.model import MustSettings
    from casiqa.model.findings import phantom_vocabulary
    from casiqa.model.loading import TinySpec, build_tiny

    must = MustSettings(pixel_tophat=5, findings=phantom_vocabulary(METRICS))
    return build_tiny(TinySpec(hidden=64, layers=1, vision_depth=2, vision_hidden=32, image_size=112, must=must))


def test_text_rows_read_no_image_and_the_text_batch_labels_the_answer(phantom):
    from finetune.data import Collator, answer_json, load_rows
    from finetune.lm_warmup import text_rows

    rows = load_rows(phantom, "train")
    text = text_rows(rows)
    assert len(text) == len(rows)
    assert set(text[0]) == {"id", "scores", "facts", "failures", "live", "reference"}
    assert text[0]["live"] is True and text[0]["id"] == rows[0]["id"]   # a flag, not a decoded image
    model, processor = _small()
    batch = Collator(processor, aux_drop=0.0, vocab=model.model.must.vocab).text_batch(text[:3])
    assert batch.pop("answer_span") == max(int((batch["labels"][i] != -100).sum()) for i in range(3))
    tok = processor.tokenizer
    assert "pixel_values" not in batch
    for i in range(3):
        labels = batch["labels"][i]
        assert tok.decode(labels[labels != -100]) == answer_json(text[i]) + "<|im_end|>\n"
        prompt = tok.decode(batch["input_ids"][i][batch["attention_mask"][i] > 0])
        assert "Findings:" in prompt and "<|image_pad|>" not in prompt


def test_warm_up_trains_the_language_model_only(phantom):
    from finetune.data import Collator, load_rows
    from finetune.lm_warmup import LmWarmupConfig, lm_warm_up

    model, processor = _small()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    collator = Collator(processor, vocab=model.model.must.vocab)
    history = lm_warm_up(model, collator, load_rows(phantom, "train"), LmWarmupConfig(steps=4, batch_size=4),
                         log=lambda e: None)
    assert [e["lm_warmup_step"] for e in history] == [1, 2, 3, 4]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k for k in changed) and any("lm_head" in k or "embed" in k for k in changed)
    assert not any(".must." in k or ".visual." in k for k in changed)
    assert all(p.requires_grad for p in model.parameters())   # the flags are put back
