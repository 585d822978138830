// Deterministic per-(image, channel) sums over the pixels of 4-D tensors, for the kernels that
// reduce (spatial_dot, the StyledConv epilogue's backward). A block takes one image, kTile channels
// and a chunk of kChunkPixels pixels, walked in steps of kTile channels x kTile pixels. No atomics:
// each block sums in a fixed order through shared memory, and the chunks' partial sums are added by
// ATen's sum (which reduces in a fixed order too), so two runs give the same bits.
#pragma once

#include <ATen/ops/sum.h>

#include "cuda_common.cuh"

namespace pixelfolder {

constexpr int kTile = 32;
constexpr int kTileRowsPerStep = kThreadsPerBlock / kTile;
constexpr int kElementsPerThread = kTile / kTileRowsPerStep;
constexpr int64_t kChunkPixels = 1024;  // 128 elements per thread and chunk
static_assert(kTile == 32 && kTileRowsPerStep * kElementsPerThread == kTile, "a step is a 32 x 32 tile");

// A step's tile, padded by a column so that walking either axis touches different banks.
template <typename opmath_t>
using StepTile = SharedArray<opmath_t, kTile, kTile + 1>;

// One block's share and one thread's place in each step. Element k of a thread sits in tile slot
// (row + kTileRowsPerStep * k, lane). Lanes walk the channels of channels-last tensors and the pixels
// of the others, so that a warp reads consecutive addresses.
template <typename index_t>
struct ChannelTile {
  index_t image, first_channel, first_pixel, end_pixel;
  int lane, row;
  bool channels_fast;

  __device__ ChannelTile(index_t pixels, bool channels_fast)
      : image(blockIdx.z),
        first_channel(static_cast<index_t>(blockIdx.y) * kTile),
        first_pixel(static_cast<index_t>(blockIdx.x) * static_cast<index_t>(kChunkPixels)),
        end_pixel(std::min<index_t>(pixels, first_pixel + static_cast<index_t>(kChunkPixels))),
        lane(threadIdx.x % kTile),
        row(threadIdx.x / kTile),
        channels_fast(channels_fast) {}

  __device__ int slot_row(int k) const { return row + kTileRowsPerStep * k; }
  // The channel and pixel of element k of the step that starts at pixel `step`.
  __device__ index_t channel(int k) const { return first_channel + (channels_fast ? lane : slot_row(k)); }
  __device__ index_t pixel(index_t step, int k) const { return step + (channels_fast ? slot_row(k) : lane); }

  // The sum, in slot order, of the tile's kTile values that belong to channel (or, with
  // `of_channel` false, to pixel) number i of the step; every thread waits for the tile first.
  // Callers name opmath_t: nvcc cannot deduce it through SharedArray.
  template <typename opmath_t>
  __device__ opmath_t sum_of(const StepTile<opmath_t>& tile, int i, bool of_channel) const {
    const bool along_rows = of_channel == channels_fast;  // the i's values fill column i
    opmath_t sum = 0;
    for (int j = 0; j < kTile; ++j) sum += along_rows ? tile[j][i] : tile[i][j];
    return sum;
  }
};

// (chunks, channel tiles, images): chunks first, since a grid has room for 2^31 - 1 of them.
inline dim3 channel_tile_grid(int64_t batch, int64_t channels, int64_t pixels) {
  TORCH_CHECK(batch <= 65535 && (channels + kTile - 1) / kTile <= 65535,
              "a per-channel reduction supports up to 65535 images and ", 65535 * kTile, " channels, got ", batch,
              " and ", channels);
  return dim3(static_cast<unsigned int>((pixels + kChunkPixels - 1) / kChunkPixels),
              static_cast<unsigned int>((channels + kTile - 1) / kTile), static_cast<unsigned int>(batch));
}

inline int64_t chunks_of(int64_t pixels) { return (pixels + kChunkPixels - 1) / kChunkPixels; }

// Writes each of the block's channels' totals of a thread's per-element sums (over the chunk) to
// partial[(image * channels + channel) * chunks + chunk].
template <typename opmath_t, typename index_t>
__device__ void store_channel_sums(const ChannelTile<index_t>& tile, StepTile<opmath_t>& scratch,
                                   const opmath_t (&sums)[kElementsPerThread], DevicePointer<opmath_t> partial,
                                   index_t channels) {
  __syncthreads();  // the scratch tile may still be read from the last step
  for (int k = 0; k < kElementsPerThread; ++k) scratch[tile.slot_row(k)][tile.lane] = sums[k];
  __syncthreads();
  const index_t c = tile.first_channel + static_cast<index_t>(threadIdx.x);
  if (threadIdx.x < kTile && c < channels) {
    partial[(tile.image * channels + c) * static_cast<index_t>(gridDim.x) + static_cast<index_t>(blockIdx.x)] =
        tile.template sum_of<opmath_t>(scratch, threadIdx.x, true);
  }
}

}  // namespace pixelfolder
