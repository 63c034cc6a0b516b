"""Training and evaluation engine: trainer, optimizer, launcher and the video inference loop."""

from .launch import launch
from .optimizer import build_optimizer

__all__ = ["build_optimizer", "launch"]
