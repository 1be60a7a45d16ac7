"""The RLlib side of the learned scheduler: `SchedulerNet` as a `TorchRLModule` with a value function, for PPO on
RLlib's new API stack. (Kept apart from `module` so that inference does not import RLlib.)"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from .module import SchedulerNet


class SchedulerRLModule(TorchRLModule, ValueFunctionAPI):
    """Model config: `hidden`, `prior_weight`, `node_prior` (see `SchedulerNet`)."""

    def setup(self):
        self.net = SchedulerNet.from_config(self.model_config)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, _ = self.net.encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, emb = self.net.encode(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: emb}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
        if embeddings is None:
            _, embeddings = self.net.encode(batch[Columns.OBS])
        return self.net.value(embeddings)
