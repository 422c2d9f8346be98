"""d2l's concise GRU language model against this book's Part V recipe, on the same split.

*Dive into Deep Learning* (d2l 1.0, section 10.2) trains a character-level language model on
*The Time Machine* with one GRU layer of 32 hidden units on one-hot characters, plain SGD at
learning rate 4 with the gradient clipped to norm 1, batches of 1,024 overlapping windows of
32 steps (every window starts from a zero state), for 50 epochs. This script trains that recipe
and chapter 20's, in one process on the same machine, on **the same split** of the whole novel
(``d2l_utils.text.split_text``: 80 % training, 10 % validation), and evaluates both the same
way as chapter 18's n-gram models: every validation character predicted from all the
characters before it, the network reading the validation text as one stream
(``d2l_utils.rnn.stream_perplexity``). It prints for each recipe the final validation
perplexity, the training seconds (evaluation excluded), the seconds to first reach d2l's final
perplexity, and the ratio.

Run: ``python bench/char_lm_speed.py`` (several minutes on 2 cores; ``--epochs-d2l 10`` for a
quicker look). The ratio is a measurement, not a test, so no test asserts it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from _race import Trace, report
from torch import nn

from d2l_utils import fit, load_text, set_seed
from d2l_utils.lstm import CharLM
from d2l_utils.rnn import stream_batches, stream_perplexity, truncated_bptt_loss
from d2l_utils.text import CharTokenizer, split_text


class D2LGRULanguageModel(nn.Module):
    """d2l's ``RNNLM`` around ``nn.GRU``: one-hot characters -> GRU -> linear.
    ``forward(x (T, B) int64, state (1, B, H) or None)`` -> (logits (T, B, V), state)."""

    def __init__(self, vocab_size: int, hidden_size: int = 32) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = nn.GRU(vocab_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, state = self.rnn(F.one_hot(x, self.vocab_size).float(), state)
        return self.head(hidden), state


def overlapping_windows(ids: torch.Tensor, num_steps: int, batch_size: int,
                        generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """d2l's ``TimeMachine`` batches: every window of ``num_steps + 1`` ids, shuffled, as
    (inputs, targets) of shape (T, B)."""
    windows = ids.unfold(0, num_steps + 1, 1)                      # (N - T, T + 1)
    order = torch.randperm(len(windows), generator=generator)
    for start in range(0, len(order), batch_size):
        batch = windows[order[start:start + batch_size]].T         # (T + 1, B)
        yield batch[:-1], batch[1:]


def train_d2l(train_ids: torch.Tensor, val_ids: torch.Tensor, start: int,
              epochs: int) -> Trace:
    """d2l 1.0's concise GRU recipe; the validation perplexity after every epoch.

    This loop is the benchmark's own, not ``d2l_utils.fit``: it must stop the clock while it
    evaluates, and it reproduces d2l's loop (zero state per window, clip at 1, SGD at 4)."""
    set_seed(0)
    model = D2LGRULanguageModel(len(CharTokenizer()))
    optimizer = torch.optim.SGD(model.parameters(), lr=4)
    generator, trace, seconds = torch.Generator().manual_seed(0), [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for inputs, targets in overlapping_windows(train_ids, 32, 1024, generator):
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        seconds += time.perf_counter() - started
        trace.append((seconds, stream_perplexity(model, val_ids, start)))
    return trace


def train_ours(train_ids: torch.Tensor, val_ids: torch.Tensor, start: int,
               epochs: int = 16) -> Trace:
    """Chapter 20's recipe: an LSTM of 128 units on 32-dimensional embeddings, 32 contiguous
    streams cut into 64-step windows with the state carried between them (truncated BPTT),
    AdamW with a one-cycle schedule peaking at 0.02, gradients clipped at 1; the validation
    perplexity after every epoch."""
    set_seed(0)
    model = CharLM(len(CharTokenizer()), embedding_dim=32, hidden_size=128)
    windows = stream_batches(train_ids, batch_size=32, num_steps=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02,
                                                   total_steps=epochs * len(windows))
    loss_of, trace, seconds = truncated_bptt_loss(), [], 0.0
    for _ in range(epochs):  # one epoch per call, so that the clock stops for evaluation
        history = fit(model, windows, epochs=1, optimizer=optimizer, scheduler=schedule,
                      scheduler_interval="batch", loss_of=loss_of, clip_grad_norm=1.0,
                      device="cpu", progress=False)
        seconds += history["seconds"][0]
        trace.append((seconds, stream_perplexity(model, val_ids, start)))
    return trace


def main(epochs_d2l: int) -> None:
    train_text, val_text, _ = split_text(load_text("time-machine").text)
    tokenizer = CharTokenizer()
    train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
    start = tokenizer.index["\n"]             # the validation text follows a paragraph break
    traces = {f"d2l 1.0 GRU-32, SGD 4, {epochs_d2l} epochs":
              train_d2l(train_ids, val_ids, start, epochs_d2l)}
    traces["this book: chapter 20's LSTM-128, 16 epochs"] = train_ours(train_ids, val_ids, start)
    report(traces, "val perplexity", higher_is_better=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-d2l", type=int, default=50)
    arguments = parser.parse_args()
    main(arguments.epochs_d2l)
