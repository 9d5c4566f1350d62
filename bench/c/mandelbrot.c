/* Floating-point kernel: Mandelbrot set membership on a size-by-size grid, in double.
 *
 * Each point iterates z = z^2 + c (f64 mul/add/sub/compare) up to max_iter times; the
 * result is the total iteration count, which depends on every floating-point step.
 */

int mandelbrot(int size, int max_iter) {
    int total = 0;
    for (int py = 0; py < size; py++) {
        double ci = -1.5 + 3.0 * py / size;
        for (int px = 0; px < size; px++) {
            double cr = -2.0 + 3.0 * px / size;
            double zr = 0.0, zi = 0.0;
            int it = 0;
            while (it < max_iter && zr * zr + zi * zi <= 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2.0 * zr * zi + ci;
                zr = t;
                it++;
            }
            total += it;
        }
    }
    return total;
}
