"HybridBatchSampler guarantees, checked with hypothesis on random group/language structures."
from collections import Counter
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrid_batch.sampler import HybridBatchSampler, PairsDataset, collate_pairs, hybrid, x_x_mono, x_y

LANGS = "ar de el en es hi ro ru th tr vi zh".split()
N = 500   # examples per property
SETTINGS = dict(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- data: groups with 1..12 languages, unequal sizes ----

@st.composite
def structures(draw, min_groups=1, max_groups=24):
    "A pairs table: each group has a random non-empty subset of up to 12 languages."
    n_langs = draw(st.integers(1, 12))
    dense = draw(st.booleans())   # half the tables: most groups have most languages
    n_groups = draw(st.integers(min_groups, max_groups))
    rows = []
    for g in range(n_groups):
        if dense: ls = set(range(n_langs)) - draw(st.sets(st.integers(0, n_langs - 1), max_size=2))
        else: ls = draw(st.sets(st.integers(0, n_langs - 1), min_size=1, max_size=n_langs))
        ls = ls or {draw(st.integers(0, n_langs - 1))}
        rows += [(f"q{g}", LANGS[l]) for l in sorted(ls)]
    return pd.DataFrame(rows, columns=["group", "lang"])

def _capacities(pairs):
    "(groups in the rarest language, groups with >= 2 languages, groups sharing the best ordered pair)."
    by_group = pairs.groupby("group").lang.agg(set)
    per_lang = pairs.lang.value_counts()
    langs = sorted(per_lang.index)
    best_pair = max([sum(1 for s in by_group if x in s and y in s) for x, y in permutations(langs, 2)], default=0)
    return int(per_lang.min()), int((by_group.map(len) >= 2).sum()), best_pair

@st.composite
def feasible(draw, min_replicas=1):
    "A pairs table and sampler arguments that are possible by construction."
    pairs = draw(structures())
    mono_cap, mixed_cap, pair_cap = _capacities(pairs)
    cross_mode = draw(st.sampled_from(["mixed", "pair"]))
    cross_cap = mixed_cap if cross_mode == "mixed" else pair_cap
    R = draw(st.integers(min_replicas, 3))
    kinds = [k for k, ok in [("mono", mono_cap >= R), ("cross", cross_cap >= R), ("hybrid", min(mono_cap, cross_cap) >= R)] if ok]
    if not kinds: R, kinds = 1, ["mono"]          # every language has >= 1 group
    kind = draw(st.sampled_from(kinds))
    alpha = {"mono": 1.0, "cross": 0.0}.get(kind) if kind != "hybrid" else draw(st.floats(0, 1))
    cap = {"mono": mono_cap, "cross": cross_cap, "hybrid": min(mono_cap, cross_cap)}[kind]
    B = draw(st.integers(1, max(1, min(6, cap // R))))
    kw = dict(batch_size=B, alpha=alpha, seed=draw(st.integers(0, 2**16)), cross_mode=cross_mode, num_replicas=R,
              mono_lang=draw(st.sampled_from(["uniform", "size"])), drop_last=draw(st.booleans()))
    return pairs, kw

def _has(pairs):
    return set(zip(pairs.group, pairs.lang))

def _is_mono(batch): return batch[0][1] == batch[0][2]

# ---- guarantees ----

@settings(**SETTINGS)
@given(feasible())
def test_batches_are_well_formed(case):
    "Mono: one language; cross: q != p (one pair per batch in pair mode); no group twice; full size; real items."
    pairs, kw = case
    s = HybridBatchSampler(pairs, **{**kw, "num_replicas": 1, "batch_size": kw["batch_size"] * kw["num_replicas"]})
    has = _has(pairs)
    for b in s:
        assert len(b) == s.batch_size
        assert len({g for g, _, _ in b}) == len(b)
        assert all((g, q) in has and (g, p) in has for g, q, p in b)
        if _is_mono(b): assert len({l for _, q, p in b for l in (q, p)}) == 1
        else:
            assert all(q != p for _, q, p in b)
            if kw["cross_mode"] == "pair": assert len({(q, p) for _, q, p in b}) == 1
        if kw["alpha"] == 1: assert _is_mono(b)
        if kw["alpha"] == 0: assert not _is_mono(b)

@settings(**SETTINGS)
@given(feasible(), st.integers(0, 5))
def test_same_seed_and_epoch_same_batches_and_len_is_exact(case, epoch):
    pairs, kw = case
    a, b = HybridBatchSampler(pairs, **kw), HybridBatchSampler(pairs, **kw)
    a.set_epoch(epoch); b.set_epoch(epoch)
    batches = list(a)
    assert batches == list(b) == list(a)
    assert len(batches) == len(a)
    n = pairs.group.nunique() if kw["alpha"] > 0 else _capacities(pairs)[1]
    G = kw["batch_size"] * kw["num_replicas"]
    assert len(a) == (n // G if kw["drop_last"] else -(-n // G))

@settings(**SETTINGS)
@given(feasible(), st.integers(0, 5))
def test_batch_type_is_bernoulli_alpha_from_seed_plus_epoch(case, epoch):
    "Step i is mono iff default_rng(seed + epoch).random(len)[i] < alpha, whatever the data."
    pairs, kw = case
    s = HybridBatchSampler(pairs, **kw)
    s.set_epoch(epoch)
    expected = (np.random.default_rng(kw["seed"] + epoch).random(len(s)) < kw["alpha"]).tolist()
    assert [_is_mono(b) for b in s] == expected

@settings(**SETTINGS)
@given(feasible(min_replicas=2))
def test_ranks_agree_on_type_and_language_and_split_groups(case):
    pairs, kw = case
    R = kw["num_replicas"]
    per_rank = [list(HybridBatchSampler(pairs, **{**kw, "rank": r})) for r in range(R)]
    whole = list(HybridBatchSampler(pairs, **{**kw, "num_replicas": 1, "batch_size": kw["batch_size"] * R}))
    assert all(len(b) == len(whole) for b in per_rank)
    for step, batches in enumerate(zip(*per_rank)):
        assert len({_is_mono(b) for b in batches}) == 1
        if _is_mono(batches[0]): assert len({q for b in batches for _, q, _ in b}) == 1
        elif kw["cross_mode"] == "pair": assert len({(q, p) for b in batches for _, q, p in b}) == 1
        groups = [g for b in batches for g, _, _ in b]
        assert len(set(groups)) == len(groups)
        assert sum(batches, []) == whole[step]

@settings(**SETTINGS)
@given(structures(max_groups=12), st.integers(1, 6), st.integers(1, 3), st.sampled_from([0.0, 0.5, 1.0]),
       st.sampled_from(["mixed", "pair"]))
def test_impossible_requests_raise_and_possible_ones_do_not(pairs, B, R, alpha, cross_mode):
    mono_cap, mixed_cap, pair_cap = _capacities(pairs)
    G = B * R
    mono_bad = alpha > 0 and mono_cap < G
    cross_bad = alpha < 1 and (mixed_cap < G or (cross_mode == "pair" and pair_cap < G))
    make = lambda: HybridBatchSampler(pairs, B, alpha, cross_mode=cross_mode, num_replicas=R)
    if not (mono_bad or cross_bad):
        make(); return
    with pytest.raises(ValueError) as e: make()
    msg = str(e.value)
    assert f"(batch_size {B} x num_replicas {R})" in msg
    if mono_bad: assert f"x_x_mono batches need {G} groups per language" in msg and f"has {mono_cap}" in msg
    elif mixed_cap < G: assert f"x_y batches need {G} groups with at least 2 languages, but the pairs have {mixed_cap}" in msg
    else: assert f"x_y batches with cross_mode='pair' need {G} groups sharing a language pair" in msg and f"has {pair_cap}" in msg

@settings(**SETTINGS)
@given(st.floats(allow_nan=False).filter(lambda a: not 0 <= a <= 1))
def test_alpha_outside_unit_interval_raises(alpha):
    pairs = pd.DataFrame({"group": [0, 0, 1, 1], "lang": ["en", "de"] * 2})
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got "): HybridBatchSampler(pairs, 1, alpha)

@settings(**SETTINGS)
@given(feasible())
def test_report_counts_what_iteration_yields(case):
    pairs, kw = case
    s = HybridBatchSampler(pairs, **kw)
    batches, r = list(s), s.report()
    assert r.batch_types == {"x_x_mono": sum(map(_is_mono, batches)), "x_y": sum(not _is_mono(b) for b in batches)}
    assert dict(r.lang_pairs) == dict(Counter((q, p) for b in batches for _, q, p in b))

@settings(**SETTINGS)
@given(st.integers(2, 12), st.integers(1, 40), st.integers(1, 5), st.floats(0, 1), st.sampled_from(["mixed", "pair"]),
       st.integers(0, 100))
def test_parallel_data_uses_each_group_once_per_epoch(n_langs, n_groups, B, alpha, cross_mode, seed):
    "Fully parallel data: with drop_last no group repeats in an epoch; without it every group is used."
    pairs = pd.DataFrame([(g, l) for g in range(n_groups) for l in LANGS[:n_langs]], columns=["group", "lang"])
    B = min(B, n_groups)
    used = [g for b in hybrid(pairs, B, alpha, seed=seed, cross_mode=cross_mode, drop_last=True) for g, _, _ in b]
    assert len(used) == len(set(used)) == n_groups // B * B
    s = hybrid(pairs, B, alpha, seed=seed, cross_mode=cross_mode)
    assert {g for b in s for g, _, _ in b} == set(range(n_groups))
    assert s.report().reused == len(s) * B - n_groups

# ---- examples ----

def test_set_epoch_reshuffles():
    pairs = pd.DataFrame([(g, l) for g in range(50) for l in LANGS[:4]], columns=["group", "lang"])
    s = hybrid(pairs, 8)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first

def test_mono_language_uniform_or_by_size():
    "90 groups in en, 10 in de: uniform picks de about half the time, 'size' about a tenth."
    pairs = pd.DataFrame([(g, "en") for g in range(90)] + [(g, "de") for g in range(90, 100)], columns=["group", "lang"])
    share = lambda how: np.mean([b[0][1] == "de" for b in x_x_mono(pairs, 2, mono_lang=how, num_batches=4000)])
    assert abs(share("uniform") - 0.5) < 0.04
    assert abs(share("size") - 0.1) < 0.02

def test_alpha_is_the_share_of_mono_batches():
    pairs = pd.DataFrame([(g, l) for g in range(40) for l in LANGS[:3]], columns=["group", "lang"])
    for alpha in (0.1, 0.5, 0.9):
        r = hybrid(pairs, 4, alpha, num_batches=5000).report()
        assert abs(r.batch_types["x_x_mono"] / 5000 - alpha) < 4.5 * (alpha * (1 - alpha) / 5000) ** 0.5

def test_langs_restricts_languages():
    pairs = pd.DataFrame([(g, l) for g in range(10) for l in LANGS[:4]] + [(99, "zh")], columns=["group", "lang"])
    test = hybrid(pairs, 3, langs=["ar", "de"])
    assert len(test) > 0 and {l for b in test for _, q, p in b for l in (q, p)} == {"ar", "de"}
    with pytest.raises(ValueError, match="language 'zh' has 1"): hybrid(pairs, 3)

def test_mixed_mode_covers_every_ordered_pair():
    pairs = pd.DataFrame([(g, l) for g in range(30) for l in LANGS[:3]], columns=["group", "lang"])
    r = x_y(pairs, 5, num_batches=400).report()
    assert set(r.lang_pairs.index) == set(permutations(LANGS[:3], 2))

def test_dataloader_yields_query_and_passage_texts():
    from torch.utils.data import DataLoader
    pairs = pd.DataFrame([(g, l, f"{g}?{l}", f"{g}.{l}") for g in range(10) for l in ["en", "de"]],
                         columns=["group", "lang", "query", "positive"])
    dl = DataLoader(PairsDataset(pairs), batch_sampler=x_y(pairs, 4), collate_fn=collate_pairs)
    for batch, items in zip(dl, x_y(pairs, 4)):
        assert batch == {"query": [f"{g}?{q}" for g, q, _ in items], "passage": [f"{g}.{p}" for g, _, p in items]}

def test_trainer_batch_sampler_pickles_and_maps_rows():
    import pickle
    from hybrid_batch.sampler import trainer_batch_sampler, trainer_rows
    pairs = pd.DataFrame([(g, l, f"{g}?{l}", f"{g}.{l}") for g in range(10) for l in ["en", "de", "zh"]],
                         columns=["group", "lang", "query", "positive"])
    rows = trainer_rows(pairs)
    make = pickle.loads(pickle.dumps(trainer_batch_sampler(pairs, alpha=0.5)))
    rb = make(rows, batch_size=4, drop_last=False, seed=3)
    rb.set_epoch(2)
    ref = hybrid(pairs, 4, seed=3); ref.set_epoch(2)
    assert len(rb) == len(ref)
    for idx, items in zip(rb, ref):
        assert [tuple(r) for r in rows.loc[idx, ["group", "query_lang", "passage_lang"]].itertuples(index=False)] == items
