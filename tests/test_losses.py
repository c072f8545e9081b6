"InfoNCE: the formula written out, torch's cross_entropy, and the modules' wiring."
import math
import tempfile

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from hybrid_batch.losses import InfoNCE, InfoNCELoss, cosine_scores, info_nce, loss_from_embeddings

def _formula(S, tau, offset=0):
    "-(1/B) sum_i log(exp(S[i, offset+i]/tau) / sum_j exp(S[i, j]/tau)), with Python floats."
    rows = S.tolist()
    return -sum(r[offset + i] / tau - math.log(sum(math.exp(x / tau) for x in r)) for i, r in enumerate(rows)) / len(rows)

def test_hand_made_two_by_two():
    "Orthogonal unit queries pointing at their passages: loss = log(1 + e^(-1/tau))."
    q, p = torch.eye(2, dtype=torch.float64), torch.tensor([[5., 0.], [0., .5]], dtype=torch.float64)
    for tau in (1.0, 0.1, 0.05):
        assert loss_from_embeddings(q, p, temperature=tau).item() == pytest.approx(math.log1p(math.exp(-1 / tau)), rel=1e-5)

def test_hard_negative_that_equals_the_positive_halves_the_probability():
    q = torch.eye(2)
    p, hard = q.clone(), q.clone()
    tau = 0.01   # in-batch negative contributes ~0; the duplicate hard negative takes half the mass
    assert loss_from_embeddings(q, p, hard, temperature=tau).item() == pytest.approx(math.log(2), rel=1e-4)

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(0, 3), st.sampled_from([0.05, 0.1, 1.0]), st.booleans(), st.integers(0, 10**6))
def test_matches_the_formula_and_cross_entropy(B, k, tau, symmetric, seed):
    g = torch.Generator().manual_seed(seed)
    q, p = torch.randn(B, 8, generator=g, dtype=torch.float64), torch.randn(B, 8, generator=g, dtype=torch.float64)
    hard = torch.randn(B, k, 8, generator=g, dtype=torch.float64) if k else None
    cands = p if hard is None else torch.cat([p, hard.reshape(-1, 8)])
    S = cosine_scores(q, cands)
    forward = _formula(S, tau)
    assert F.cross_entropy(S / tau, torch.arange(B)).item() == pytest.approx(forward, rel=1e-9)
    expected = (forward + _formula(cosine_scores(p, q), tau)) / 2 if symmetric else forward
    assert loss_from_embeddings(q, p, hard, tau, symmetric).item() == pytest.approx(expected, rel=1e-9)
    assert InfoNCE(tau, symmetric)(q, p, hard).item() == pytest.approx(expected, rel=1e-9)

def test_offset_scores_a_ranks_queries_against_gathered_passages():
    g = torch.Generator().manual_seed(1)
    q, p = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    parts = [loss_from_embeddings(q[r * 2:(r + 1) * 2], p, offset=r * 2) for r in range(3)]
    assert (sum(parts) / 3).item() == pytest.approx(loss_from_embeddings(q, p).item(), rel=1e-6)
    assert info_nce(cosine_scores(q[2:4], p), 0.05, offset=2).item() == pytest.approx(_formula(cosine_scores(q[2:4], p), 0.05, 2), rel=1e-5)

def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"): loss_from_embeddings(torch.eye(2), torch.eye(2), temperature=-1)

def test_gradients_flow_to_both_sides():
    q, p = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    loss_from_embeddings(q, p, symmetric=True).backward()
    assert q.grad.abs().sum() > 0 and p.grad.abs().sum() > 0

class _Fixed(torch.nn.Module):
    def forward(self, f): return {"sentence_embedding": f["emb"]}

def test_sentence_transformers_wrapper_reads_columns_in_order():
    g = torch.Generator().manual_seed(2)
    q, p, h1, h2 = (torch.randn(3, 4, generator=g) for _ in range(4))
    loss = InfoNCELoss(_Fixed(), temperature=0.1, symmetric=True)
    got = loss([{"emb": q}, {"emb": p}, {"emb": h1}, {"emb": h2}], None)
    assert got.item() == pytest.approx(loss_from_embeddings(q, p, torch.stack([h1, h2], 1), 0.1, True).item(), rel=1e-6)
    assert loss.get_config_dict() == {"temperature": 0.1, "symmetric": True, "gather_across_devices": False}

@pytest.mark.slow
def test_trainer_runs_hybrid_batches_with_infonce():
    "Two Trainer steps of a tiny random encoder on hybrid batches with InfoNCELoss (needs accelerate)."
    pytest.importorskip("accelerate")
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from hybrid_batch.data import load_xquad
    from hybrid_batch.sampler import trainer_batch_sampler, trainer_rows
    pairs = load_xquad(["en", "de", "zh"])
    pairs = pairs[pairs.group.isin(pairs.group.unique()[:30])]
    model = _tiny_model(list(pairs["query"]) + list(pairs.positive))
    args = SentenceTransformerTrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, max_steps=2,
                                                batch_sampler=trainer_batch_sampler(pairs, alpha=0.5), report_to=[],
                                                save_strategy="no", use_cpu=True)
    train = Dataset.from_pandas(trainer_rows(pairs, hard=True)[["anchor", "positive", "negative"]])
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=InfoNCELoss(model, symmetric=True))
    out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)

def _tiny_model(texts, dim=32):
    "A random 1-layer BERT SentenceTransformer with a word-piece vocabulary trained on `texts` (offline)."
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling
    d = tempfile.mkdtemp()
    wp = BertWordPieceTokenizer(lowercase=False); wp.train_from_iterator(texts, vocab_size=300, show_progress=False); wp.save_model(d)
    BertTokenizerFast(vocab_file=f"{d}/vocab.txt", do_lower_case=False).save_pretrained(d)
    BertModel(BertConfig(vocab_size=wp.get_vocab_size(), hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(d)
    return SentenceTransformer(modules=[Transformer(d, max_seq_length=64), Pooling(dim, "mean")], device="cpu")

def test_equals_sentence_transformers_mnrl_at_the_same_scale():
    "InfoNCELoss(temperature=t) is MultipleNegativesRankingLoss(scale=1/t) on the same columns."
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    g = torch.Generator().manual_seed(3)
    q, p, h = (torch.randn(5, 8, generator=g) for _ in range(3))
    ours = InfoNCELoss(_Fixed(), temperature=0.05)([{"emb": q}, {"emb": p}, {"emb": h}], None)
    theirs = MultipleNegativesRankingLoss(_Fixed(), scale=20.0).compute_loss_from_embeddings([q, p, h], None)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
