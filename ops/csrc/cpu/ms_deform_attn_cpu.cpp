// CPU kernels of multi-scale deformable attention.
//
// The value is first copied head-major, (N, S, M, D) -> (N, M, S, D), so that the value of one (batch, head)
// pair is one contiguous block of S rows of D channels (650 KB at the R50 OVIS 360p encoder shape) instead
// of rows scattered with stride M*D: far fewer cache lines and TLB entries per sample. Work is split into
// tasks of one (batch, head) pair and a range of queries, handed out dynamically over ATen's threads, so a
// thread walks neighbouring queries of one head and keeps its block hot. Each sampling point touches at
// most four value rows, each consumed as a D-vector (axpy into the output, dot with the output gradient).
//
// Backward is race-free without atomics: a task writes the value gradient of its own (batch, head) pair
// only. When there are too few pairs to keep every thread busy, the queries are split into a few ranges,
// each accumulating into its own copy of the value gradient, and the copies are summed at the end.

#include "cpu/ms_deform_attn_cpu.h"

#include "ms_deform_attn_common.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

namespace mdqe {
namespace {

template <typename scalar_t>
inline void axpy(scalar_t alpha, const scalar_t* __restrict x, scalar_t* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] += alpha * x[i];
  }
}

// y += sum_c alpha[c] * x_c over the four corners of a stencil wholly on the map, in one pass over y.
template <typename scalar_t>
inline void axpy4(
    const scalar_t alpha[4],
    const scalar_t* __restrict x0,
    const scalar_t* __restrict x1,
    const scalar_t* __restrict x2,
    const scalar_t* __restrict x3,
    scalar_t* __restrict y,
    int64_t n) {
  const scalar_t a0 = alpha[0], a1 = alpha[1], a2 = alpha[2], a3 = alpha[3];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
  }
}

// Returns dot(x, g) and adds alpha * g to y, in one pass.
template <typename scalar_t>
inline scalar_t dot_and_axpy(
    const scalar_t* __restrict x,
    const scalar_t* __restrict g,
    scalar_t alpha,
    scalar_t* __restrict y,
    int64_t n) {
  scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < n; ++i) {
    dot += x[i] * g[i];
    y[i] += alpha * g[i];
  }
  return dot;
}

// The same for the four corners of a stencil that lies wholly on the map (the common case): one pass
// over g for four distinct rows.
template <typename scalar_t>
inline void dot_and_axpy4(
    const scalar_t* __restrict x0,
    const scalar_t* __restrict x1,
    const scalar_t* __restrict x2,
    const scalar_t* __restrict x3,
    const scalar_t* __restrict g,
    const scalar_t alpha[4],
    scalar_t* __restrict y0,
    scalar_t* __restrict y1,
    scalar_t* __restrict y2,
    scalar_t* __restrict y3,
    int64_t n,
    scalar_t dot[4]) {
  scalar_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
  const scalar_t a0 = alpha[0], a1 = alpha[1], a2 = alpha[2], a3 = alpha[3];
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t gi = g[i];
    d0 += x0[i] * gi;
    d1 += x1[i] * gi;
    d2 += x2[i] * gi;
    d3 += x3[i] * gi;
    y0[i] += a0 * gi;
    y1[i] += a1 * gi;
    y2[i] += a2 * gi;
    y3[i] += a3 * gi;
  }
  dot[0] = d0;
  dot[1] = d1;
  dot[2] = d2;
  dot[3] = d3;
}

// Queries per forward task: enough to amortise the task hand-out, few enough to balance the threads.
constexpr int64_t kQueryChunk = 64;

// Below this many multiply-adds a call runs on the calling thread: waking the pool would cost more.
constexpr int64_t kMinParallelWork = 1 << 18;

// Runs body(task) for every task in [0, num_tasks) on ATen's threads, handing the tasks out one at a time:
// unlike at::parallel_for's static split, a thread that is slowed down (uneven work, a busy machine) does
// not hold the others up. Runs serially for small `work` or inside an enclosing parallel region.
template <typename F>
void parallel_tasks(int64_t num_tasks, int64_t work, const F& body) {
  const int64_t threads = work < kMinParallelWork ? 1 : std::min<int64_t>(num_tasks, at::get_num_threads());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t task = next++; task < num_tasks; task = next++) {
      body(task);
    }
  });
}

template <typename scalar_t>
void forward_kernel(
    const Sizes& z,
    const scalar_t* value,  // (N, M, S, D)
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* locations,
    const scalar_t* weights,
    scalar_t* output) {
  const int64_t samples = z.levels * z.points;
  const int64_t chunks = (z.queries + kQueryChunk - 1) / kQueryChunk;
  parallel_tasks(z.batch * z.heads * chunks, z.work(), [&](int64_t task) {
    std::vector<scalar_t> acc(z.channels);
    Stencil<scalar_t> s;
    const int64_t chunk = task % chunks;
    const int64_t m = (task / chunks) % z.heads;
    const int64_t n = task / (chunks * z.heads);
    const int64_t q_end = std::min(z.queries, (chunk + 1) * kQueryChunk);
    for (int64_t q = chunk * kQueryChunk; q < q_end; ++q) {
      const int64_t qm = (n * z.queries + q) * z.heads + m;  // index of (n, q, m)
      const scalar_t* loc = locations + qm * samples * 2;
      const scalar_t* attn = weights + qm * samples;
      std::fill(acc.begin(), acc.end(), scalar_t(0));
      for (int64_t l = 0; l < z.levels; ++l) {
        const scalar_t* level_value = value + ((n * z.heads + m) * z.tokens + starts[l]) * z.channels;
        for (int64_t p = 0; p < z.points; ++p) {
          const int64_t i = l * z.points + p;
          if (!make_stencil(loc[2 * i], loc[2 * i + 1], shapes[2 * l], shapes[2 * l + 1], s)) {
            continue;
          }
          if (s.pixel[0] >= 0 && s.pixel[3] >= 0) {  // all four corners on the map
            const scalar_t alpha[4] = {
                attn[i] * s.weight[0], attn[i] * s.weight[1], attn[i] * s.weight[2], attn[i] * s.weight[3]};
            axpy4(
                alpha,
                level_value + s.pixel[0] * z.channels,
                level_value + s.pixel[1] * z.channels,
                level_value + s.pixel[2] * z.channels,
                level_value + s.pixel[3] * z.channels,
                acc.data(),
                z.channels);
          } else {
            for (int c = 0; c < 4; ++c) {
              if (s.pixel[c] >= 0) {
                axpy(attn[i] * s.weight[c], level_value + s.pixel[c] * z.channels, acc.data(), z.channels);
              }
            }
          }
        }
      }
      std::copy(acc.begin(), acc.end(), output + qm * z.channels);
    }
  });
}

template <typename scalar_t>
void backward_kernel(
    const Sizes& z,
    const scalar_t* value,  // (N, M, S, D)
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* locations,
    const scalar_t* weights,
    const scalar_t* grad_output,
    int64_t splits,
    scalar_t* grad_value_copies,  // (splits, N, M, S, D), zero-initialised
    scalar_t* grad_locations,
    scalar_t* grad_weights) {
  const int64_t samples = z.levels * z.points;
  const int64_t value_numel = z.batch * z.tokens * z.heads * z.channels;
  const int64_t pairs = z.batch * z.heads;
  parallel_tasks(splits * pairs, z.work(), [&](int64_t task) {
    Stencil<scalar_t> s;
    const int64_t split = task / pairs;
    const int64_t m = task % z.heads;
    const int64_t n = (task / z.heads) % z.batch;
    const int64_t q_begin = split * z.queries / splits;
    const int64_t q_end = (split + 1) * z.queries / splits;
    scalar_t* grad_value = grad_value_copies + split * value_numel;
    for (int64_t q = q_begin; q < q_end; ++q) {
      const int64_t qm = (n * z.queries + q) * z.heads + m;
      const scalar_t* loc = locations + qm * samples * 2;
      const scalar_t* attn = weights + qm * samples;
      const scalar_t* grad_out = grad_output + qm * z.channels;
      scalar_t* grad_loc = grad_locations + qm * samples * 2;
      scalar_t* grad_attn = grad_weights + qm * samples;
      for (int64_t l = 0; l < z.levels; ++l) {
        const int64_t height = shapes[2 * l];
        const int64_t width = shapes[2 * l + 1];
        const int64_t offset = ((n * z.heads + m) * z.tokens + starts[l]) * z.channels;
        for (int64_t p = 0; p < z.points; ++p) {
          const int64_t i = l * z.points + p;
          if (!make_stencil(loc[2 * i], loc[2 * i + 1], height, width, s)) {
            continue;  // the gradients stay zero
          }
          scalar_t dot[4] = {0, 0, 0, 0};  // <value row, grad_out> per corner
          if (s.pixel[0] >= 0 && s.pixel[3] >= 0) {  // all four corners on the map
            int64_t row[4];
            scalar_t alpha[4];
            for (int c = 0; c < 4; ++c) {
              row[c] = offset + s.pixel[c] * z.channels;
              alpha[c] = attn[i] * s.weight[c];
            }
            dot_and_axpy4(
                value + row[0],
                value + row[1],
                value + row[2],
                value + row[3],
                grad_out,
                alpha,
                grad_value + row[0],
                grad_value + row[1],
                grad_value + row[2],
                grad_value + row[3],
                z.channels,
                dot);
          } else {
            for (int c = 0; c < 4; ++c) {
              if (s.pixel[c] >= 0) {
                const int64_t row = offset + s.pixel[c] * z.channels;
                dot[c] =
                    dot_and_axpy(value + row, grad_out, attn[i] * s.weight[c], grad_value + row, z.channels);
              }
            }
          }
          sample_gradients(s, dot, attn[i], height, width, grad_attn[i], grad_loc[2 * i], grad_loc[2 * i + 1]);
        }
      }
    }
  });
}

void check_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t tokens) {
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < spatial_shapes.size(0); ++l) {
    TORCH_CHECK(
        shapes[2 * l] >= 0 && shapes[2 * l + 1] >= 0 && starts[l] >= 0 &&
            starts[l] + shapes[2 * l] * shapes[2 * l + 1] <= tokens,
        "ms_deform_attn: level ",
        l,
        " of shape (",
        shapes[2 * l],
        ", ",
        shapes[2 * l + 1],
        ") starting at ",
        starts[l],
        " does not fit in value's S=",
        tokens,
        " tokens");
  }
}

void check_dtype(const at::Tensor& value) {
  TORCH_CHECK(
      value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble,
      "ms_deform_attn: the CPU kernel supports float32 and float64, found ",
      value.scalar_type());
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_dtype(value);
  check_levels(spatial_shapes, level_start_index, value.size(1));
  const Sizes z = get_sizes(value, sampling_locations);
  const auto value_by_head = value.transpose(1, 2).contiguous();
  auto output = at::empty({z.batch, z.queries, z.heads * z.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(
        z,
        value_by_head.data_ptr<scalar_t>(),
        spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_dtype(value);
  check_levels(spatial_shapes, level_start_index, value.size(1));
  const Sizes z = get_sizes(value, sampling_locations);
  // Enough (query range, batch, head) tasks to keep every thread busy; each query range beyond the first
  // costs a copy of grad_value.
  const int64_t pairs = z.batch * z.heads;
  const int64_t tasks_wanted = 2 * at::get_num_threads();
  const int64_t splits = std::clamp<int64_t>((tasks_wanted + pairs - 1) / pairs, 1, std::max<int64_t>(z.queries, 1));
  const auto value_by_head = value.transpose(1, 2).contiguous();
  auto grad_value_copies = at::zeros({splits, z.batch, z.heads, z.tokens, z.channels}, value.options());
  auto grad_locations = at::zeros_like(sampling_locations);
  auto grad_weights = at::zeros_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    backward_kernel<scalar_t>(
        z,
        value_by_head.data_ptr<scalar_t>(),
        spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(),
        grad_output.data_ptr<scalar_t>(),
        splits,
        grad_value_copies.data_ptr<scalar_t>(),
        grad_locations.data_ptr<scalar_t>(),
        grad_weights.data_ptr<scalar_t>());
  });
  auto grad_value = splits == 1 ? grad_value_copies[0] : grad_value_copies.sum(0);
  return {grad_value.transpose(1, 2).contiguous(), grad_locations, grad_weights};
}

}  // namespace mdqe
