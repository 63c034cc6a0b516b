"""MDQE's config keys on top of detectron2's `get_cfg()`.

Every key the original MDQE code or configs read that detectron2 v0.6 lacks is defined here, with the
original default. Keys the original defines but never uses keep their defaults so that every original
YAML and command line still merges, and say so in their comment.

The original split this across `add_mdqe_config` and `add_swinl_config`, and its `train_net.py` called
both for every config (ResNet ones included). Here one call does both, so a cfg built by
`add_mdqe_config` alone matches the original's, with one exception: the original's add_swinl_config
overwrote SOLVER.OPTIMIZER with "AdamW", a spelling its optimizer builder rejects (every original YAML
sets "ADAMW" back); here the default stays "ADAMW".
"""

from detectron2.config import CfgNode


def add_mdqe_config(cfg: CfgNode) -> None:
    """Add MDQE's config keys (and the Swin-L backbone keys) to `cfg` in place.

    Args:
        cfg: a detectron2 config, typically from `detectron2.config.get_cfg()`. Existing
            `MODEL.MDQE`, `INPUT.PSEUDO`, `INPUT.LSJ_AUG` and `MODEL.SWIN` nodes are replaced.
    """
    _add_data_config(cfg)
    _add_model_config(cfg)
    _add_transformer_config(cfg)
    _add_inference_config(cfg)
    _add_solver_config(cfg)
    _add_swin_config(cfg)


def _add_data_config(cfg: CfgNode) -> None:
    # Sampling weights of the TRAIN datasets, one per entry of DATASETS.TRAIN: each draw of the training
    # stream picks its source dataset with probability proportional to its weight (mdqe/data/build.py), so
    # they need not sum to 1. Empty: every dataset weighs 1.
    cfg.DATASETS.DATASET_RATIO = []

    # Frame count T of the clips the checkpoint in MODEL.WEIGHTS was trained with. When it differs from
    # SAMPLING_FRAME_NUM (and training does not resume), the temporal weights are inflated to T frames.
    cfg.INPUT.PRETRAIN_FRAME_NUM = 1
    # Frames per training clip, T. Also sizes the frame-dependent parameters of the model.
    cfg.INPUT.SAMPLING_FRAME_NUM = 3
    # Training clips draw their other T-1 frames within this distance of a random reference frame.
    cfg.INPUT.SAMPLING_FRAME_RANGE = 10
    # Shuffle the order of the sampled frames instead of keeping them in time order.
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
    # Extra augmentations for real videos: any of "brightness", "contrast", "saturation", "rotation".
    cfg.INPUT.AUGMENTATIONS = []

    # Pseudo-clips made from COCO images (T augmented copies of one image) when COCO is a source dataset
    # for video training; the counterparts of the INPUT.* keys of the same names.
    cfg.INPUT.PSEUDO = CfgNode()
    # Same choices as INPUT.AUGMENTATIONS; "rotation" rotates smoothly over the clip.
    cfg.INPUT.PSEUDO.AUGMENTATIONS = ["rotation"]
    # Shortest-edge sizes to draw from for pseudo-clips.
    cfg.INPUT.PSEUDO.MIN_SIZE_TRAIN = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768)
    # Longest-edge cap for pseudo-clips.
    cfg.INPUT.PSEUDO.MAX_SIZE_TRAIN = 768
    # "choice_by_clip": one size per clip ("choice"/"range" as in detectron2, with "_by_clip" variants).
    cfg.INPUT.PSEUDO.MIN_SIZE_TRAIN_SAMPLING = "choice_by_clip"
    cfg.INPUT.PSEUDO.CROP = CfgNode()
    # With probability 0.5 per clip, resize and crop a smoothly moving window (as INPUT.CROP.*).
    cfg.INPUT.PSEUDO.CROP.ENABLED = False
    # A detectron2 RandomCrop type: "relative", "relative_range", "absolute", "absolute_range".
    cfg.INPUT.PSEUDO.CROP.TYPE = "absolute_range"
    # Crop size, interpreted according to TYPE.
    cfg.INPUT.PSEUDO.CROP.SIZE = (384, 600)

    # Large-scale jitter, implemented by the original but enabled by none of its configs.
    cfg.INPUT.LSJ_AUG = CfgNode()
    # Replace the resize/crop pipeline by random rescale + fixed-size crop.
    cfg.INPUT.LSJ_AUG.ENABLED = False
    # Side of the square output of large-scale jitter.
    cfg.INPUT.LSJ_AUG.IMAGE_SIZE = 1024
    # Range of the random rescale factor relative to IMAGE_SIZE.
    cfg.INPUT.LSJ_AUG.MIN_SCALE = 0.1
    cfg.INPUT.LSJ_AUG.MAX_SCALE = 2.0


def _add_model_config(cfg: CfgNode) -> None:
    cfg.MODEL.MDQE = CfgNode()
    # Number of object categories, K (no background class: classification is per-class sigmoid).
    cfg.MODEL.MDQE.NUM_CLASSES = 80

    # The swappable parts, by registry name (see mdqe/modeling/build.py and docs/extending.md). Not in the
    # original, whose parts are these classes.
    # Pixel encoder (PIXEL_ENCODER_REGISTRY).
    cfg.MODEL.MDQE.ENCODER_NAME = "DeformableEncoder"
    # Query decoder (DECODER_REGISTRY).
    cfg.MODEL.MDQE.DECODER_NAME = "QueryDecoder"
    # Training criterion (CRITERION_REGISTRY).
    cfg.MODEL.MDQE.CRITERION_NAME = "SetCriterion"
    # Query-to-target matcher of the criterion (MATCHER_REGISTRY).
    cfg.MODEL.MDQE.MATCHER_NAME = "HungarianMatcher"

    # Losses.
    # Not in the original (which computes exactly these): the criterion's losses, by name, in this order.
    cfg.MODEL.MDQE.LOSSES = ["query_init_labels", "query_init_reid", "labels", "boxes", "masks"]
    # Not in the original (which fixes 2): weight of the focal class losses (loss_cls and the query-init
    # loss_sem_cls_query_init).
    cfg.MODEL.MDQE.CLASS_WEIGHT = 2.0
    # Not in the original (whose default weight 0.5 they get): weight of the two contrastive losses on the
    # initial queries (loss_reid_query_init, loss_reid_query_init_aux).
    cfg.MODEL.MDQE.REID_WEIGHT = 0.5
    # Not in the original: [term, weight] pairs for the terms of losses added to LOSSES; a term without a
    # weight is an error when the criterion is built.
    cfg.MODEL.MDQE.EXTRA_LOSS_WEIGHTS = []
    # Weight of the L1 and GIoU box losses, and the box cost weight of the matcher.
    cfg.MODEL.MDQE.BOX_WEIGHT = 2.0
    # Weight of the per-pixel mask BCE loss.
    cfg.MODEL.MDQE.MASK_WEIGHT = 4.0
    # Weight of the dice loss, and the mask cost weight of the matcher.
    cfg.MODEL.MDQE.DICE_WEIGHT = 4.0
    # Losses on every decoder layer. The original passes this on but computes them on every layer anyway.
    cfg.MODEL.MDQE.DEEP_SUPERVISION = True
    # Weight of unmatched queries in the focal classification loss.
    cfg.MODEL.MDQE.NO_OBJECT_WEIGHT = 1
    # Stride of the mask features. Stored by the original, which never uses it.
    cfg.MODEL.MDQE.MASK_STRIDE = 4
    # Ground-truth masks are downsampled by this factor for matching and the mask losses; predicted
    # masks are upsampled by it at inference.
    cfg.MODEL.MDQE.MATCH_STRIDE = 4
    # Unused by the original: the mask-coefficient dimension is HIDDEN_DIM // 8.
    cfg.MODEL.MDQE.MASK_DIM = 32
    # Unused by the original.
    cfg.MODEL.MDQE.NUM_MASK_LAYERS = 1
    # Not in the original (whose behaviour is 1.0): initial scale (GroupNorm weight) of the mask features.
    # Only matters when training from scratch; see mdqe/modeling/mask_head.py.
    cfg.MODEL.MDQE.MASK_FEAT_INIT_SCALE = 1.0
    # Not in the original: number of mask feature channels (prototypes); 0 means HIDDEN_DIM // 8, the
    # original's (MASK_DIM above is not used by the original, and Swin-L's HIDDEN_DIM 192 gives 24).
    cfg.MODEL.MDQE.MASK_FEAT_DIM = 0
    # Not in the original (whose behaviour is False): run the per-frame part (backbone, input projections,
    # encoder, query selection, mask features) and the per-clip part (association, decoder, heads) through
    # torch.compile, for training and inference; criterion, matcher and tracker stay eager. The first
    # sizes get static graphs; the first other size makes the sizes dynamic, and no later size recompiles
    # (mdqe/modeling/compile.py). The first call of each part compiles it (minutes for ResNet-50 on a CPU;
    # BENCHMARKS.md "torch.compile").
    cfg.MODEL.MDQE.COMPILE = False
    # Not in the original (whose behaviour is False): keep the backbone's weights and input in the
    # channels-last memory format (faster convolutions on CPUs with oneDNN; same results within float
    # rounding). BENCHMARKS.md "torch.compile, channels_last and bfloat16 on the CPU" has the figures.
    cfg.MODEL.MDQE.CHANNELS_LAST = False
    # Not in the original (whose behaviour is False): run the network (the per-frame and per-clip parts)
    # under bfloat16 autocast, on CPU or CUDA; the deformable-attention encoder and decoder stay in float32
    # as the original's autocast-free regions, and criterion, matcher and tracker get float32 outputs.
    # Opt-in: it changes the results (its AP effect is in BENCHMARKS.md).
    cfg.MODEL.MDQE.AUTOCAST_BF16 = False


def _add_transformer_config(cfg: CfgNode) -> None:
    # Transformer.
    # Heads of every attention layer.
    cfg.MODEL.MDQE.NHEADS = 8
    # Read by the original but never passed on: every dropout in the model is 0.
    cfg.MODEL.MDQE.DROPOUT = 0.1
    # Hidden-size ratio of the decoder FFN (the encoder FFN ratio is fixed at 4).
    cfg.MODEL.MDQE.MLP_RATIO = 4
    # Number of encoder layers.
    cfg.MODEL.MDQE.ENC_LAYERS = 6
    # Number of decoder layers.
    cfg.MODEL.MDQE.DEC_LAYERS = 6
    # Unused by the original (all layers are post-norm).
    cfg.MODEL.MDQE.PRE_NORM = False

    # Deformable attention.
    # Channel width C of the encoder, decoder and heads.
    cfg.MODEL.MDQE.HIDDEN_DIM = 256
    # Rounded down to a square grid of queries: int(sqrt(200))**2 = 196 (14 x 14).
    cfg.MODEL.MDQE.NUM_OBJECT_QUERIES = 200
    # Feature levels seen by the deformable attention (3 backbone levels + 1 extra strided conv).
    cfg.MODEL.MDQE.NUM_FEATURE_LEVELS = 4
    # Sampling points per head and level in the encoder.
    cfg.MODEL.MDQE.ENC_NUM_POINTS = 4
    # Sampling points per head and level in the decoder.
    cfg.MODEL.MDQE.DEC_NUM_POINTS = 4
    # Add the temporal cross-attention of instance queries across the clip's frames.
    cfg.MODEL.MDQE.DEC_TEMPORAL = True

    # Query initialisation and inter-frame query association.
    # Output size of the embedding used to associate grid queries across frames.
    cfg.MODEL.MDQE.QUERY_EMBED_DIM = 64
    # Side w of the grid window in which queries are associated across frames (and of the
    # contrastive loss).
    cfg.MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION = 5

    # Inter-instance mask repulsion loss.
    # Enable the loss.
    cfg.MODEL.MDQE.INTERINST_MASK_LOSS_ENABLED = True
    # Box-IoU above which another instance counts as nearby and repels the mask.
    cfg.MODEL.MDQE.INTERINST_MASK_THRESHOLD = 0.1


def _add_inference_config(cfg: CfgNode) -> None:
    # Inference.
    # Frames between the starts of consecutive test clips.
    cfg.MODEL.MDQE.CLIP_STRIDE = 1
    # Frames per test clip.
    cfg.MODEL.MDQE.SAMPLING_FRAME_NUM_TEST = 5
    # Frames per window of the cross-clip tracker: the tracks' class scores are averaged per window and the
    # video-level scores merge the windows (mdqe/inference/tracker.py). Not the encoding chunk: per-frame
    # features are computed once per frame, SAMPLING_FRAME_NUM_TEST frames at a time.
    cfg.MODEL.MDQE.WINDOW_FRAME_NUM_TEST = 20
    # Capacity of the cross-clip tracker's fixed-size memory.
    cfg.MODEL.MDQE.MAX_NUM_INSTANCES = 50
    # Keep the tracker memory on CPU (long or high-resolution videos).
    cfg.MODEL.MDQE.MERGE_ON_CPU = False
    # Multi-label output (a query may emit several classes); used by COCO image inference only.
    cfg.MODEL.MDQE.MULTI_CLS_ON = True
    # Score threshold for keeping a query at test time.
    cfg.MODEL.MDQE.APPLY_CLS_THRES = 0.05


def _add_solver_config(cfg: CfgNode) -> None:
    # "ADAMW" or "SGD" (with SOLVER.MOMENTUM).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning-rate factor of the backbone's parameters.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Unused by the original (INPUT.PRETRAIN_FRAME_NUM is the key that is read).
    cfg.SOLVER.NUM_PRETRAIN_FRAMES = 1


def _add_swin_config(cfg: CfgNode) -> None:
    """The keys of the original's `add_swinl_config` (Swin-L defaults), which it applied to every cfg."""
    cfg.MODEL.SWIN = CfgNode()
    # Channels of the first stage; stage i has EMBED_DIM * 2**i.
    cfg.MODEL.SWIN.EMBED_DIM = 192
    # Stages returned by the backbone (strides 8, 16, 32).
    cfg.MODEL.SWIN.OUT_FEATURES = ["stage3", "stage4", "stage5"]
    # Blocks per stage.
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 18, 2]
    # Attention heads per stage.
    cfg.MODEL.SWIN.NUM_HEADS = [6, 12, 24, 48]
    # Attention window side (the original's Swin-L YAMLs set 12 for the Swin V2 backbone).
    cfg.MODEL.SWIN.WINDOW_SIZE = 24
    # Hidden-size ratio of the Swin MLPs.
    cfg.MODEL.SWIN.MLP_RATIO = 4
    # Stochastic-depth rate of the deepest block.
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.2
    # Absolute position embedding after the patch embedding.
    cfg.MODEL.SWIN.APE = False
    # Unused by the original (no config uses an FPN backbone).
    cfg.MODEL.FPN.TOP_LEVELS = 2
    # Nothing frozen: the Swin backbone reads this as its frozen stages, and since the original set it
    # for every cfg, ResNet backbones train all stages too (their BN stays frozen via RESNETS.NORM).
    cfg.MODEL.BACKBONE.FREEZE_AT = -1
