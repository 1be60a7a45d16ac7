"""Training data and the training loop for the per-task LSTM: episodes cut from recorded runs (a history of
finished executions and one task still to run), pinball loss on residual targets, early stopping on a
validation set of whole runs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import PredictionError
from .config import TaskModelConfig
from .features import ExecutionTable
from .history_arrays import HistoryArrays, Query
from .task_model import EncodedBatch, TaskHistoryLSTM, encode, pinball_loss


@dataclass(frozen=True)
class Episode:
    """History rows (oldest first) with their same-run flags, and the query row to predict."""

    history: np.ndarray
    same_run: np.ndarray
    query: int


def category_groups(table: ExecutionTable, runs: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
    """(run, category) -> row indices in the run's task order."""
    rows = table.select_runs(runs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i in rows.tolist():
        groups.setdefault((int(table.run[i]), int(table.category[i])), []).append(i)
    return {k: np.asarray(v) for k, v in groups.items()}


def prior_rows(table: ExecutionTable, history_runs: Sequence[int], run: int, category: int) -> np.ndarray:
    """Rows of `category` from `history_runs` recorded before `run` (run indices are in time order)."""
    earlier = [r for r in history_runs if r < run]
    rows = table.select_runs(earlier)
    return rows[table.category[rows] == category]


def sample_episodes(table: ExecutionTable, runs: Sequence[int], cfg: TaskModelConfig,
                    rng: np.random.Generator) -> list[Episode]:
    """Random training episodes from `runs`: a cut point k in the run's category (the first k finished), a
    query after it, and — with probability `prior_run_probability` — executions from earlier runs before them."""
    episodes: list[Episode] = []
    runs = sorted(runs)
    for (run, cat), rows in category_groups(table, runs).items():
        prior = prior_rows(table, runs, run, cat)[-cfg.max_history:]
        n = rows.size
        for _ in range(cfg.episodes_per_group):
            k = int(rng.uniform(0.0, 0.8) * n)
            use_prior = prior.size > 0 and rng.random() < cfg.prior_run_probability
            if k == 0 and not use_prior:
                if n < 2:
                    continue
                k = 1
            j = int(rng.integers(k, n))
            own = rows[:k]
            hist = np.concatenate([prior, own]) if use_prior else own
            same = np.concatenate([np.zeros(prior.size, bool), np.ones(k, bool)]) if use_prior else np.ones(k, bool)
            episodes.append(Episode(hist[-cfg.max_history:], same[-cfg.max_history:], int(rows[j])))
    return episodes


@dataclass(frozen=True)
class TrainingSet:
    batch: EncodedBatch
    targets: np.ndarray  # (B, 3) residuals; NaN where unknown

    def __len__(self) -> int:
        return len(self.batch)


def encode_episodes(table: ExecutionTable, episodes: Sequence[Episode], max_history: int) -> TrainingSet:
    hist = [HistoryArrays.from_table(table, e.history, e.same_run) for e in episodes]
    queries = [Query.from_table(table, e.query) for e in episodes]
    batch = encode(hist, queries, max_history)
    q = np.array([e.query for e in episodes], dtype=np.int64)
    truth = np.stack([table.log_runtime[q], table.cpu[q], table.log_memory[q]], axis=1)
    return TrainingSet(batch, truth - batch.centres)


def episode_weights(ts: TrainingSet, weighted: bool) -> np.ndarray:
    """(B, 3) loss weights. With `weighted`, the runtime target of each episode is weighted by its category's
    typical runtime (clipped to 0.1-10x the median), so training favours the long tasks that dominate WAPE;
    cpu and memory keep weight 1."""
    w = np.ones((len(ts), 3), dtype=np.float32)
    if weighted:
        scale = np.exp(ts.batch.centres[:, 0])
        r = np.clip(scale / np.median(scale), 0.1, 10.0)
        w[:, 0] = r / r.mean()
    return w


def _tensors(ts: TrainingSet, weighted: bool = False) -> tuple[torch.Tensor, ...]:
    target = np.nan_to_num(ts.targets)
    mask = np.isfinite(ts.targets).astype(np.float32)
    return (torch.from_numpy(ts.batch.steps), torch.from_numpy(ts.batch.query),
            torch.from_numpy(target.astype(np.float32)), torch.from_numpy(mask),
            torch.from_numpy(episode_weights(ts, weighted)))


def evaluate_loss(model: TaskHistoryLSTM, ts: TrainingSet, quantiles: torch.Tensor, weighted: bool = False) -> float:
    model.eval()
    steps, query, target, mask, weight = _tensors(ts, weighted)
    with torch.no_grad():
        return float(pinball_loss(model(steps, query), target, mask, quantiles, weight))


def train_task_model(train: TrainingSet, val: TrainingSet | None, cfg: TaskModelConfig,
                     report: Callable[[int, float, TaskHistoryLSTM], None] | None = None) -> tuple[TaskHistoryLSTM, list[float]]:
    """Fit the LSTM with Adam on pinball loss; keep the weights of the best validation epoch.
    `report(epoch, val_loss, model)` is called after each epoch (Ray Tune hooks in here)."""
    if len(train) == 0:
        raise PredictionError("No training episodes: the traces hold no category with at least two executions")
    torch.manual_seed(cfg.seed)
    model = TaskHistoryLSTM(cfg.hidden_size, cfg.num_layers, cfg.dropout, len(cfg.quantiles))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    quantiles = torch.tensor(cfg.quantiles, dtype=torch.float32)
    steps, query, target, mask, weight = _tensors(train, cfg.runtime_weighted_loss)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, losses = float("inf"), None, []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = pinball_loss(model(steps[idx], query[idx]), target[idx], mask[idx], quantiles, weight[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        val_loss = evaluate_loss(model, val if val is not None and len(val) else train, quantiles,
                                 cfg.runtime_weighted_loss)
        losses.append(val_loss)
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
        if report is not None:
            report(epoch, val_loss, model)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, losses


def split_validation_runs(table: ExecutionTable, runs: Sequence[int], fraction: float) -> tuple[list[int], list[int]]:
    """Hold out the latest `fraction` of each family's runs (at least one when a family has three or more)."""
    train, val = [], []
    for f in range(len(table.families)):
        fam_runs = sorted(r for r in runs if table.run_family[r] == f)
        k = int(round(fraction * len(fam_runs))) if len(fam_runs) >= 3 else 0
        k = max(k, 1) if len(fam_runs) >= 3 and fraction > 0 else k
        train += fam_runs[:len(fam_runs) - k]
        val += fam_runs[len(fam_runs) - k:]
    return sorted(train), sorted(val)


def fit_task_model(table: ExecutionTable, runs: Sequence[int], cfg: TaskModelConfig,
                   report: Callable[[int, float, TaskHistoryLSTM], None] | None = None) -> tuple[TaskHistoryLSTM, dict]:
    """Episodes from `runs` (validation = the latest runs of each family), then `train_task_model`."""
    rng = np.random.default_rng(cfg.seed)
    train_runs, val_runs = split_validation_runs(table, runs, cfg.validation_fraction)
    train = encode_episodes(table, sample_episodes(table, train_runs, cfg, rng), cfg.max_history)
    val = encode_episodes(table, sample_episodes(table, val_runs, cfg, rng), cfg.max_history) if val_runs else None
    model, losses = train_task_model(train, val, cfg, report)
    info = {"train_runs": len(train_runs), "validation_runs": len(val_runs), "train_episodes": len(train),
            "validation_episodes": len(val) if val is not None else 0, "validation_loss": losses,
            "best_validation_loss": min(losses) if losses else None,
            "memory_examples": int(np.isfinite(train.targets[:, 2]).sum())}
    return model, info
