// Python bindings of the multi-scale deformable attention op (module mdqe._C).
//
// Shapes, with N batch, S = sum_l H_l * W_l value tokens, M heads, D channels per head, Lq queries,
// L levels and P points:
//   value               (N, S, M, D)
//   spatial_shapes      (L, 2) int64, (H_l, W_l)
//   level_start_index   (L,) int64
//   sampling_locations  (N, Lq, M, L, P, 2) normalised (x, y)
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M * D)
// The inputs are validated here, made contiguous and handed to the CPU or CUDA kernel by device.

#include <torch/extension.h>

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

#ifndef WITH_CUDA
[[noreturn]] void fail_without_cuda() {
  TORCH_CHECK(
      false,
      "ms_deform_attn: mdqe._C was built without CUDA; rebuild it with a CUDA toolkit "
      "(FORCE_CUDA=1 pip install --no-build-isolation -e .)");
}
#endif

at::Tensor forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto args = std::make_tuple(
      value.contiguous(),
      spatial_shapes.contiguous(),
      level_start_index.contiguous(),
      sampling_locations.contiguous(),
      attention_weights.contiguous());
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return std::apply(ms_deform_attn_cuda_forward, args);
#else
    fail_without_cuda();
#endif
  }
  return std::apply(ms_deform_attn_cpu_forward, args);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
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
  const auto args = std::make_tuple(
      value.contiguous(),
      spatial_shapes.contiguous(),
      level_start_index.contiguous(),
      sampling_locations.contiguous(),
      attention_weights.contiguous(),
      grad_output.contiguous());
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return std::apply(ms_deform_attn_cuda_backward, args);
#else
    fail_without_cuda();
#endif
  }
  return std::apply(ms_deform_attn_cpu_backward, args);
}

}  // namespace
}  // namespace mdqe

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention kernels (CPU, and CUDA when built with it)";
  m.def(
      "ms_deform_attn_forward",
      &mdqe::forward,
      "Multi-scale deformable attention forward: (value, spatial_shapes, level_start_index, "
      "sampling_locations, attention_weights) -> output (N, Lq, M*D)");
  m.def(
      "ms_deform_attn_backward",
      &mdqe::backward,
      "Multi-scale deformable attention backward: (..., grad_output) -> (grad_value, "
      "grad_sampling_locations, grad_attention_weights)");
  m.def("with_cuda", []() {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
