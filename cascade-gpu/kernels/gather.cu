// cascade_copy_pieces: device-to-device copies of many small pieces in one launch, their
// descriptors in device memory, so that blocks an engine keeps in many small pieces
// (a layer's K or V each) are gathered into one contiguous device buffer before a single
// DMA to the host, and scattered from one after a DMA back: the copy engines move small
// DMA copies far below the link's rate, HBM moves them at its own.
//
// One CTA per descriptor {u64 dst, u64 src, u64 len}, striding over it in 16-byte words
// when both ends and the length allow it, byte by byte otherwise.
//
// Regenerate the PTX the crate ships, from cascade-gpu/ (see kernels/xxh3.cu for why
// the ISA version is lowered):
//   nvcc -ptx -arch=compute_75 -O3 -o src/gather_kernel.ptx kernels/gather.cu
//   sed -i 's/^\.version .*/.version 7.0/' src/gather_kernel.ptx

typedef unsigned long long u64;

struct Piece {
    u64 dst;
    u64 src;
    u64 len;
};

extern "C" __global__ void cascade_copy_pieces(const Piece* pieces, unsigned count) {
    for (unsigned k = blockIdx.x; k < count; k += gridDim.x) {
        const Piece p = pieces[k];
        if (((p.dst | p.src | p.len) & 15) == 0) {
            const uint4* src = (const uint4*)p.src;
            uint4* dst = (uint4*)p.dst;
            const u64 words = p.len / 16;
            for (u64 w = threadIdx.x; w < words; w += blockDim.x) dst[w] = src[w];
        } else {
            const unsigned char* src = (const unsigned char*)p.src;
            unsigned char* dst = (unsigned char*)p.dst;
            for (u64 b = threadIdx.x; b < p.len; b += blockDim.x) dst[b] = src[b];
        }
    }
}
