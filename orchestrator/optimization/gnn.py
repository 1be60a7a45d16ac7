"""The makespan GNN: from a workflow's graph (`graph.featurize`) to its makespan distribution on a cluster (mean,
P50, P90) and each task's gain from running 30% faster, learned from the simulator's Monte Carlo labels
(`dataset`). CPU inference in about 10 ms for 1,000 tasks.

The graph features include 32 list schedules of sampled durations (Latin hypercube, control-variate mean): the
graph head corrects their mean, P50 and P90 (a correction kept small: measured on a family left out, what it
learns on the others barely carries over), and the node head ranks tasks by gain from the graph, the schedule of
the means and those samples' critical chains.

- `MakespanGNN`: the torch module (message passing both ways along dependencies, a graph head and a node head).
- `train_model(examples, config, epochs, seed)`: trains one in process (also the evaluation's leave-one-family-out
  retraining); `evaluate` scores one on labelled graphs.
- `OptimizerModel`: a trained module with its config, saved as a version under `models/optimizer/` and loaded
  from there (`OptimizerModel.load()`: the shipped latest); `.predict(dag, durations, cluster)` -> `GnnPrediction`.
- `load_config`: `configs/optimizer.yaml` (dataset, model, training, Ray Tune search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATv2Conv, GINEConv, SAGEConv, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter
from torch_geometric.utils import softmax as graph_softmax

from .. import resources
from ..dag import DagArrays
from ..errors import PredictionError
from ..prediction.config import TuneConfig
from ..sim.cluster import Cluster
from .dataset import DatasetSpec, build_dataset
from .durations import AnalysisInputError, TaskDurations
from .graph import (DONE, EDGE_FEATURES, FEATURE_VERSION, GLOBAL_FEATURES, NODE_FEATURES, SAMPLES, featurize,
                    status_codes)
from .groundtruth import SPEEDUP, TRAINING_FAMILIES

KIND = "optimizer"
CONVS = ("sage", "gine", "gatv2")


# ---- config ---------------------------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    """The architecture and its training loop (one Tune trial samples some of these)."""

    conv: str = "sage"  # sage (separate weights for parents and children) | gine | gatv2
    hidden: int = 64
    layers: int = 4
    heads: int = 2  # gatv2 only
    dropout: float = 0.0
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 8
    graph_weight: float = 1.0  # L1 on log(mean, P50, P90 / time scale)
    gain_weight: float = 0.2  # Huber on the normalised gain
    rank_weight: float = 1.0  # listwise (top of the ranking) + pairwise (the whole ranking) within each graph
    crit_weight: float = 0.1  # auxiliary: criticality (cross-entropy)
    residual_penalty: float = 10.0  # L2 on the graph head's corrections of the sampled mean, P50, P90
    rank_temperature: float = 1.0
    rank_blend: float = 0.0  # weight of the criticality index x time in what the ranking losses rank by
    ignore_features: tuple[str, ...] = ()  # node or global features the model does not read (zeroed)


class TrainConfig(_Section):
    epochs: int = 40
    validation_fraction: float = 0.2  # of the workflows (all their clusters), per family
    seed: int = 0
    threads: int = 2  # torch threads while training in process
    refit: bool = True  # after the search, train the best config again on every graph (validation included)


class TuneSection(TuneConfig):
    """The prediction models' Tune search (`prediction.config.TuneConfig`), with the optimizer's defaults."""

    num_samples: int = 8
    max_epochs: int = 40
    grace_period: int = 8


class DatasetSection(_Section):
    families: tuple[str, ...] = TRAINING_FAMILIES
    max_real_tasks: int = 1000
    synthetic_per_family: int = 16
    min_tasks: int = 10
    max_tasks: int = 1000
    shares: tuple[float, ...] = (0.25, 0.5, 1.0)
    policy: str = "srpt-cp"
    samples: int = 2000
    gain_samples: int = 200
    min_gain_samples: int = 48
    max_gain_tasks: int = 160
    gain_seconds: float = 4.0
    seed: int = 0
    mid_run: int = 1
    mid_run_share: float = 0.5
    cache_dir: str = "results/optimizer/datasets"  # relative to the checkout (or absolute)

    def spec(self, traces: str | Path | None = None) -> DatasetSpec:
        kw = {f.name: getattr(self, f.name) for f in fields(DatasetSpec) if f.name != "traces"}
        return DatasetSpec(traces=str(traces) if traces else None, **kw)

    def cache_path(self) -> Path:
        path = Path(self.cache_dir)
        return path if path.is_absolute() else resources.root() / path


class OptimizerConfig(_Section):
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneSection = Field(default_factory=TuneSection)
    models_dir: str = "models"

    def models_path(self) -> Path:
        path = Path(self.models_dir)
        return (path if path.is_absolute() else resources.root() / path) / KIND


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> OptimizerConfig:
    """`configs/optimizer.yaml` (or `path`) with dotted overrides such as {"model.hidden": 32}."""
    path = Path(path) if path else resources.config_file("optimizer.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PredictionError(f"Cannot read optimizer config '{path}': {exc}") from None
    if not isinstance(data, dict):
        raise PredictionError(f"Optimizer config '{path}' must be a mapping at the top level")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return OptimizerConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PredictionError(f"Invalid optimizer config '{path}': {'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}") from None


# ---- model ----------------------------------------------------------------------------------------------------

class _DirectedSage(nn.Module):
    """Mean of the parents' and mean of the children's states, each with its own weights."""

    def __init__(self, hidden: int):
        super().__init__()
        self.down = SAGEConv(hidden, hidden, aggr="mean")
        self.up = SAGEConv(hidden, hidden, aggr="mean", root_weight=False)

    def forward(self, h, edge_index, edge_attr):
        forward_edges = edge_attr[:, 0] > 0.5
        return self.down(h, edge_index[:, forward_edges]) + self.up(h, edge_index[:, ~forward_edges])


class MakespanGNN(nn.Module):
    """Message passing over a workflow's dependencies (both ways), then two heads.

    Input: a `Batch` (or one `Data`) of `graph.featurize` graphs: x [N, F], edge_index [2, E], edge_attr [E, 2],
    u [B, G], base_log [B, 3], batch [N] (absent for one graph).
    Output: (graph [B, 3]: log(mean, P50, P90 of the makespan / time_scale), each a correction of the sampled
    schedules' own (`base_log`), P90 >= P50 by construction; node [N, 2]: the task's gain score
    (gain / (SPEEDUP x expected makespan) x n) and its criticality logit).
    """

    def __init__(self, node_dim: int = len(NODE_FEATURES), global_dim: int = len(GLOBAL_FEATURES),
                 edge_dim: int = len(EDGE_FEATURES), conv: str = "sage", hidden: int = 64, layers: int = 4,
                 heads: int = 2, dropout: float = 0.0, ignore_features: Sequence[str] = (), **_: Any):
        super().__init__()
        if conv not in CONVS:
            raise PredictionError(f"conv '{conv}' is not one of {', '.join(CONVS)}")
        unknown = sorted(set(ignore_features) - set(NODE_FEATURES) - set(GLOBAL_FEATURES))
        if unknown:
            raise PredictionError(f"ignore_features: {', '.join(unknown)} are not graph features")
        self.register_buffer("x_keep", torch.tensor([float(f not in ignore_features) for f in NODE_FEATURES]))
        self.register_buffer("u_keep", torch.tensor([float(f not in ignore_features) for f in GLOBAL_FEATURES]))
        self.conv_kind = conv
        self.register_buffer("x_mean", torch.zeros(node_dim))
        self.register_buffer("x_std", torch.ones(node_dim))
        self.register_buffer("u_mean", torch.zeros(global_dim))
        self.register_buffer("u_std", torch.ones(global_dim))
        self.embed = nn.Sequential(nn.Linear(node_dim + global_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.convs = nn.ModuleList()
        for _ in range(layers):
            if conv == "sage":
                self.convs.append(_DirectedSage(hidden))
            elif conv == "gine":
                self.convs.append(GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(),
                                                         nn.Linear(hidden, hidden)), edge_dim=edge_dim))
            else:
                self.convs.append(GATv2Conv(hidden, hidden // heads, heads=heads, edge_dim=edge_dim,
                                            add_self_loops=True, fill_value="mean"))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = dropout
        self.graph_head = nn.Sequential(nn.Linear(2 * hidden + global_dim, hidden), nn.ReLU(),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.node_head = nn.Sequential(nn.Linear(2 * hidden + global_dim, hidden), nn.ReLU(),
                                       nn.Linear(hidden, 2))

    def set_scaler(self, examples: Sequence[Data]) -> None:
        """Standardise the inputs with the training graphs' feature means and spreads."""
        x = torch.cat([d.x for d in examples])
        u = torch.cat([d.u for d in examples])
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(x.std(0).clamp_min(1e-3))
        self.u_mean.copy_(u.mean(0))
        self.u_std.copy_(u.std(0).clamp_min(1e-3))

    def forward(self, data: Data) -> tuple[torch.Tensor, torch.Tensor]:
        x = (data.x - self.x_mean) / self.x_std * self.x_keep
        u = (data.u - self.u_mean) / self.u_std * self.u_keep
        batch = data.batch if getattr(data, "batch", None) is not None else \
            torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = self.embed(torch.cat([x, u[batch]], dim=1))
        for conv, norm in zip(self.convs, self.norms):
            m = conv(h, data.edge_index, data.edge_attr)
            h = h + F.dropout(F.relu(norm(m)), self.dropout, self.training)
        pooled = torch.cat([global_mean_pool(h, batch, size=u.shape[0]), global_max_pool(h, batch, size=u.shape[0])],
                           dim=1)
        g = self.graph_head(torch.cat([pooled, u], dim=1))
        base = data.base_log.view(-1, 3)
        mean, p50 = base[:, 0:1] + g[:, 0:1], base[:, 1:2] + g[:, 1:2]
        graph = torch.cat([mean, p50, p50 + F.softplus(base[:, 2:3] - p50 + g[:, 2:3])], dim=1)
        node = self.node_head(torch.cat([h, pooled[batch, :h.shape[1]], u[batch]], dim=1))
        return graph, node


# ---- training -------------------------------------------------------------------------------------------------

def gain_target(batch: Data) -> torch.Tensor:
    """gain / (SPEEDUP x expected makespan) x n: 1 for a task that gives back its share of a fully busy cluster."""
    n = scatter(torch.ones_like(batch.gain), batch.batch, reduce="sum")[batch.batch]
    return batch.gain / SPEEDUP * n


def _rank_losses(score: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, batch: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Listwise (ListNet: cross-entropy of the per-graph softmax of the scores against that of the targets: the
    top of the ranking) plus pairwise (logistic on random pairs within a graph: the whole ranking)."""
    s, t, b = score[mask], target[mask], batch[mask]
    if s.numel() < 2:
        return score.sum() * 0.0
    p_true = graph_softmax(t / temperature, b)
    log_p = torch.log(graph_softmax(s / temperature, b) + 1e-12)
    graphs = int(b.max()) + 1
    listwise = -scatter(p_true * log_p, b, dim=0, dim_size=graphs, reduce="sum").mean()
    # pairs: each labelled task against a random labelled task of its own graph
    count = scatter(torch.ones_like(s), b, dim=0, dim_size=graphs, reduce="sum").long()
    first = torch.cumsum(count, 0) - count
    order = torch.argsort(b, stable=True)
    s, t, b = s[order], t[order], b[order]
    j = first[b] + (torch.rand(s.shape[0]) * count[b]).long().clamp_max(count[b] - 1)
    diff = torch.sign(t - t[j])
    weight = (t - t[j]).abs()
    weight = weight / weight.mean().clamp_min(1e-9)
    pairwise = (F.softplus(-diff * (s - s[j])) * weight).mean()
    return listwise + pairwise


def rank_target(batch: Data, target: torch.Tensor, blend: float) -> torch.Tensor:
    """What the ranking losses rank by: the gain target, blended (`blend` > 0) with the Monte Carlo criticality
    index x mean time of the same labels (thousands of samples, where the gains had hundreds: measured against
    gains of 1,000 samples, the blend ranks better than either alone). Both z-scored within each graph."""
    if blend <= 0:
        return target
    mask, b = batch.gain_mask, batch.batch
    graphs = int(b.max()) + 1

    def z(v: torch.Tensor) -> torch.Tensor:
        w = mask.to(v.dtype)
        count = scatter(w, b, dim=0, dim_size=graphs, reduce="sum").clamp_min(1)
        mean = scatter(v * w, b, dim=0, dim_size=graphs, reduce="sum") / count
        var = scatter((v - mean[b]).pow(2) * w, b, dim=0, dim_size=graphs, reduce="sum") / count
        return (v - mean[b]) / var.sqrt().clamp_min(1e-9)[b]

    return (1 - blend) * z(target) + blend * z(batch.crit * batch.x[:, _MEAN])


_MEAN = NODE_FEATURES.index("mean")


def losses(model: MakespanGNN, batch: Data, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    graph, node = model(batch)
    out = {"graph": F.l1_loss(graph, batch.y)}
    # how far the mean, P50 and P90 move from the sampled schedules' own: corrections that must pay for themselves
    out["residual"] = (graph - batch.base_log.view(-1, 3)).pow(2).mean()
    mask = batch.gain_mask
    target = gain_target(batch)
    out["gain"] = F.huber_loss(node[mask, 0], target[mask], delta=1.0) if mask.any() else graph.sum() * 0
    out["rank"] = _rank_losses(node[:, 0], rank_target(batch, target, cfg.rank_blend), mask, batch.batch,
                               cfg.rank_temperature)
    out["crit"] = F.binary_cross_entropy_with_logits(node[:, 1], batch.crit)
    out["total"] = (cfg.graph_weight * out["graph"] + cfg.gain_weight * out["gain"] + cfg.rank_weight * out["rank"]
                    + cfg.crit_weight * out["crit"] + cfg.residual_penalty * out["residual"])
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _precision_at_k(pred: np.ndarray, true: np.ndarray, k: int = 5) -> float:
    """As the evaluation scores it: share of the predicted top k whose true gain reaches the true k-th largest."""
    k = min(k, len(true))
    top = np.argsort(-pred, kind="stable")[:k]
    kth = np.sort(true)[::-1][k - 1]
    return float(np.mean(true[top] >= kth - 1e-12 * max(1.0, abs(kth))))


@torch.no_grad()
def evaluate(model: MakespanGNN, examples: Sequence[Data]) -> dict[str, float]:
    """On labelled graphs: mean absolute percentage error of the mean, P50 and P90 makespan, mean Spearman rho and
    precision@5 of the tasks ranked by gain (labelled tasks), and `score`, the one number Tune minimises:
    MAPE(mean) + MAPE(P90) + (1 - rho) / 4 + (1 - precision@5) / 4."""
    model.eval()
    ape, rho, prec = [], [], []
    for i in range(0, len(examples), 32):
        batch = Batch.from_data_list(list(examples[i:i + 32]))
        graph, node = model(batch)
        ape.append((torch.exp(graph - batch.y) - 1).abs().numpy())
        score = node[:, 0].numpy()
        for g in range(batch.num_graphs):
            sel = (batch.batch == g) & batch.gain_mask
            true, pred = batch.gain[sel].numpy(), score[sel.numpy()]
            if len(true) >= 3:
                rho.append(_spearman(pred, true))
                prec.append(_precision_at_k(pred, true))
    ape = np.concatenate(ape)
    out = {"mape_mean": float(ape[:, 0].mean()), "mape_p50": float(ape[:, 1].mean()),
           "mape_p90": float(ape[:, 2].mean()), "median_ape_mean": float(np.median(ape[:, 0])),
           "spearman": float(np.nanmean(rho)) if rho else float("nan"),
           "precision_at_5": float(np.nanmean(prec)) if prec else float("nan")}
    out["score"] = float(out["mape_mean"] + out["mape_p90"] + (1 - np.nan_to_num(out["spearman"])) / 4
                         + (1 - np.nan_to_num(out["precision_at_5"])) / 4)
    return out


def build_module(config: dict[str, Any] | ModelConfig) -> MakespanGNN:
    cfg = config if isinstance(config, ModelConfig) else ModelConfig(**config)
    return MakespanGNN(conv=cfg.conv, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout,
                       ignore_features=cfg.ignore_features)


def train_model(examples: list[Data], config: dict[str, Any], epochs: int, seed: int = 0, *,
                validation: list[Data] | None = None,
                report: Callable[[int, dict[str, float], MakespanGNN], None] | None = None,
                threads: int | None = None) -> MakespanGNN:
    """Train a `MakespanGNN` on labelled graphs (`dataset.build_dataset`) for `epochs` (Adam, cosine schedule).
    With `validation`, each epoch is scored (`evaluate`), passed to `report(epoch, metrics, model)`, and the best
    epoch's weights are returned; without, the last. Deterministic for a seed (single-threaded)."""
    if not examples:
        raise PredictionError("train_model: no training graphs")
    cfg = ModelConfig(**{k: v for k, v in config.items() if k in ModelConfig.model_fields})
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = build_module(cfg)
        model.set_scaler(examples)
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(1, epochs * math.ceil(len(examples) / cfg.batch_size))
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (
            1 + math.cos(math.pi * min(k, steps) / steps)) + 0.02)
        rng = np.random.default_rng(seed)
        best, best_state = math.inf, None
        for epoch in range(1, epochs + 1):
            model.train()
            total, count = 0.0, 0
            for idx in np.array_split(rng.permutation(len(examples)), math.ceil(len(examples) / cfg.batch_size)):
                batch = Batch.from_data_list([examples[i] for i in idx])
                loss = losses(model, batch, cfg)["total"]
                optimiser.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            metrics = {"train_loss": total / count, "epoch": epoch}
            if validation:
                metrics.update(evaluate(model, validation))
                if metrics["score"] < best:
                    best = metrics["score"]
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
            if report is not None:
                report(epoch, metrics, model)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        return model
    finally:
        torch.set_num_threads(previous_threads)


# ---- the trained model ----------------------------------------------------------------------------------------

@dataclass
class GnnPrediction:
    """A workflow's makespan on a cluster, from now (seconds), and each task's gain: the drop of the expected
    makespan if it ran 30% faster (seconds; 0 for a task already done)."""

    mean: float
    p50: float
    p90: float
    gain: np.ndarray
    seconds: float  # wall time of featurisation + forward pass


class OptimizerModel:
    """A trained `MakespanGNN` with its config; versions live under `models/optimizer/` (`v1`, `v2`, ...)."""

    def __init__(self, module: MakespanGNN, config: dict[str, Any], metadata: dict[str, Any] | None = None,
                 path: Path | None = None, samples: int = SAMPLES):
        self.module = module.eval()
        self.config = dict(config)
        self.metadata = metadata or {}
        self.path = path
        self.samples = samples  # sampled schedules in the features it was trained on

    @classmethod
    def from_module(cls, module: MakespanGNN, config: dict[str, Any]) -> "OptimizerModel":
        return cls(module, config)

    @classmethod
    def load_state(cls, state_dict: dict[str, Any], config: dict[str, Any]) -> "OptimizerModel":
        """From a module's weights (`state_dict`) and the config it was built with."""
        module = build_module(ModelConfig(**{k: v for k, v in config.items() if k in ModelConfig.model_fields}))
        module.load_state_dict(state_dict)
        return cls(module, config)

    @property
    def version(self) -> str | None:
        return self.path.name if self.path is not None else None

    def state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "config": self.config, "feature_version": FEATURE_VERSION,
                "node_features": list(NODE_FEATURES), "global_features": list(GLOBAL_FEATURES),
                "samples": self.samples}

    def save(self, directory: str | Path, metadata: dict[str, Any]) -> Path:
        """Write the next version under `directory` (e.g. models/optimizer) and return its folder."""
        from ..prediction.checkpoints import save_checkpoint

        self.path = save_checkpoint(Path(directory), self.state(), {"kind": "makespan-gnn", **metadata})
        return self.path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "OptimizerModel":
        """A saved model: a version folder (holding model.pt), a folder of versions (its latest), or by default
        the shipped `models/optimizer` latest."""
        from ..prediction.checkpoints import load_checkpoint

        directory = Path(path) if path is not None else resources.location("models") / KIND
        if (directory / "metadata.json").exists():
            state, metadata, found = load_checkpoint(directory.parent, directory.name)
        else:
            state, metadata, found = load_checkpoint(directory, "latest")
        if (state.get("feature_version") != FEATURE_VERSION or state.get("node_features") != list(NODE_FEATURES)
                or state.get("global_features") != list(GLOBAL_FEATURES)):
            raise PredictionError(f"optimizer model '{found}' was trained on other graph features (version "
                                  f"{state.get('feature_version')}, now {FEATURE_VERSION}); retrain it with "
                                  "`orchestrator train optimizer`")
        model = cls.load_state(state["model"], state["config"])
        model.metadata, model.path, model.samples = metadata, found, int(state.get("samples", SAMPLES))
        return model

    def predict(self, dag: DagArrays, durations: TaskDurations, cluster: Cluster, *, status=None,
                elapsed: np.ndarray | None = None, policy: str = "srpt-cp",
                categories: Sequence[str] | None = None, input_bytes: np.ndarray | None = None) -> GnnPrediction:
        """Makespan distribution (from now) and per-task gains of a workflow on `cluster` (arguments as
        `graph.featurize`; pass `categories` when known, else they are guessed from the task ids)."""
        t0 = time.perf_counter()
        data = featurize(dag, durations, cluster, categories=categories, status=status, elapsed=elapsed,
                         policy=policy, input_bytes=input_bytes, samples=self.samples)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 1,000-task forward takes ~4 ms on one thread; more threads only add
        try:  # contention (measured 25x slower with 2 threads while the other core was busy)
            with torch.inference_mode():
                graph, node = self.module(data)
        finally:
            torch.set_num_threads(threads)
        scale = float(data.time_scale[0])
        mean, p50, p90 = (float(v) * scale for v in torch.exp(graph[0].double()))
        gain = node[:, 0].double().numpy() * SPEEDUP * mean / dag.n
        codes = status_codes(status, dag.n)
        if codes is not None:
            gain = np.where(codes == DONE, 0.0, gain)
        if not np.isfinite([mean, p50, p90]).all():
            raise AnalysisInputError("the optimizer model gave a non-finite makespan for this workflow")
        return GnnPrediction(mean, p50, p90, gain, time.perf_counter() - t0)

    def predict_workflow(self, wf, cluster: Cluster, durations: TaskDurations | None = None,
                         **kw) -> GnnPrediction:
        """`predict` for a `Workflow`, with its categories and input sizes (durations: `durations_for(wf)`)."""
        from ..dag import dag_arrays
        from .durations import durations_for

        kw.setdefault("categories", [t.category for t in wf.tasks])
        kw.setdefault("input_bytes", np.array([np.nan if t.input_bytes is None else t.input_bytes
                                               for t in wf.tasks], dtype=np.float64))
        return self.predict(dag_arrays(wf), durations or durations_for(wf), cluster, **kw)


def train_leave_one_out(family: str, *, seed: int = 0, epochs: int | None = None,
                        cache_dir: str | Path | None = None, progress: Callable[[str], None] = print,
                        traces: str | Path | None = None, config: OptimizerConfig | None = None) -> OptimizerModel:
    """A model trained in process on the training families other than `family`, with the shipped model's
    architecture and hyperparameters (else the config's), for scoring `family` as never seen."""
    cfg = config or load_config()
    params = cfg.model.model_dump()
    try:
        shipped = OptimizerModel.load()
        params.update({k: v for k, v in shipped.config.items() if k in ModelConfig.model_fields})
    except Exception:  # noqa: BLE001 - no shipped model: the config's parameters
        pass
    spec = cfg.dataset.spec(traces)
    others = tuple(f for f in spec.families if f != family)
    t0 = time.perf_counter()
    examples = build_dataset(spec, cache_dir if cache_dir is not None else cfg.dataset.cache_path(), progress,
                             families=others)
    epochs = epochs or cfg.train.epochs
    progress(f"training the optimizer GNN without {family}: {len(examples)} graphs of {', '.join(others)}, "
             f"{epochs} epochs")
    module = train_model(examples, params, epochs, seed, threads=cfg.train.threads)
    progress(f"trained without {family} in {time.perf_counter() - t0:.0f}s")
    model = OptimizerModel.from_module(module, params)
    model.metadata = {"trained_without": family, "families": list(others), "graphs": len(examples)}
    return model


__all__ = ["MakespanGNN", "OptimizerModel", "GnnPrediction", "train_model", "evaluate", "losses",
           "train_leave_one_out", "load_config", "OptimizerConfig", "ModelConfig", "build_module", "CONVS"]
