// The multi-scale deformable attention operator, registered with PyTorch's dispatcher (library `mdqe`):
//   torch.ops.mdqe.ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
//                                 attention_weights) -> output
//   torch.ops.mdqe.ms_deform_attn_backward(..., grad_output) -> (grad_value, grad_sampling_locations,
//                                                                 grad_attention_weights)
// with the C++ kernel for CPU tensors and, when built with CUDA, the CUDA kernel for CUDA tensors. The fake
// (shape) kernels and the autograd formula are registered from Python (mdqe/layers/msda_op.py), next to the
// Python API. Loading the module mdqe._C registers the operators.
//
// Shapes, with N batch, S = sum_l H_l * W_l value tokens, M heads, D channels per head, Lq queries,
// L levels and P points:
//   value               (N, S, M, D)
//   spatial_shapes      (L, 2) int64, (H_l, W_l)
//   level_start_index   (L,) int64
//   sampling_locations  (N, Lq, M, L, P, 2) normalised (x, y)
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M * D)
// The inputs are validated here, made contiguous and handed to the kernel of their device.

#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/ms_deform_attn_cpu.h"
#ifdef WITH_CUDA
#include "cuda/ms_deform_attn_cuda.h"
#endif

namespace mdqe {
namespace {

void check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), found ", value.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
      "ms_deform_attn: spatial_shapes must be (L, 2), found ",
      spatial_shapes.sizes());
  const int64_t num_levels = spatial_shapes.size(0);
  TORCH_CHECK(
      level_start_index.dim() == 1 && level_start_index.size(0) == num_levels,
      "ms_deform_attn: level_start_index must be (",
      num_levels,
      ",), found ",
      level_start_index.sizes());
  TORCH_CHECK(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes and level_start_index must be int64, found ",
      spatial_shapes.scalar_type(),
      " and ",
      level_start_index.scalar_type());
  TORCH_CHECK(
      sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
          sampling_locations.size(2) == value.size(2) && sampling_locations.size(3) == num_levels &&
          sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) with N=",
      value.size(0),
      ", M=",
      value.size(2),
      ", L=",
      num_levels,
      ", found ",
      sampling_locations.sizes());
  TORCH_CHECK(
      attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
      "ms_deform_attn: attention_weights must be ",
      sampling_locations.sizes().slice(0, 5),
      ", found ",
      attention_weights.sizes());
  TORCH_CHECK(
      sampling_locations.scalar_type() == value.scalar_type() &&
          attention_weights.scalar_type() == value.scalar_type(),
      "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype, found ",
      value.scalar_type(),
      ", ",
      sampling_locations.scalar_type(),
      ", ",
      attention_weights.scalar_type());
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(
        t->device() == value.device(),
        "ms_deform_attn: all inputs must be on value's device ",
        value.device(),
        ", found one on ",
        t->device());
  }
}

template <typename... Tensors>
auto contiguous(const Tensors&... tensors) {
  return std::make_tuple(tensors.contiguous()...);
}

void check_grad_output(const at::Tensor& value, const at::Tensor& sampling_locations, const at::Tensor& grad_output) {
  const std::vector<int64_t> out_shape = {value.size(0), sampling_locations.size(1), value.size(2) * value.size(3)};
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef(out_shape) && grad_output.scalar_type() == value.scalar_type() &&
          grad_output.device() == value.device(),
      "ms_deform_attn: grad_output must be ",
      at::IntArrayRef(out_shape),
      " ",
      value.scalar_type(),
      " on ",
      value.device(),
      ", found ",
      grad_output.sizes(),
      " ",
      grad_output.scalar_type(),
      " on ",
      grad_output.device());
}

using ForwardKernel = at::Tensor (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);
using BackwardKernel = std::tuple<at::Tensor, at::Tensor, at::Tensor> (*)(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

// The operator's kernel for one device: validated, contiguous inputs handed to that device's kernel.
template <ForwardKernel kernel>
at::Tensor forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  return std::apply(kernel, contiguous(value, spatial_shapes, level_start_index, sampling_locations, attention_weights));
}

template <BackwardKernel kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_grad_output(value, sampling_locations, grad_output);
  return std::apply(
      kernel, contiguous(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output));
}

}  // namespace
}  // namespace mdqe

TORCH_LIBRARY(mdqe, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
      "Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mdqe, CPU, m) {
  m.impl("ms_deform_attn", &mdqe::forward<mdqe::ms_deform_attn_cpu_forward>);
  m.impl("ms_deform_attn_backward", &mdqe::backward<mdqe::ms_deform_attn_cpu_backward>);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(mdqe, CUDA, m) {
  m.impl("ms_deform_attn", &mdqe::forward<mdqe::ms_deform_attn_cuda_forward>);
  m.impl("ms_deform_attn_backward", &mdqe::backward<mdqe::ms_deform_attn_cuda_backward>);
}
#endif

// The Python module only tells how the extension was built; the kernels are reached through torch.ops.mdqe.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Registers torch.ops.mdqe.ms_deform_attn (CPU kernel, and CUDA kernel when built with it)";
  m.def("with_cuda", []() {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
