// Pieces shared by the CPU and CUDA kernels of multi-scale deformable attention: the problem sizes and the
// bilinear stencil of one sampling location.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MDQE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MDQE_HOST_DEVICE inline
#endif

namespace mdqe {

struct Sizes {
  int64_t batch, tokens, heads, channels, queries, levels, points;

  // Multiply-adds of a forward pass: four corners per sample.
  int64_t work() const {
    return 4 * batch * queries * heads * levels * points * channels;
  }
};

// value (N, S, M, D), sampling_locations (N, Lq, M, L, P, 2)
inline Sizes get_sizes(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {
      value.size(0),
      value.size(1),
      value.size(2),
      value.size(3),
      sampling_locations.size(1),
      sampling_locations.size(3),
      sampling_locations.size(4)};
}

// The sampling location (x, y) in [0, 1] of a (H, W) map as a bilinear stencil on the map's pixels
// (align_corners=False: the pixel coordinate is x * W - 0.5). A corner outside the map has weight 0 and
// pixel -1, which is what zero padding means.
template <typename T>
struct Stencil {
  int64_t pixel[4];  // y * W + x of the top-left, top-right, bottom-left, bottom-right corners
  T weight[4];
  T fx, fy;  // position inside the cell, for the location gradient
};

// Returns false when the location is so far off the map that no corner contributes.
template <typename T>
MDQE_HOST_DEVICE bool make_stencil(T x, T y, int64_t height, int64_t width, Stencil<T>& s) {
  const T px = x * static_cast<T>(width) - T(0.5);
  const T py = y * static_cast<T>(height) - T(0.5);
  // Also rejects NaN, and keeps the integer conversions below in range.
  if (!(px > T(-1) && py > T(-1) && px < static_cast<T>(width) && py < static_cast<T>(height))) {
    return false;
  }
  const T x0f = std::floor(px);
  const T y0f = std::floor(py);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const int64_t y0 = static_cast<int64_t>(y0f);
  s.fx = px - x0f;
  s.fy = py - y0f;
  const T gx = T(1) - s.fx;
  const T gy = T(1) - s.fy;
  const bool left = x0 >= 0, right = x0 + 1 < width, top = y0 >= 0, bottom = y0 + 1 < height;
  s.pixel[0] = (top && left) ? y0 * width + x0 : -1;
  s.pixel[1] = (top && right) ? y0 * width + x0 + 1 : -1;
  s.pixel[2] = (bottom && left) ? (y0 + 1) * width + x0 : -1;
  s.pixel[3] = (bottom && right) ? (y0 + 1) * width + x0 + 1 : -1;
  s.weight[0] = gy * gx;
  s.weight[1] = gy * s.fx;
  s.weight[2] = s.fy * gx;
  s.weight[3] = s.fy * s.fx;
  return true;
}

// Gradients of one sample from dot[c] = <value row of corner c, grad_output> (0 for corners off the map):
// d(out)/d(attention weight), and d(out)/d(x), d(out)/d(y) of the normalised location, the pixel
// coordinates being x * W - 0.5 and y * H - 0.5.
template <typename T>
MDQE_HOST_DEVICE void sample_gradients(
    const Stencil<T>& s,
    const T dot[4],
    T attention,
    int64_t height,
    int64_t width,
    T& grad_attention,
    T& grad_x,
    T& grad_y) {
  grad_attention = s.weight[0] * dot[0] + s.weight[1] * dot[1] + s.weight[2] * dot[2] + s.weight[3] * dot[3];
  const T d_px = (T(1) - s.fy) * (dot[1] - dot[0]) + s.fy * (dot[3] - dot[2]);
  const T d_py = (T(1) - s.fx) * (dot[2] - dot[0]) + s.fx * (dot[3] - dot[1]);
  grad_x = attention * static_cast<T>(width) * d_px;
  grad_y = attention * static_cast<T>(height) * d_py;
}

}  // namespace mdqe
