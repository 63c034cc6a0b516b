"""A ResNet of basic blocks with a configurable width, for the small synthetic-data models.

detectron2's `build_resnet_backbone` fixes the widths of ResNet-18/34 (RES2_OUT_CHANNELS must be 64).
`build_narrow_resnet_backbone` builds the same network (detectron2's `BasicStem`, `BasicBlock` and
`ResNet`, so the state-dict keys are those of a ResNet-18/34: `stem.conv1.*`, `res2.0.conv1.*`, ...)
with MODEL.RESNETS.STEM_OUT_CHANNELS for the stem and RES2_OUT_CHANNELS doubled at every later stage.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

__all__ = ["build_narrow_resnet_backbone"]

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@BACKBONE_REGISTRY.register()
def build_narrow_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """ResNet-18/34 (MODEL.RESNETS.DEPTH) whose stage widths are RES2_OUT_CHANNELS x (1, 2, 4, 8)."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"build_narrow_resnet_backbone: MODEL.RESNETS.DEPTH is {r.DEPTH}; it builds basic-block "
            f"ResNets only (depth {sorted(_BLOCKS_PER_STAGE)})"
        )
    if r.RES5_DILATION != 1 or any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "build_narrow_resnet_backbone: RES5_DILATION and DEFORM_ON_PER_STAGE are not supported"
        )
    norm = r.NORM
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=norm)
    stages, in_channels = [], r.STEM_OUT_CHANNELS
    for i, num_blocks in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        out_channels = r.RES2_OUT_CHANNELS * 2**i
        first_stride = 1 if i == 0 else 2
        stages.append(
            ResNet.make_stage(
                block_class=BasicBlock,
                num_blocks=num_blocks,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                in_channels=in_channels,
                out_channels=out_channels,
                norm=norm,
            )
        )
        in_channels = out_channels
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
