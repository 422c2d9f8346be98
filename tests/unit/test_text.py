"""d2l_utils.text (chapter 18): normalisation and the split, the three tokenisers (round trips,
byte-pair merges against a recount from scratch and against Hugging Face ``tokenizers``), the
n-gram models (distributions that sum to one, the smoothing formulas, perplexity against
``F.cross_entropy``) and the error messages."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.text import (
    ALPHABET,
    BPETokenizer,
    CharTokenizer,
    NGramLM,
    WordTokenizer,
    learn_bpe,
    merge_pair,
    ngram_baseline,
    normalise,
    perplexity,
    split_text,
)

CORPUS = normalise("""The Time Traveller (for so it will be convenient to speak of him)
was expounding a recondite matter to us. His grey eyes shone and twinkled.

'You must follow me carefully. I shall have to controvert one or two ideas
that are almost universally accepted.'

'Is not that rather a large thing to expect us to begin upon?' said Filby.

'I do not mean to ask you to accept anything without reasonable ground for it.
You will soon admit as much as I need from you.'

There is no difference between Time and any of the three dimensions of Space
except that our consciousness moves along it.""")
alphabet_text = st.text(alphabet=ALPHABET, max_size=80)


def recount_bpe(text: str, num_merges: int) -> list[tuple[tuple[str, str], int]]:
    """Reference: recount every pair over the chunk types before each merge."""
    from d2l_utils.text import CHUNK

    chunks = Counter(CHUNK.findall(text))
    words = {chunk: list(chunk) for chunk in chunks}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for chunk, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += chunks[chunk]
        if not pairs:
            break
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append((pair, pairs[pair]))
        words = {chunk: merge_pair(symbols, pair) for chunk, symbols in words.items()}
    return merges


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_normalise_is_idempotent_and_stays_in_the_alphabet(raw):
    text = normalise(raw)
    assert normalise(text) == text
    assert set(text) <= set(ALPHABET)
    assert "\n\n\n" not in text and "  " not in text and text == text.strip()


def test_split_is_contiguous_and_close_to_the_fractions():
    raw = "\n\n".join(f"paragraph {i}: " + "word " * (i % 7 + 3) for i in range(300))
    parts = split_text(raw, (0.6, 0.3, 0.1))
    text = normalise(raw)
    assert "\n\n".join(parts) == text
    for part, fraction in zip(parts, (0.6, 0.3, 0.1)):
        assert abs(len(part) / len(text) - fraction) < 0.02


@settings(max_examples=40, deadline=None)
@given(alphabet_text)
def test_character_and_bpe_tokenisers_are_lossless(text):
    chars, bpe = CharTokenizer(), BPETokenizer.learn(CORPUS, 60)
    for tokenizer in (chars, bpe):
        ids = tokenizer.encode(text)
        assert ids.dtype == torch.int64 and ids.ndim == 1
        assert tokenizer.decode(ids) == text and tokenizer.decode(ids.tolist()) == text


@pytest.mark.parametrize("num_merges", [0, 1, 25, 200])
def test_incremental_bpe_matches_a_full_recount(num_merges):
    learned = learn_bpe(CORPUS, num_merges)
    assert learned == recount_bpe(CORPUS, num_merges)
    counts = [count for _, count in learned]
    assert counts == sorted(counts, reverse=True)


def test_bpe_encodes_its_training_text_as_learned():
    bpe = BPETokenizer.learn(CORPUS, 80)
    assert len(bpe.encode(CORPUS)) == len(CORPUS) - sum(bpe.merge_counts)
    assert BPETokenizer(bpe.merges[:30]).merges == BPETokenizer.learn(CORPUS, 30).merges


def test_bpe_agrees_with_hugging_face_before_the_first_tie():
    tokenizers = pytest.importorskip("tokenizers")
    import json

    from d2l_utils.text import CHUNK

    ours = BPETokenizer.learn(CORPUS, 40)
    library = tokenizers.Tokenizer(tokenizers.models.BPE())
    library.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(CHUNK.pattern),
                                                            behavior="isolated")
    library.train_from_iterator([CORPUS], tokenizers.trainers.BpeTrainer(
        vocab_size=len(ALPHABET) + 40, initial_alphabet=list(ALPHABET), show_progress=False))
    theirs = [tuple(pair) for pair in json.loads(library.to_str())["model"]["merges"]]
    counts = ours.merge_counts
    first_tie = next(i for i, (a, b) in enumerate(zip(counts, counts[1:])) if a == b)
    assert first_tie > 0 and ours.merges[:first_tie] == theirs[:first_tie]


def test_word_tokeniser_maps_unseen_words_to_unk():
    words = WordTokenizer(CORPUS)
    assert words.tokens[:3] == ["<unk>", ".", "to"]              # most frequent first
    ids = words.encode("the time machine. said filby.")
    assert words.decode(ids) == "the time <unk> . said filby ."
    assert words.index["<unk>"] == 0 and (ids == 0).sum() == 1


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=12), st.integers(1, 6),
       st.sampled_from(["add-k", "kneser-ney"]), st.floats(0.05, 1.0))
def test_every_next_character_distribution_sums_to_one(history, n, smoothing, strength):
    model = NGramLM(CORPUS, n, smoothing, k=strength, discount=strength)
    probs = model.probs(history)
    assert probs.shape == (len(ALPHABET),) and (probs > 0).all()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_smoothing_formulas_at_low_order():
    counts, V, N = Counter(CORPUS), len(ALPHABET), len(CORPUS)
    pairs = Counter(CORPUS[i:i + 2] for i in range(N - 1))
    after_t = sum(c for p, c in pairs.items() if p[0] == "t")
    add_k = NGramLM(CORPUS, 2, "add-k", k=0.5)
    assert math.isclose(add_k.prob("t", "h"), (pairs["th"] + 0.5) / (after_t + 0.5 * V))
    unigram = NGramLM(CORPUS, 1, discount=0.75)
    seen = len(counts)
    assert math.isclose(unigram.prob("", "e"), (counts["e"] - 0.75 + 0.75 * seen / V) / N)
    unseen = next(c for c in ALPHABET if c not in counts)
    assert math.isclose(unigram.prob("", unseen), 0.75 * seen / V / N)


def test_perplexity_is_the_exponential_of_the_cross_entropy():
    model, text = NGramLM(CORPUS, 3), CORPUS[:300]
    log_p = torch.stack([model.probs(text[:t]).log() for t in range(len(text))])  # (T, V)
    targets = CharTokenizer().encode(text)
    torch.testing.assert_close(perplexity(model, text),
                               F.cross_entropy(log_p, targets).exp().item(), rtol=1e-12, atol=0)
    flat = NGramLM(CORPUS, 1, "add-k", k=1e9)                 # almost uniform
    assert abs(perplexity(flat, text) - len(ALPHABET)) < 1e-3


def test_sampling_is_reproducible_and_baseline_picks_the_best():
    model = NGramLM(CORPUS, 4)
    first, second = (model.sample(50, torch.Generator().manual_seed(3), "the ") for _ in range(2))
    assert first == second and len(first) == 54 and set(first) <= set(ALPHABET)
    train, val, test = CORPUS[:350], CORPUS[350:450], CORPUS[450:]
    result = ngram_baseline(train, val, test, orders=range(1, 4), discounts=(0.5, 1.0))
    assert result["val_perplexity"] == min(result["grid"].values()) and len(result["grid"]) == 6
    assert math.isfinite(result["test_perplexity"])


@pytest.mark.parametrize("call, error, message", [
    (lambda: normalise(3), TypeError, "text must be a str"),
    (lambda: split_text(""), ValueError, "empty"),
    (lambda: split_text(CORPUS, (0.5, 0.3, 0.1)), ValueError, "sum to 1"),
    (lambda: split_text(CORPUS, (0.8, 0.2)), TypeError, "three numbers"),
    (lambda: split_text(CORPUS, (1.2, -0.1, -0.1)), ValueError, "each fraction"),
    (lambda: split_text("one paragraph"), ValueError, "at least 3 paragraphs"),
    (lambda: CharTokenizer().encode("Capital"), ValueError, "normalise the text first"),
    (lambda: CharTokenizer().encode(["a"]), TypeError, "text must be a str"),
    (lambda: CharTokenizer().decode([0, 36]), ValueError, r"lie in \[0, 36\)"),
    (lambda: CharTokenizer().decode(torch.tensor([0.0])), TypeError, "integer dtype"),
    (lambda: CharTokenizer().decode("abc"), TypeError, "list of ints"),
    (lambda: WordTokenizer(""), ValueError, "empty"),
    (lambda: learn_bpe("", 10), ValueError, "empty"),
    (lambda: learn_bpe(CORPUS, -1), ValueError, "num_merges"),
    (lambda: BPETokenizer([("a", 1)]), TypeError, "pairs of strings"),
    (lambda: NGramLM(CORPUS, 0), ValueError, "n must be in"),
    (lambda: NGramLM(CORPUS, 2.0), TypeError, "n must be an int"),
    (lambda: NGramLM(CORPUS, 3, "laplace"), ValueError, "smoothing must be"),
    (lambda: NGramLM(CORPUS, 3, discount=1.5), ValueError, "discount"),
    (lambda: NGramLM(CORPUS, 3, "add-k", k=0), ValueError, "k must be in"),
    (lambda: NGramLM("ab", 3), ValueError, "at least n = 3"),
    (lambda: perplexity(NGramLM(CORPUS, 2), ""), ValueError, "non-empty"),
    (lambda: NGramLM(CORPUS, 2).sample(5, 0), TypeError, "torch.Generator"),
])
def test_bad_input_is_explained(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_word_pattern_covers_punctuation_and_paragraphs():
    from d2l_utils.text import WORD

    assert WORD.findall("man's hat.\n\n'no'") == ["man's", "hat", ".", "\n\n", "'", "no", "'"]
    assert re.fullmatch(r"[a-z\n !',\-.:;?]+", ALPHABET)
