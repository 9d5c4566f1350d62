/* SIMD kernel: image-style byte blending and a float dot product, with 128-bit vectors.
 *
 * Each round measures the sum of absolute differences between two byte images (i8x16
 * saturating sub, or, extadd_pairwise to i32x4), moves one image toward the other (i8x16
 * avgr_u and a byte shuffle), and runs a saxpy plus dot product over f32x4 lanes. Every step
 * is a v128 load, lane-wise operation or store, as in code written with wasm_simd128.h;
 * the result is a checksum of the differences and of the dot products' bits.
 */

#include <wasm_simd128.h>

#define BYTES 4096
#define FLOATS 1024

static unsigned char img_a[BYTES] __attribute__((aligned(16)));
static unsigned char img_b[BYTES] __attribute__((aligned(16)));
static float xs[FLOATS] __attribute__((aligned(16)));
static float ys[FLOATS] __attribute__((aligned(16)));

static void fill(int nbytes, int nfloats) {
    unsigned s = 12345u;
    for (int i = 0; i < nbytes; i++) {
        s = s * 1103515245u + 12345u;
        img_a[i] = (unsigned char)(s >> 16);
        img_b[i] = (unsigned char)(s >> 24);
    }
    for (int i = 0; i < nfloats; i++) {
        xs[i] = (float)((int)(i % 17) - 8) * 0.125f;
        ys[i] = (float)((int)(i % 11) - 5) * 0.25f;
    }
}

/* Sum of |a - b| over the bytes, as four i32 partial sums. */
static v128_t sad(int nbytes) {
    v128_t acc = wasm_i32x4_splat(0);
    for (int i = 0; i < nbytes; i += 16) {
        v128_t a = wasm_v128_load(img_a + i);
        v128_t b = wasm_v128_load(img_b + i);
        v128_t d = wasm_v128_or(wasm_u8x16_sub_sat(a, b), wasm_u8x16_sub_sat(b, a));
        acc = wasm_i32x4_add(acc, wasm_u32x4_extadd_pairwise_u16x8(wasm_u16x8_extadd_pairwise_u8x16(d)));
    }
    return acc;
}

/* b = rotate(avg(a, b)) byte-wise: b moves halfway toward a, shifted by one byte. */
static void blend(int nbytes) {
    for (int i = 0; i < nbytes; i += 16) {
        v128_t a = wasm_v128_load(img_a + i);
        v128_t b = wasm_v128_load(img_b + i);
        v128_t avg = wasm_u8x16_avgr(a, b);
        wasm_v128_store(img_b + i, wasm_i8x16_shuffle(avg, avg, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                      11, 12, 13, 14, 15, 0));
    }
}

/* y = k * x + y, then the dot product of x and y, over f32x4 lanes. */
static float saxpy_dot(int nfloats, float k) {
    v128_t vk = wasm_f32x4_splat(k);
    v128_t dot = wasm_f32x4_splat(0.0f);
    for (int i = 0; i < nfloats; i += 4) {
        v128_t x = wasm_v128_load(xs + i);
        v128_t y = wasm_f32x4_add(wasm_f32x4_mul(vk, x), wasm_v128_load(ys + i));
        wasm_v128_store(ys + i, y);
        dot = wasm_f32x4_add(dot, wasm_f32x4_mul(x, y));
    }
    return wasm_f32x4_extract_lane(dot, 0) + wasm_f32x4_extract_lane(dot, 1)
         + wasm_f32x4_extract_lane(dot, 2) + wasm_f32x4_extract_lane(dot, 3);
}

/* Runs `rounds` rounds over `size` bytes (a multiple of 16, capped at BYTES) and size / 4
 * floats; returns a checksum of every round's differences and dot product. */
unsigned simd_blend(int size, int rounds) {
    int nbytes = (size > BYTES ? BYTES : size) & ~15;
    int nfloats = nbytes / 4;
    fill(nbytes, nfloats);
    unsigned check = 0;
    for (int r = 0; r < rounds; r++) {
        v128_t s = sad(nbytes);
        check = check * 31u + (unsigned)wasm_i32x4_extract_lane(s, 0)
              + (unsigned)wasm_i32x4_extract_lane(s, 1) * 3u
              + (unsigned)wasm_i32x4_extract_lane(s, 2) * 5u
              + (unsigned)wasm_i32x4_extract_lane(s, 3) * 7u;
        blend(nbytes);
        float d = saxpy_dot(nfloats, r % 2 ? -0.5f : 0.25f);
        union { float f; unsigned u; } bits = {d};
        check ^= bits.u;
    }
    return check;
}
