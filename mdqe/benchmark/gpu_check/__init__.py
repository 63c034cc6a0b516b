"""GPU check: build the CUDA op, run the GPU tests and measure MDQE on one GPU, in minutes.

`tools/gpu_check.py` (and `tools/gpu_check.sh`) is the command; the logic is here, by concern:

- `bundle`: `--prepare` (here, with pip's index) gathers what a bare GPU machine with its own torch lacks
  (detectron2 and its pure-Python dependencies, pycocotools) as cp312 manylinux x86_64 wheels plus
  detectron2's pinned sdist into a git-ignored folder that travels with the working tree; the run installs
  those offline into a temporary target (only the distributions the machine lacks).
- `steps`: the steps, their rows, timeouts and process environments, in the order they run; `worker` runs
  one step in a process of its own, `runner` runs them all within the overall budget (540 s).
- `system_steps`: the environment; building `mdqe._C` in place with the CUDA kernel for the GPU present
  (TORCH_CUDA_ARCH_LIST from its compute capability); `pytest -m gpu`.
- `msda_steps` (shapes in `op_shapes`): the deformable-attention op of each backend (cuda: the CUDA
  kernel of mdqe._C, triton, pytorch: the grid_sample reference), forward and forward+backward, fp32 and
  bf16, at R50_ovis_360's encoder, decoder cross-attention and decoder temporal shapes, each with its
  largest difference from the float64 reference.
- `model_steps`: whole-video inference of R50_ovis_360 (60 frames 360x640) with each backend and of
  swinl_ovis (60 frames 480x854, `auto`), and training iterations of R50_ovis_360 (2 clips of 4 frames
  384x640) with each backend, float32 and AMP, with peak GPU memory.
- `report`: the table, with every row of every step, and why a row is missing.

The dry run (CPU, tiny sizes, no build) runs every step as the GPU run does, the Triton rows in Triton's
interpreter (TRITON_INTERPRET=1), so that the test suite proves the wiring.
"""
