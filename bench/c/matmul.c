/* Memory-heavy kernel: integer matrix multiply over static arrays.
 *
 * The inner loop is an i32 load pair, a multiply and an add per step, with one operand
 * walking a column (stride n), exercising address arithmetic and 32-bit loads.
 */

#define MAT_MAX 128

static int a[MAT_MAX * MAT_MAX];
static int b[MAT_MAX * MAT_MAX];
static int c[MAT_MAX * MAT_MAX];

/* Multiplies two generated n-by-n matrices (n capped at MAT_MAX); returns a checksum of the product. */
int matmul(int size) {
    int n = size > MAT_MAX ? MAT_MAX : size;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            a[i * n + j] = (i * 7 + j * 3) % 17 - 8;
            b[i * n + j] = (i * 5 + j * 11) % 13 - 6;
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int sum = 0;
            for (int k = 0; k < n; k++)
                sum += a[i * n + k] * b[k * n + j];
            c[i * n + j] = sum;
        }
    unsigned check = 0;
    for (int i = 0; i < n * n; i++)
        check = check * 31u + (unsigned)c[i];
    return (int)check;
}
