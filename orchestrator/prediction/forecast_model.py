"""The demand LSTM: reads the last W steps of a normalised usage series and outputs quantiles for the next H."""

from __future__ import annotations

import torch
from torch import nn

from .task_model import monotone_quantiles

WINDOW_FEATURES = 4  # value, value one season earlier, sin and cos of the time of day
HORIZON_FEATURES = 3  # value one season before the target step, sin and cos of its time of day


class DemandLSTM(nn.Module):
    """window (B, W, 4) and horizon (B, H, 3) -> quantiles (B, H, Q), non-decreasing along Q.

    Values are normalised (see `forecaster.normalise`). The output is an offset from the last observed value:
    an LSTM summarises the window into (B, hidden); with the flattened horizon features an MLP maps it to
    H x Q numbers, made monotone across quantiles.
    """

    def __init__(self, horizon: int = 12, hidden_size: int = 32, num_quantiles: int = 3):
        super().__init__()
        self.horizon, self.num_quantiles = horizon, num_quantiles
        self.lstm = nn.LSTM(WINDOW_FEATURES, hidden_size, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden_size + horizon * HORIZON_FEATURES, 2 * hidden_size), nn.ReLU(),
            nn.Linear(2 * hidden_size, horizon * num_quantiles),
        )

    def forward(self, window: torch.Tensor, horizon: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(window)
        raw = self.head(torch.cat([h[-1], horizon.flatten(1)], dim=1)).view(-1, self.horizon, self.num_quantiles)
        return window[:, -1:, :1] + monotone_quantiles(raw)
