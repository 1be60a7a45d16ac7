"""The learned scheduler's network: a graph encoder over the padded observation (`observation`), a score per
(candidate task, node) pair, and a value head. A torch `nn.Module` of its own (`SchedulerNet`, what the runtime
loads for inference) wrapped by an RLlib `TorchRLModule` for training with PPO on RLlib's new API stack.

The padded graph is rebuilt into one graph batch (offsets per observation, padding edges dropped) and encoded by
two rounds of GraphSAGE message passing (torch-geometric) along the dependencies, both ways; workflow embeddings
are the mean of their tasks' plus the workflow's features; the cluster embedding the mean of the workflows' plus
the cluster features. A candidate's logit is an MLP of its task, workflow and cluster embeddings **plus a prior**:
`-prior_weight x` its rank in the srpt-cp order, and for the node `-node_prior x` its slot (first fit). The MLPs'
last layers start at zero, so an untrained policy acting greedily *is* srpt-cp; training learns where to deviate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.nn import SAGEConv

from .observation import (
    GLOBAL_FEATURES,
    GRAPH_FEATURES,
    JOB_FEATURES,
    MAX_CANDIDATES,
    MAX_JOBS,
    MAX_NODES,
    NODE_FEATURES_N,
)

FLOAT_MIN = -3.4e38


def _mlp(inp: int, hidden: int, out: int, zero_last: bool = False) -> nn.Sequential:
    last = nn.Linear(hidden, out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), last)


class SchedulerNet(nn.Module):
    def __init__(self, hidden: int = 64, prior_weight: float = 2.0, node_prior: float = 1.0):
        super().__init__()
        self.hidden = hidden
        self.prior_weight = prior_weight
        self.node_prior = node_prior
        self.embed = nn.Sequential(nn.Linear(GRAPH_FEATURES, hidden), nn.ReLU())
        self.down = nn.ModuleList([SAGEConv(hidden, hidden) for _ in range(2)])  # parent -> child
        self.up = nn.ModuleList([SAGEConv(hidden, hidden) for _ in range(2)])  # child -> parent
        self.job = nn.Sequential(nn.Linear(hidden + JOB_FEATURES, hidden), nn.ReLU())
        self.glob = nn.Sequential(nn.Linear(hidden + GLOBAL_FEATURES, hidden), nn.ReLU())
        self.task_head = _mlp(3 * hidden, hidden, 1, zero_last=True)
        self.node_head = _mlp(hidden + NODE_FEATURES_N, hidden // 2, 1, zero_last=True)
        self.value_head = _mlp(hidden + GLOBAL_FEATURES, hidden, 1)

    @classmethod
    def from_config(cls, model: dict | None) -> "SchedulerNet":
        """The network of a `model` section (configs/scheduler.yaml, a model's meta.json); missing keys: defaults."""
        model = model or {}
        return cls(hidden=int(model.get("hidden", 64)), prior_weight=float(model.get("prior_weight", 2.0)),
                   node_prior=float(model.get("node_prior", 1.0)))

    def encode(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, candidates x nodes] masked, value features [B, hidden + global])."""
        x = obs["x"]
        b, n, _ = x.shape
        h = self.embed(x).reshape(b * n, -1)
        offsets = (torch.arange(b, device=x.device) * n).view(b, 1)
        ei = obs["edge_index"].long()
        valid = obs["edge_mask"] > 0.5
        src = (ei[:, 0, :] + offsets)[valid]
        dst = (ei[:, 1, :] + offsets)[valid]
        down = torch.stack([src, dst])
        up = torch.stack([dst, src])
        for conv_d, conv_u in zip(self.down, self.up):
            h = h + torch.relu(conv_d(h, down) + conv_u(h, up))
        h = h.reshape(b, n, -1) * obs["node_mask"].unsqueeze(-1)

        # workflow embeddings: the mean of their graph nodes, with the workflow's features
        node_job = obs["node_job"].long()
        one_hot = torch.nn.functional.one_hot(node_job, MAX_JOBS).float() * obs["node_mask"].unsqueeze(-1)
        counts = one_hot.sum(1).clamp(min=1.0)  # [B, J]
        job_h = torch.einsum("bnj,bnh->bjh", one_hot, h) / counts.unsqueeze(-1)
        job_e = self.job(torch.cat([job_h, obs["jobs"]], -1)) * obs["job_mask"].unsqueeze(-1)
        jobs_n = obs["job_mask"].sum(1, keepdim=True).clamp(min=1.0)
        glob_e = self.glob(torch.cat([job_e.sum(1) / jobs_n, obs["global"]], -1))  # [B, H]

        # candidates: their task, workflow and cluster embeddings; prior = -rank in the srpt-cp order
        cand_node = obs["cand_node"].long()
        cand_job = obs["cand_job"].long()
        task_c = torch.gather(h, 1, cand_node.unsqueeze(-1).expand(-1, -1, self.hidden))
        job_c = torch.gather(job_e, 1, cand_job.unsqueeze(-1).expand(-1, -1, self.hidden))
        feats = torch.cat([task_c, job_c, glob_e.unsqueeze(1).expand(-1, MAX_CANDIDATES, -1)], -1)
        task_logit = self.task_head(feats).squeeze(-1) - self.prior_weight * obs["cand_rank"]  # [B, C]
        node_in = torch.cat([task_c.unsqueeze(2).expand(-1, -1, MAX_NODES, -1),
                             obs["nodes"].unsqueeze(1).expand(-1, MAX_CANDIDATES, -1, -1)], -1)
        slot = torch.arange(MAX_NODES, device=x.device, dtype=x.dtype)
        node_logit = self.node_head(node_in).squeeze(-1) - self.node_prior * slot  # [B, C, K]
        logits = (task_logit.unsqueeze(-1) + node_logit).reshape(b, -1)
        logits = torch.where(obs["action_mask"] > 0.5, logits, torch.full_like(logits, FLOAT_MIN))
        return logits, torch.cat([glob_e, obs["global"]], -1)

    def value(self, value_features: torch.Tensor) -> torch.Tensor:
        return self.value_head(value_features).squeeze(-1)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode(obs)[0]
