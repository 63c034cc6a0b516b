// CUDA kernels of multi-scale deformable attention. Inputs are validated and made contiguous by the
// dispatcher in vision.cpp; shapes are documented there.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace mdqe {

at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

}  // namespace mdqe
