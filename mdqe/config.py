"""Placeholder: replaced by the full add_mdqe_config (every key of the original, with defaults)."""

from detectron2.config import CfgNode


def add_mdqe_config(cfg: CfgNode) -> None:
    """Add MDQE's config keys to `cfg` in place."""
    cfg.MODEL.MDQE = CfgNode()
