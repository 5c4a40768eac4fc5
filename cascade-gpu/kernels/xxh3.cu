// cascade_xxh3_blocks: the XXH3-64 (seed 0, default secret) of many device blocks in one
// launch, one warp per block, so a host tier can take a block by DMA without reading it
// back from host memory to checksum it.
//
// Only the long-input path (more than 240 bytes) and 8-byte aligned starts: the host
// hashes the rest itself. XXH3's accumulator update within a 1 KiB block is a sum of
// per-stripe terms, so the warp's 32 threads each add 4 of the block's 128 words and
// the sums are reduced per lane with shuffles; the scramble between blocks is applied
// by every thread to its lane's copy of the accumulator.
//
// Regenerate the PTX the crate ships (the driver compiles it when the kernel loads), from
// cascade-gpu/; the ISA version is lowered to 7.0 (CUDA 11 drivers) because the kernel
// uses nothing newer, so drivers older than the toolkit's still load it:
//   nvcc -ptx -arch=compute_75 -O3 -o src/xxh3_kernel.ptx kernels/xxh3.cu
//   sed -i 's/^\.version .*/.version 7.0/' src/xxh3_kernel.ptx

typedef unsigned long long u64;

__constant__ unsigned char kSecret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

#define PRIME32_1 0x9E3779B1ULL
#define PRIME32_2 0x85EBCA77ULL
#define PRIME32_3 0xC2B2AE3DULL
#define PRIME64_1 0x9E3779B185EBCA87ULL
#define PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define PRIME64_3 0x165667B19E3779F9ULL
#define PRIME64_4 0x85EBCA77C2B2AE63ULL
#define PRIME64_5 0x27D4EB2F165667C5ULL
#define FULL 0xffffffffu

struct Desc {
    u64 ptr;
    u64 len;
};

__device__ __forceinline__ u64 secret64(unsigned off) {
    u64 v = 0;
#pragma unroll
    for (int b = 7; b >= 0; b--) v = (v << 8) | kSecret[off + b];
    return v;
}

__device__ __forceinline__ u64 load64(const unsigned char* p, bool aligned) {
    if (aligned) return *(const u64*)p;
    u64 v = 0;
#pragma unroll
    for (int b = 7; b >= 0; b--) v = (v << 8) | p[b];
    return v;
}

// Adds one 1 KiB block's terms, `v` being this thread's 4 words of it, to `acc`.
__device__ __forceinline__ void accumulate(u64& acc, const u64 v[4], const u64 key[4], bool live[4]) {
    u64 prod = 0, val = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        if (live[k]) {
            u64 dk = v[k] ^ key[k];
            prod += (dk & 0xffffffffULL) * (dk >> 32);
            val += v[k];
        }
    }
    prod += __shfl_xor_sync(FULL, prod, 8);
    prod += __shfl_xor_sync(FULL, prod, 16);
    val += __shfl_xor_sync(FULL, val, 8);
    val += __shfl_xor_sync(FULL, val, 16);
    // acc[lane] takes the products of its own lane and the words of lane ^ 1.
    acc += prod + __shfl_xor_sync(FULL, val, 1);
}

__device__ __forceinline__ void scramble(u64& acc, u64 key) {
    acc ^= acc >> 47;
    acc ^= key;
    acc *= PRIME32_1;
}

extern "C" __global__ void cascade_xxh3_blocks(const Desc* descs, unsigned count, u64* out) {
    const unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const unsigned t = threadIdx.x % 32;
    if (warp >= count) return;  // whole warps only: blockDim is a multiple of 32
    const u64 base = descs[warp].ptr;
    const u64 len = descs[warp].len;
    const unsigned lane = t & 7;
    const u64 init[8] = {PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3,
                         PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1};
    u64 acc = init[lane];
    // Word t + 32k of a 1 KiB block is lane t & 7 of stripe t / 8 + 4k, keyed by the
    // secret's word stripe + lane.
    u64 key[4];
#pragma unroll
    for (int k = 0; k < 4; k++) key[k] = secret64(8 * (t / 8 + 4 * k + lane));
    const u64 scramble_key = secret64(128 + 8 * lane);
    bool all[4] = {true, true, true, true};

    const u64* words = (const u64*)base;
    const u64 blocks = (len - 1) / 1024;
    u64 n = 0;
    for (; n + 4 <= blocks; n += 4) {
        u64 v[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) v[j][k] = words[(n + j) * 128 + t + 32 * k];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            accumulate(acc, v[j], key, all);
            scramble(acc, scramble_key);
        }
    }
    for (; n < blocks; n++) {
        u64 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++) v[k] = words[n * 128 + t + 32 * k];
        accumulate(acc, v, key, all);
        scramble(acc, scramble_key);
    }
    // The last, partial block's whole stripes, then the input's last 64 bytes.
    const u64 stripes = ((len - 1) - 1024 * blocks) / 64;
    {
        u64 v[4];
        bool live[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            live[k] = (t / 8 + 4 * k) < stripes;
            v[k] = live[k] ? words[blocks * 128 + t + 32 * k] : 0;
        }
        accumulate(acc, v, key, live);
    }
    {
        const unsigned char* last = (const unsigned char*)base + len - 64;
        const bool aligned = (len % 8) == 0;
        const u64 own = load64(last + 8 * lane, aligned);
        const u64 other = load64(last + 8 * (lane ^ 1), aligned);
        const u64 dk = own ^ secret64(121 + 8 * lane);
        acc += (dk & 0xffffffffULL) * (dk >> 32) + other;
    }
    u64 lanes[8];
#pragma unroll
    for (int i = 0; i < 8; i++) lanes[i] = __shfl_sync(FULL, acc, i);
    if (t == 0) {
        u64 h = len * PRIME64_1;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u64 a = lanes[2 * i] ^ secret64(11 + 16 * i);
            const u64 b = lanes[2 * i + 1] ^ secret64(11 + 16 * i + 8);
            h += (a * b) ^ __umul64hi(a, b);
        }
        h ^= h >> 37;
        h *= 0x165667919E3779F9ULL;
        h ^= h >> 32;
        out[warp] = h;
    }
}
