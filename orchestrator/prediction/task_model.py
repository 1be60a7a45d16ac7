"""The per-task LSTM: it reads the recent history of a task's category (each step one finished execution,
described relative to the task being predicted) and outputs quantiles of runtime, cpu and memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .history_arrays import HistoryArrays, Query

FEATURE_VERSION = 3  # bump when `encode` changes; checkpoints of another version refuse to load
STEP_FEATURES = 9
QUERY_FEATURES = 13
NUM_TARGETS = 3  # runtime, cpu, memory
_CLIP = 5.0  # size ratios beyond e^5 (~150x) are treated as e^5


@dataclass(frozen=True)
class EncodedBatch:
    """B episodes ready for the model; targets are residuals against `centres` (log runtime, cpu, log memory)."""

    steps: np.ndarray  # (B, L, STEP_FEATURES) float32, left-padded with zero rows
    query: np.ndarray  # (B, QUERY_FEATURES) float32
    centres: np.ndarray  # (B, 3): mean log runtime, mean cpu, mean log memory of the history (NaN = none)

    def __len__(self) -> int:
        return self.steps.shape[0]


def _mean(v: np.ndarray) -> float:
    ok = np.isfinite(v)
    return float(v[ok].mean()) if ok.any() else float("nan")


def encode(histories: Sequence[HistoryArrays], queries: Sequence[Query], max_history: int) -> EncodedBatch:
    """Describe each (history, query) pair as model inputs. Every step is expressed relative to the history's
    centre (log runtime, cpu, log memory) and to the query's sizes, so the model is scale free and transfers
    across categories and families. Histories longer than `max_history` keep their most recent steps.

    Step features: log runtime - centre, log input - query's, log output - the history's mean log output,
    cpu - centre, cpu known, log memory - centre, memory known, same run, valid (0 on padding).
    Query features: history length, spread of log runtime, mean cpu, spread of log input, query log input
    against the history's mean, share of same-run steps, query input known, centre log runtime / 5, any memory
    known, and the baselines' answers as offsets from the centre (see `_baseline_offsets`).

    Only what is known before the query task runs is read: its input size, never its output size (recorded
    after the run; `Query` has none). The history's output sizes are of executions that already finished.
    """
    b, length = len(histories), max_history
    steps = np.zeros((b, length, STEP_FEATURES), dtype=np.float32)
    query = np.zeros((b, QUERY_FEATURES), dtype=np.float32)
    centres = np.full((b, NUM_TARGETS), np.nan)
    for i, (h, q) in enumerate(zip(histories, queries)):
        h = h.tail(length)
        n = len(h)
        if n == 0:
            continue
        c_rt, c_cpu, c_mem = float(h.log_runtime.mean()), _mean(h.cpu), _mean(h.log_memory)
        centres[i] = (c_rt, c_cpu, c_mem)
        in_mean, out_mean = _mean(h.log_input), _mean(h.log_output)
        in_ref = q.log_input if np.isfinite(q.log_input) else in_mean
        d_in = np.nan_to_num(np.clip(h.log_input - in_ref, -_CLIP, _CLIP))
        d_out = np.nan_to_num(np.clip(h.log_output - out_mean, -_CLIP, _CLIP))
        cpu_known = np.isfinite(h.cpu)
        mem_known = np.isfinite(h.log_memory)
        s = steps[i, length - n:]
        s[:, 0] = h.log_runtime - c_rt
        s[:, 1] = d_in
        s[:, 2] = d_out
        s[:, 3] = np.where(cpu_known, h.cpu - (c_cpu if np.isfinite(c_cpu) else 0.0), 0.0)
        s[:, 4] = cpu_known
        s[:, 5] = np.where(mem_known, h.log_memory - (c_mem if np.isfinite(c_mem) else 0.0), 0.0)
        s[:, 6] = mem_known
        s[:, 7] = h.same_run
        s[:, 8] = 1.0
        query[i] = (
            np.log1p(n) / np.log1p(length),
            h.log_runtime.std() if n > 1 else 0.0,
            c_cpu if np.isfinite(c_cpu) else 0.0,
            d_in.std() if n > 1 else 0.0,
            np.clip(q.log_input - in_mean, -_CLIP, _CLIP) if np.isfinite(q.log_input) and np.isfinite(in_mean) else 0.0,
            h.same_run.mean(),
            float(np.isfinite(q.log_input)),
            c_rt / 5.0,
            float(mem_known.any()),
            *_baseline_offsets(h, q, c_rt),
        )
    return EncodedBatch(steps, query, centres)


def _baseline_offsets(h: HistoryArrays, q: Query, c_rt: float) -> tuple[float, float, float, float]:
    """What the baselines would say, as log-runtime offsets from the centre: the arithmetic mean, the last
    value, the mean of this run's siblings (0 if none), and the log-log regression on input size (0 when it
    falls back), so the network can learn when to trust which."""
    rt = h.log_runtime
    mean = float(np.log(np.exp(rt).mean())) - c_rt
    last = float(rt[-1]) - c_rt
    own = h.same_run
    sibling = float(rt[own].mean()) - c_rt if own.any() else 0.0
    x = h.log_input
    ok = np.isfinite(x)
    reg = 0.0
    if ok.sum() >= 3 and np.isfinite(q.log_input) and x[ok].std() > 0.05:
        b, a = np.polyfit(x[ok], rt[ok], 1)
        reg = float(np.clip(a + b * q.log_input, rt.min() - 1.0, rt.max() + 1.0)) - c_rt
    return mean, last, sibling, reg


class TaskHistoryLSTM(nn.Module):
    """steps (B, L, 9) and query (B, 13) -> residual quantiles (B, 3, Q), non-decreasing along Q.

    An LSTM reads the history oldest to newest; its last hidden state (B, H) joined with the query features
    goes through a two-layer MLP to 3 x Q numbers. The middle quantile is produced directly and the others
    as cumulative softplus offsets from it, so p10 <= p50 <= p90 always holds.
    """

    def __init__(self, hidden_size: int = 48, num_layers: int = 1, dropout: float = 0.0, num_quantiles: int = 3):
        super().__init__()
        self.num_quantiles = num_quantiles
        self.lstm = nn.LSTM(STEP_FEATURES, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(
            nn.Linear(hidden_size + QUERY_FEATURES, hidden_size), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_size, NUM_TARGETS * num_quantiles),
        )
        # Start from "the history's centre" (zero residual) so training only has to learn corrections.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, steps: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(steps)
        raw = self.head(torch.cat([h[-1], query], dim=1)).view(-1, NUM_TARGETS, self.num_quantiles)
        return monotone_quantiles(raw)


def monotone_quantiles(raw: torch.Tensor) -> torch.Tensor:
    """(..., Q) unconstrained -> (..., Q) non-decreasing: the middle entry as is, the others as cumulative
    softplus steps away from it."""
    q = raw.shape[-1]
    m = q // 2
    mid = raw[..., m:m + 1]
    parts = [mid]
    if m > 0:
        below = torch.cumsum(nn.functional.softplus(raw[..., :m].flip(-1)), dim=-1)
        parts.insert(0, (mid - below).flip(-1))
    if q - m - 1 > 0:
        above = torch.cumsum(nn.functional.softplus(raw[..., m + 1:]), dim=-1)
        parts.append(mid + above)
    return torch.cat(parts, dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, quantiles: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean quantile (pinball) loss, summed over targets. pred (B, T, Q), target (B, T),
    mask (B, T) 0/1, quantiles (Q,), weight (B,) or (B, T) or None (all 1)."""
    diff = target.unsqueeze(-1) - pred
    loss = torch.maximum(quantiles * diff, (quantiles - 1.0) * diff).mean(-1)
    if weight is not None:
        mask = mask * (weight if weight.dim() == 2 else weight.unsqueeze(-1))
    per_target = (loss * mask).sum(0) / mask.sum(0).clamp(min=1e-6)
    return per_target.sum()
