#pragma once
/// Memory layouts of a 4-d activation whose logical shape is always [N,C,H,W].
///
/// nchw: sample-major, the usual layout (every tensor a user passes in or gets out).
/// cnhw: batch-folded, channel-major: channel c of all N samples is one contiguous run of
///   N*H*W values. A 1x1 convolution is then a single GEMM [K,C] x [C,N*H*W] on the
///   activation itself, however small the planes (at 32x32 input ResNet50's layer4 planes are
///   1x1), and batch norm reads each channel as one stream.
/// Either way every (n, c) plane of H*W values is contiguous, so per-plane kernels (pooling,
/// element-wise maps) do not care which layout they see.

#include <cstddef>

namespace sieve::kernels {

enum class Layout : unsigned char { nchw, cnhw };

/// Index of the (n, c) plane among the N*C planes of a tensor in layout l.
inline std::size_t plane_index(Layout l, std::size_t N, std::size_t C, std::size_t n, std::size_t c) {
  return l == Layout::nchw ? n * C + c : c * N + n;
}

inline const char* layout_name(Layout l) { return l == Layout::nchw ? "NCHW" : "CNHW"; }

}  // namespace sieve::kernels
