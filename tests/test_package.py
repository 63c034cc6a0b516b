"""`import mdqe` registers everything, and the installed detectron2 behaves as INSTALL.md says."""

import importlib.util
from pathlib import Path

import pytest


def test_import_registers_meta_architecture_backbone_and_datasets():
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    import mdqe  # noqa: F401

    assert "MDQE" in META_ARCH_REGISTRY
    assert "build_swinv2_backbone" in BACKBONE_REGISTRY
    names = set(DatasetCatalog.list())
    for split in ("train", "val", "test", "dev"):
        assert {f"ytvis_2019_{split}", f"ytvis_2021_{split}", f"ytvis_ovis_{split}"} <= names
    for split in ("train", "val"):
        assert {f"coco2ytvis2019_{split}", f"coco2ytvis2021_{split}", f"coco2ovis_{split}"} <= names
    assert {"synthetic_vis_train", "synthetic_vis_val"} <= names
    assert len(MetadataCatalog.get("ytvis_ovis_val").thing_classes) == 25


def test_compiled_op_is_built():
    assert importlib.util.find_spec("mdqe._C") is not None, "run `bash tools/install.sh` to build mdqe._C"


def test_detectron2_without_cpp_ops_explains_itself():
    import detectron2

    marker = Path(detectron2.__file__).parent / "INSTALLED_BY_MDQE"
    if not marker.exists():
        pytest.skip("detectron2 was not installed by tools/install_detectron2.py (an official build)")
    from detectron2 import _C

    with pytest.raises(ImportError, match="installed without its C\\+\\+ ops"):
        _C.deform_conv_forward  # noqa: B018
