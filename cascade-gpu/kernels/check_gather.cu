// A stand-alone check of cascade_copy_pieces on a GPU, without the crate: 8192 pieces
// of 4 KiB (one of 4093 bytes) gathered from a layer-major layout into contiguous
// blocks, checked byte for byte, and the time it took (CUDA events, best of 5 after a
// warm-up).
// From cascade-gpu/kernels/, on a machine with nvcc and a GPU:
//   nvcc -O3 -arch=sm_90 -o /tmp/check_gather check_gather.cu && /tmp/check_gather
// The crate's own tests (tests/gpu.rs) check the same kernels through the store.
#include <cstdio>
#include <vector>
#include "gather.cu"
int main() {
  // 8192 pieces of 4 KiB gathered from a layer-major layout into contiguous blocks.
  const int blocks = 256, pieces = 32, piece = 4096; size_t total = (size_t)blocks * pieces * piece;
  std::vector<unsigned char> h(total); for (size_t i = 0; i < total; i++) h[i] = (unsigned char)(i * 2654435761u >> 13);
  unsigned char *src, *dst; cudaMalloc(&src, total); cudaMalloc(&dst, total);
  cudaMemcpy(src, h.data(), total, cudaMemcpyHostToDevice); cudaMemset(dst, 0, total);
  std::vector<Piece> d;
  for (int n = 0; n < blocks; n++) for (int p = 0; p < pieces; p++) {
    Piece x; x.src = (u64)(src + ((size_t)p * blocks + n) * piece); x.dst = (u64)(dst + ((size_t)n * pieces + p) * piece); x.len = piece; d.push_back(x); }
  // one unaligned piece
  d[5].len = piece - 3;
  Piece* dd; cudaMalloc(&dd, d.size() * sizeof(Piece)); cudaMemcpy(dd, d.data(), d.size() * sizeof(Piece), cudaMemcpyHostToDevice);
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b); float best = 1e9;
  for (int r = 0; r < 6; r++) { cudaEventRecord(a); cascade_copy_pieces<<<d.size() < 65535 ? d.size() : 65535, 256>>>(dd, d.size()); cudaEventRecord(b); cudaEventSynchronize(b); float ms; cudaEventElapsedTime(&ms, a, b); if (r && ms < best) best = ms; }
  std::vector<unsigned char> o(total); cudaMemcpy(o.data(), dst, total, cudaMemcpyDeviceToHost);
  size_t bad = 0;
  for (int n = 0; n < blocks; n++) for (int p = 0; p < pieces; p++) { size_t len = (n == 0 && p == 5) ? piece - 3 : piece;
    for (size_t i = 0; i < len; i++) if (o[((size_t)n * pieces + p) * piece + i] != h[((size_t)p * blocks + n) * piece + i]) bad++; }
  printf("gather 32 MiB in 4 KiB pieces: %.3f ms, %.0f GB/s, wrong bytes %zu, err %s\n", best, total / best / 1e6, bad, cudaGetErrorString(cudaGetLastError()));
  return bad != 0;
}
