// A stand-alone check of cascade_xxh3_blocks on a GPU, without the crate: its output
// against XXH3-64 values computed with Python's xxhash package over the same byte
// pattern, then its rate on 256 and 8192 blocks of 128 KiB and 256 and 1024 of 1 MiB
// (CUDA events, best of 6 after a warm-up).
// From cascade-gpu/kernels/, on a machine with nvcc and a GPU:
//   nvcc -O3 -arch=sm_90 -o /tmp/check_xxh3 check_xxh3.cu && /tmp/check_xxh3
// The crate's own tests (tests/gpu.rs) check the same kernels through the store.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "xxh3.cu"
int main() {
  struct Case { unsigned long long n, want; };
  Case cases[] = {{241,0x4bddf45e258b6299ULL},{1000,0x82d4f57f2d41c12fULL},{1024,0xc6c700c409d40c4bULL},
    {1025,0xbadeb1907fb9a31eULL},{4097,0xf0ff8e6a73ee9d01ULL},{131072,0xf94737f44bd238adULL},
    {131079,0x4365b3182b85a4d7ULL},{1ULL<<20,0xf7ab6b95f8aef1e8ULL}};
  int nc = sizeof(cases)/sizeof(cases[0]);
  std::vector<Desc> d(nc); int bad = 0;
  for (int c = 0; c < nc; c++) {
    unsigned long long n = cases[c].n; std::vector<unsigned char> h(n);
    for (unsigned long long i = 0; i < n; i++) h[i] = (unsigned char)((i*131 + n*7 + (i>>8)) & 255);
    void* p; cudaMalloc(&p, n); cudaMemcpy(p, h.data(), n, cudaMemcpyHostToDevice);
    d[c].ptr = (unsigned long long)p; d[c].len = n;
  }
  Desc* dd; u64* dout; cudaMalloc(&dd, nc*sizeof(Desc)); cudaMalloc(&dout, nc*8);
  cudaMemcpy(dd, d.data(), nc*sizeof(Desc), cudaMemcpyHostToDevice);
  cascade_xxh3_blocks<<<(nc+7)/8, 256>>>(dd, nc, dout);
  std::vector<u64> got(nc); cudaMemcpy(got.data(), dout, nc*8, cudaMemcpyDeviceToHost);
  for (int c = 0; c < nc; c++) { printf("len %llu got %016llx want %016llx %s\n", cases[c].n, got[c], cases[c].want, got[c]==cases[c].want?"ok":"WRONG"); bad += got[c]!=cases[c].want; }
  printf("err %s\n", cudaGetErrorString(cudaGetLastError()));
  // throughput: N blocks of B bytes
  size_t sizes[] = {128<<10, 1<<20}; int counts[] = {256, 8192};
  for (size_t B : sizes) for (int N : counts) {
    if (B == (1<<20) && N == 8192) N = 1024;
    char* buf; cudaMalloc(&buf, B*N); cudaMemset(buf, 7, B*N);
    std::vector<Desc> ds(N); for (int i=0;i<N;i++){ds[i].ptr=(unsigned long long)(buf+B*i); ds[i].len=B;}
    Desc* ddd; u64* o; cudaMalloc(&ddd, N*sizeof(Desc)); cudaMalloc(&o, N*8);
    cudaMemcpy(ddd, ds.data(), N*sizeof(Desc), cudaMemcpyHostToDevice);
    cudaEvent_t a,b; cudaEventCreate(&a); cudaEventCreate(&b);
    float best = 1e9;
    for (int r=0;r<7;r++){ cudaEventRecord(a); cascade_xxh3_blocks<<<(N+7)/8,256>>>(ddd,N,o); cudaEventRecord(b); cudaEventSynchronize(b); float ms; cudaEventElapsedTime(&ms,a,b); if(r>0&&ms<best)best=ms; }
    printf("%d blocks of %zu KiB: %.3f ms, %.1f GB/s\n", N, B>>10, best, B*(double)N/best/1e6);
    cudaFree(buf); cudaFree(ddd); cudaFree(o);
  }
  return bad;
}
