"""Tiny torch policies for offline_rl tests."""

from __future__ import annotations

import torch


class ConstantAction(torch.nn.Module):
    """A greedy policy that answers the same action index for every observation."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.action, dtype=torch.int64)
