"""Build and install the `mdqe` package and its multi-scale deformable attention extension.

The C++ CPU kernel is always built. The CUDA kernel is added when CUDA is available at build time or
when FORCE_CUDA=1 (set TORCH_CUDA_ARCH_LIST to choose the GPU architectures, e.g. "8.0;9.0").
Build in place for development with `pip install --no-build-isolation -e .`.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("ops", "csrc")


def _with_cuda() -> bool:
    import torch

    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions() -> list:
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
    cxx_flags = ["-O3", "-fopenmp"]
    kwargs = {
        "include_dirs": [os.path.join(HERE, CSRC)],
        "extra_link_args": ["-fopenmp"],
    }
    if _with_cuda() and cuda_sources:
        return [
            CUDAExtension(
                "mdqe._C",
                sources + cuda_sources,
                define_macros=[("WITH_CUDA", None)],
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
                **kwargs,
            )
        ]
    return [CppExtension("mdqe._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)]


setup(
    name="mdqe",
    version="0.1.0",
    description="MDQE: Mining Discriminative Query Embeddings to Segment Occluded Instances on "
    "Challenging Videos (CVPR 2023), a detectron2 reimplementation",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["mdqe", "mdqe.*"]),
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
