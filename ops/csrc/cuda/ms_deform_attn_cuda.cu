// CUDA kernels of multi-scale deformable attention.
//
// One warp per (batch, query, head): its lanes cover the D channels (lane, lane + 32, ...), so the reads of
// a value row (D contiguous channels in the (N, S, M, D) layout) are coalesced, and the stencil of a sample
// is the same for the whole warp (no divergence). Arithmetic is in at::opmath_type (float for half and
// bfloat16). Backward: the location and weight gradients of a sample are warp reductions of per-channel
// dot products, written by lane 0; the value gradient is scattered with atomic adds into an opmath buffer,
// cast to the value's dtype at the end.

#include "cuda/ms_deform_attn_cuda.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs the cuSPARSE/cuBLAS headers

#include "ms_deform_attn_common.h"

namespace mdqe {
namespace {

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

int64_t num_blocks(int64_t warps) {
  return (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
}

template <typename scalar_t>
__global__ void forward_kernel(
    Sizes z,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    scalar_t* __restrict__ output) {
  using T = at::opmath_type<scalar_t>;
  const int64_t qm = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (qm >= z.batch * z.queries * z.heads) {
    return;
  }
  const int64_t m = qm % z.heads;
  const int64_t n = qm / (z.queries * z.heads);
  const int64_t row_stride = z.heads * z.channels;
  const int64_t samples = z.levels * z.points;
  const scalar_t* loc = locations + qm * samples * 2;
  const scalar_t* attn = weights + qm * samples;
  Stencil<T> s;
  for (int64_t d = lane; d < z.channels; d += kWarpSize) {
    T acc = 0;
    for (int64_t l = 0; l < z.levels; ++l) {
      const scalar_t* level_value = value + (n * z.tokens + starts[l]) * row_stride + m * z.channels + d;
      for (int64_t p = 0; p < z.points; ++p) {
        const int64_t i = l * z.points + p;
        if (!make_stencil(
                static_cast<T>(loc[2 * i]), static_cast<T>(loc[2 * i + 1]), shapes[2 * l], shapes[2 * l + 1], s)) {
          continue;
        }
        const T a = static_cast<T>(attn[i]);
        for (int c = 0; c < 4; ++c) {
          if (s.pixel[c] >= 0) {
            acc += a * s.weight[c] * static_cast<T>(level_value[s.pixel[c] * row_stride]);
          }
        }
      }
    }
    output[qm * z.channels + d] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(
    Sizes z,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    const scalar_t* __restrict__ grad_output,
    at::opmath_type<scalar_t>* __restrict__ grad_value,  // (N, S, M, D), zero-initialised
    scalar_t* __restrict__ grad_locations,
    scalar_t* __restrict__ grad_weights) {
  using T = at::opmath_type<scalar_t>;
  const int64_t qm = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (qm >= z.batch * z.queries * z.heads) {
    return;  // whole warps leave together, so the shuffles below see full warps
  }
  const int64_t m = qm % z.heads;
  const int64_t n = qm / (z.queries * z.heads);
  const int64_t row_stride = z.heads * z.channels;
  const int64_t samples = z.levels * z.points;
  const scalar_t* loc = locations + qm * samples * 2;
  const scalar_t* attn = weights + qm * samples;
  const scalar_t* grad_out = grad_output + qm * z.channels;
  Stencil<T> s;
  for (int64_t l = 0; l < z.levels; ++l) {
    const int64_t height = shapes[2 * l];
    const int64_t width = shapes[2 * l + 1];
    const int64_t offset = (n * z.tokens + starts[l]) * row_stride + m * z.channels;
    for (int64_t p = 0; p < z.points; ++p) {
      const int64_t i = l * z.points + p;
      const T a = static_cast<T>(attn[i]);
      T dot[4] = {0, 0, 0, 0};
      const bool inside =
          make_stencil(static_cast<T>(loc[2 * i]), static_cast<T>(loc[2 * i + 1]), height, width, s);
      if (inside) {
        for (int64_t d = lane; d < z.channels; d += kWarpSize) {
          const T g = static_cast<T>(grad_out[d]);
          for (int c = 0; c < 4; ++c) {
            if (s.pixel[c] >= 0) {
              const int64_t index = offset + s.pixel[c] * row_stride + d;
              dot[c] += static_cast<T>(value[index]) * g;
              gpuAtomicAdd(grad_value + index, a * s.weight[c] * g);
            }
          }
        }
        for (int c = 0; c < 4; ++c) {
          dot[c] = warp_sum(dot[c]);
        }
      }
      if (lane == 0) {
        T grad_a = 0, grad_x = 0, grad_y = 0;
        if (inside) {
          sample_gradients(s, dot, a, height, width, grad_a, grad_x, grad_y);
        }
        grad_weights[qm * samples + i] = static_cast<scalar_t>(grad_a);
        grad_locations[(qm * samples + i) * 2] = static_cast<scalar_t>(grad_x);
        grad_locations[(qm * samples + i) * 2 + 1] = static_cast<scalar_t>(grad_y);
      }
    }
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Sizes z = get_sizes(value, sampling_locations);
  auto output = at::empty({z.batch, z.queries, z.heads * z.channels}, value.options());
  const int64_t warps = z.batch * z.queries * z.heads;
  if (warps == 0) {
    return output;
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
        forward_kernel<scalar_t><<<num_blocks(warps), kWarpSize * kWarpsPerBlock, 0, stream>>>(
            z,
            value.data_ptr<scalar_t>(),
            spatial_shapes.data_ptr<int64_t>(),
            level_start_index.data_ptr<int64_t>(),
            sampling_locations.data_ptr<scalar_t>(),
            attention_weights.data_ptr<scalar_t>(),
            output.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Sizes z = get_sizes(value, sampling_locations);
  const auto opmath = at::toOpMathType(value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(opmath));
  auto grad_locations = at::empty_like(sampling_locations);
  auto grad_weights = at::empty_like(attention_weights);
  const int64_t warps = z.batch * z.queries * z.heads;
  if (warps > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          backward_kernel<scalar_t><<<num_blocks(warps), kWarpSize * kWarpsPerBlock, 0, stream>>>(
              z,
              value.data_ptr<scalar_t>(),
              spatial_shapes.data_ptr<int64_t>(),
              level_start_index.data_ptr<int64_t>(),
              sampling_locations.data_ptr<scalar_t>(),
              attention_weights.data_ptr<scalar_t>(),
              grad_output.data_ptr<scalar_t>(),
              grad_value.data_ptr<at::opmath_type<scalar_t>>(),
              grad_locations.data_ptr<scalar_t>(),
              grad_weights.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace mdqe
