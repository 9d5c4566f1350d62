/* Floating point: the Mandelbrot set as a bitmap, checksummed. */
#include <stdint.h>
#include <stdio.h>

int main(void) {
    const int w = 120, h = 120, iters = 50;
    uint32_t sum = 0;
    for (int y = 0; y < h; y++) {
        double ci = 2.0 * y / h - 1.0;
        uint8_t bits = 0;
        for (int x = 0; x < w; x++) {
            double cr = 2.0 * x / w - 1.5, zr = 0, zi = 0, tr = 0, ti = 0;
            int i = 0;
            while (i < iters && tr + ti <= 4.0) {
                zi = 2.0 * zr * zi + ci;
                zr = tr - ti + cr;
                tr = zr * zr;
                ti = zi * zi;
                i++;
            }
            bits = (uint8_t)(bits << 1 | (tr + ti <= 4.0));
            if ((x & 7) == 7) { sum = sum * 31 + bits; bits = 0; }
        }
    }
    printf("mandelbrot %u\n", sum);
    return 0;
}
