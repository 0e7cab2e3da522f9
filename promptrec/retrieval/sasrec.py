"""The trained sequential retriever: a SASRec-family model in plain torch.

Causal self-attention (pre-norm blocks) over a user's last `max_len` items with learned
positional embeddings, trained on every position of each training sequence (predict the next
item; a long history is cut into windows of `max_len`) with a full-softmax cross-entropy over
all items. The item embedding table is also the output layer, so an item's output embedding
is the vector stored in Chroma (inner product) and a history's encoding (the last position's
hidden state) is the query vector: any history, including one the model never saw, is
encoded at request time.

Training holds out each user's last item (users with 3+ items, `temporal_split`'s rule) and
stops early on that hold-out's NDCG@10 (all items ranked, history excluded). Built from the
train+validation part of a split, the hold-out is exactly the validation item; the test item
is never seen. Seeded and deterministic on CPU; CUDA when `device` allows it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from promptrec.config import SequentialSettings
from promptrec.errors import IndexMismatchError
from promptrec.hardware import auto_dtype, resolve_device
from promptrec.keys import ArtifactKey
from promptrec.metrics import ndcg_of_ranks
from promptrec.paths import atomic_write

FORMAT = "promptrec.sequential/2"  # 2: trained on every window of a history, not only its last
CHECKPOINT = "sequential_model.pt"
RETRAIN = "`promptrec train retriever`"
EpochFn = Callable[["EpochStats"], None]


class DamagedCheckpointError(IndexMismatchError):
    """The sequential model's checkpoint cannot be read (truncated, not a checkpoint)."""


class CheckpointMismatchError(IndexMismatchError):
    """The stored sequential model was trained on other data or with other hyperparameters."""


class EpochStats(BaseModel):
    epoch: int
    max_epochs: int
    loss: float
    val_ndcg10: float | None = None  # None in epochs without an evaluation
    seconds: float


class TrainStats(BaseModel):
    """How a checkpoint was trained."""

    epochs_run: int
    best_epoch: int
    best_val_ndcg10: float
    val_users: int
    train_sequences: int
    seconds: float
    device: str
    bf16: bool
    threads: int
    history: list[EpochStats]


class SequentialKey(ArtifactKey):
    """What a checkpoint is valid for: the log, the item vocabulary, the seed and every
    hyperparameter (not `precision`: a model trained in bf16 on one machine is valid on another)."""

    interactions_fingerprint: str
    item_ids: tuple[str, ...]
    seed: int
    hyperparameters: dict[str, Any]

    def digest(self) -> str:
        """The short form stored in the index manifest and the sequential collection's metadata."""
        payload = json.dumps({"log": self.interactions_fingerprint, "items": list(self.item_ids), "seed": self.seed,
                              "hp": self.hyperparameters}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def checkpoint_key(interactions_fingerprint: str, item_ids: Sequence[str], settings: SequentialSettings,
                   seed: int) -> SequentialKey:
    """The key of a model trained on this log, vocabulary, seed and settings."""
    return SequentialKey(interactions_fingerprint=interactions_fingerprint, item_ids=tuple(item_ids), seed=seed,
                         hyperparameters=settings.model_dump(exclude={"precision"}))


# --------------------------------------------------------------------------- the network


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # No dropout on the attention weights: on CPU it forces SDPA's slow path (15x here).
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + self.dropout(self.out(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class SASRecNet(nn.Module):
    """Item ids are 1..n_items (0 pads, on the left); `forward` gives one hidden state per position."""

    def __init__(self, n_items: int, settings: SequentialSettings):
        super().__init__()
        if settings.hidden % settings.heads:
            raise ValueError(f"retrieval.sequential.hidden ({settings.hidden}) must divide by heads ({settings.heads})")
        self.items = nn.Embedding(n_items + 1, settings.hidden, padding_idx=0)
        self.positions = nn.Embedding(settings.max_len, settings.hidden)
        self.dropout = nn.Dropout(settings.dropout)
        self.blocks = nn.ModuleList(_Block(settings.hidden, settings.heads, settings.dropout) for _ in range(settings.layers))
        self.norm = nn.LayerNorm(settings.hidden)
        nn.init.normal_(self.items.weight, std=settings.hidden**-0.5)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n = seq.shape[1]
        real = seq > 0
        x = self.items(seq) + self.positions.weight[-n:]
        x = self.dropout(x) * real.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        # a position sees the real items up to itself (and itself, so padding rows stay finite)
        allowed = (causal & real[:, None, :]) | torch.eye(n, dtype=torch.bool, device=seq.device)
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def item_vectors(self) -> torch.Tensor:
        """The output embeddings of items 1..n_items (row i-1 is item i)."""
        return self.items.weight[1:]


# --------------------------------------------------------------------------- training


def _left_pad(seqs: Sequence[Sequence[int]], length: int) -> np.ndarray:
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = list(seq)[-length:]
        if tail:
            out[row, length - len(tail) :] = tail
    return out


def training_windows(sequences: Sequence[Sequence[int]], length: int) -> list[list[int]]:
    """Cut each sequence, from its end, into windows of `length` + 1 items whose next-item
    targets (every item but a window's first) do not overlap: every item after a sequence's
    first is a target exactly once an epoch, however long the history. Training on only the
    last window would leave most of a long history unused (at L = 50, 73% of MovieLens-1M's
    training targets and 60% of MovieLens-100K's)."""
    windows = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            windows.append(list(seq[max(0, end - length - 1) : end]))
            end -= length
    return windows


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for training: asked for, or "auto" where the hardware has a bf16 path
    (`promptrec.hardware.auto_dtype`: on AVX2-only CPUs bf16 is slower, so float32)."""
    if precision != "auto":
        return precision == "bfloat16"
    return auto_dtype(device.type) == "bfloat16"


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous)


class SequentialModel:
    """A trained SASRecNet and its item vocabulary (index item ids that have interactions)."""

    def __init__(self, net: SASRecNet, item_ids: list[str], settings: SequentialSettings, key: SequentialKey | str,
                 stats: TrainStats | None = None):
        self.net = net.eval()
        self.item_ids = item_ids
        self.position = {item_id: n for n, item_id in enumerate(item_ids)}
        self.settings = settings
        self.key = key.digest() if isinstance(key, SequentialKey) else key  # the digest
        self.fields = key if isinstance(key, SequentialKey) else None
        self.stats = stats

    @property
    def device(self) -> torch.device:
        return self.net.items.weight.device

    @classmethod
    def fit(
        cls,
        histories: Mapping[str, Sequence[str]],
        settings: SequentialSettings,
        seed: int,
        interactions_fingerprint: str,
        device: str = "auto",
        on_epoch: EpochFn | None = None,
    ) -> SequentialModel:
        """Train on `histories` (item ids, oldest first), holding out each user's last item."""
        started = time.perf_counter()
        item_ids = sorted({i for h in histories.values() for i in h})
        vocab = {item_id: n + 1 for n, item_id in enumerate(item_ids)}
        sequences = [[vocab[i] for i in histories[u]] for u in sorted(histories)]
        train = [s[:-1] if len(s) >= 3 else s for s in sequences]
        val = [(s[:-1], s[-1]) for s in sequences if len(s) >= 3]
        train = [s for s in train if len(s) >= 2]
        length = settings.max_len
        windows = training_windows(train, length)
        inputs = torch.from_numpy(_left_pad([w[:-1] for w in windows], length))
        targets = torch.from_numpy(_left_pad([w[1:] for w in windows], length))
        dev = torch.device(resolve_device(device))
        bf16 = use_bf16(settings.precision, dev)
        key = checkpoint_key(interactions_fingerprint, item_ids, settings, seed)
        history: list[EpochStats] = []
        with _deterministic(seed):
            net = SASRecNet(len(item_ids), settings).to(dev)
            optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
            shuffle = torch.Generator().manual_seed(seed)
            best, best_epoch, best_state, stale = -1.0, 0, copy.deepcopy(net.state_dict()), 0
            for epoch in range(1, settings.max_epochs + 1):
                t0 = time.perf_counter()
                net.train()
                total, count = 0.0, 0
                order = torch.randperm(len(windows), generator=shuffle)
                for start in range(0, len(order), settings.batch_size):
                    batch = order[start : start + settings.batch_size]
                    seq, tgt = inputs[batch].to(dev), targets[batch].to(dev)
                    real = tgt > 0
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                        hidden = net(seq)[real]
                        logits = hidden @ net.item_vectors().T
                        loss = F.cross_entropy(logits, tgt[real] - 1)  # autocast computes it in fp32
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * int(real.sum())
                    count += int(real.sum())
                evaluate = epoch % settings.eval_every == 0 or epoch == settings.max_epochs
                ndcg = None
                if evaluate and val:
                    ndcg = _ndcg_at_10(net, val, length, dev)
                    if ndcg > best:
                        best, best_epoch, best_state, stale = ndcg, epoch, copy.deepcopy(net.state_dict()), 0
                    else:
                        stale += 1
                stats = EpochStats(epoch=epoch, max_epochs=settings.max_epochs, loss=total / max(count, 1),
                                   val_ndcg10=ndcg, seconds=time.perf_counter() - t0)
                history.append(stats)
                if on_epoch:
                    on_epoch(stats)
                if stale >= settings.patience:
                    break
            if not val:  # nothing to select on: keep the last epoch
                best_state, best_epoch, best = copy.deepcopy(net.state_dict()), len(history), 0.0
            net.load_state_dict(best_state)
        stats = TrainStats(
            epochs_run=len(history), best_epoch=best_epoch, best_val_ndcg10=max(best, 0.0), val_users=len(val),
            train_sequences=len(windows), seconds=round(time.perf_counter() - started, 3), device=str(dev), bf16=bf16,
            threads=torch.get_num_threads(), history=history,
        )
        return cls(net, item_ids, settings, key, stats)

    @torch.no_grad()
    def encode(self, history: Sequence[str]) -> np.ndarray | None:
        """The query vector for a history (item ids, oldest first); None when no item is known."""
        seq = [self.position[i] + 1 for i in history if i in self.position]
        if not seq:
            return None
        x = torch.from_numpy(_left_pad([seq], self.settings.max_len)).to(self.device)
        return self.net.eval()(x)[0, -1].float().cpu().numpy()

    def item_vectors(self) -> np.ndarray:
        return self.net.item_vectors().detach().float().cpu().numpy()

    # ------------------------------------------------------------------ checkpoint

    def save(self, path: Path) -> Path:
        payload = {
            "format": FORMAT,
            "key": self.key,
            "key_fields": self.fields.model_dump() if self.fields is not None else None,
            "item_ids": self.item_ids,
            "settings": self.settings.model_dump(),
            "stats": self.stats.model_dump_json() if self.stats else None,
            "state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()},
        }
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: Path, expected_key: SequentialKey | str, device: str = "auto") -> SequentialModel:
        """Load a checkpoint, refusing one trained on other data or hyperparameters (``expected_key``:
        the key, or its digest as an index manifest records it)."""
        if not path.is_file():
            raise CheckpointMismatchError(f"no sequential model at {path}: train it with {RETRAIN}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as exc:
            raise DamagedCheckpointError(
                f"{path} is damaged ({type(exc).__name__}); retrain it with {RETRAIN} "
                "(or `promptrec index --rebuild`, which trains it again)"
            ) from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointMismatchError(f"{path} is not a {FORMAT} checkpoint; retrain it with {RETRAIN}")
        expected = expected_key.digest() if isinstance(expected_key, SequentialKey) else expected_key
        if payload["key"] != expected:
            what = f"key {payload['key']}, the current log and retrieval.sequential settings give {expected}"
            if isinstance(expected_key, SequentialKey) and payload.get("key_fields"):
                what = SequentialKey(**payload["key_fields"]).describe_differences(expected_key, "trained")
            raise CheckpointMismatchError(
                f"the sequential model in {path} was trained on other data or hyperparameters "
                f"({what}); retrain it with {RETRAIN}"
            )
        settings = SequentialSettings(**payload["settings"])
        net = SASRecNet(len(payload["item_ids"]), settings)
        net.load_state_dict(payload["state_dict"])
        stats = TrainStats.model_validate_json(payload["stats"]) if payload["stats"] else None
        key = SequentialKey(**payload["key_fields"]) if payload.get("key_fields") else payload["key"]
        return cls(net.to(torch.device(resolve_device(device))), list(payload["item_ids"]), settings, key, stats)


@torch.no_grad()
def _ndcg_at_10(net: SASRecNet, val: list[tuple[list[int], int]], length: int, dev: torch.device,
                batch_size: int = 256) -> float:
    """Mean NDCG@10 of the held-out items, all items ranked, each history excluded."""
    net.eval()
    vectors = net.item_vectors()
    total = 0.0
    for start in range(0, len(val), batch_size):
        chunk = val[start : start + batch_size]
        seq = torch.from_numpy(_left_pad([h for h, _ in chunk], length)).to(dev)
        scores = net(seq)[:, -1] @ vectors.T
        target = torch.tensor([t - 1 for _, t in chunk], device=dev)
        rows = torch.tensor([r for r, (h, _) in enumerate(chunk) for _ in h], device=dev)
        cols = torch.tensor([i - 1 for h, _ in chunk for i in h], device=dev)
        target_score = scores[torch.arange(len(chunk), device=dev), target]
        scores[rows, cols] = -math.inf
        rank = (scores > target_score[:, None]).sum(dim=1)
        total += float(ndcg_of_ranks(rank.cpu().numpy(), 10).sum())
    return total / len(val)
