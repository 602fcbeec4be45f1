/* tgmkimg — small byte-level tools the harness needs to make test files from real
 * JPEGs (made by vips or taken from the corpus), plus a free-port finder.
 *
 *   tgmkimg tag IN.jpg OUT.jpg TEXT       insert a COM segment holding TEXT after SOI:
 *                                         the same picture, distinct bytes (a distinct
 *                                         original for the server, so no cache helps)
 *   tgmkimg pad IN.jpg OUT.jpg BYTES SEED insert COM segments of pseudo-random bytes
 *                                         before the first SOS until OUT is >= BYTES:
 *                                         a valid JPEG of any size (big-upload bodies)
 *   tgmkimg sofbomb IN.jpg OUT.jpg W H    rewrite the frame header to declare WxH
 *                                         (decompression bomb: tiny file, huge header)
 *   tgmkimg pngtag IN.png OUT.png TEXT    insert a tEXt chunk holding TEXT after IHDR:
 *                                         a distinct PNG original, same pixels
 *   tgmkimg freeport                      print a TCP port free on 127.0.0.1 now */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char *slurp_any(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        perror(path);
        exit(1);
    }
    unsigned char *b = malloc((size_t)st.st_size + 1);
    if (b == NULL || fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        fprintf(stderr, "%s: read failed\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)st.st_size;
    return b;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    unsigned char *b = slurp_any(path, len);
    if (*len < 4 || b[0] != 0xFF || b[1] != 0xD8) {
        fprintf(stderr, "%s: not a JPEG\n", path);
        exit(1);
    }
    return b;
}

/* CRC-32 of PNG chunks (ISO 3309, reflected 0xEDB88320), bit by bit: a few bytes only. */
static uint32_t crc32_png(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static FILE *create(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    return f;
}

static void put(FILE *f, const void *b, size_t n)
{
    if (n && fwrite(b, 1, n, f) != n) {
        perror("write");
        exit(1);
    }
}

/* Offset of the first marker @p m (0xDA = SOS, 0xC0..0xC2 = SOF) walking the segments. */
static size_t find_marker(const unsigned char *b, size_t len, int lo, int hi)
{
    size_t i = 2;
    while (i + 4 <= len) {
        if (b[i] != 0xFF) {
            fprintf(stderr, "bad JPEG segment at %zu\n", i);
            exit(1);
        }
        int m = b[i + 1];
        if (m == 0xFF) {
            i++;
            continue;
        }
        if (m >= lo && m <= hi)
            return i;
        i += 2 + ((size_t)b[i + 2] << 8 | b[i + 3]);
    }
    fprintf(stderr, "marker not found\n");
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "freeport")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t l = sizeof(a);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
            getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
            perror("freeport");
            return 1;
        }
        printf("%d\n", ntohs(a.sin_port));
        close(fd);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "tag")) {
        size_t len;
        unsigned char *b = slurp(argv[2], &len);
        size_t tl = strlen(argv[4]);
        if (tl > 60000)
            tl = 60000;
        unsigned char hdr[4] = {0xFF, 0xFE, (unsigned char)((tl + 2) >> 8),
                                (unsigned char)((tl + 2) & 0xFF)};
        FILE *o = create(argv[3]);
        put(o, b, 2);
        put(o, hdr, 4);
        put(o, argv[4], tl);
        put(o, b + 2, len - 2);
        fclose(o);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "pad")) {
        size_t len;
        unsigned char *b = slurp(argv[2], &len);
        unsigned long long want = strtoull(argv[4], NULL, 10);
        uint64_t x = strtoull(argv[5], NULL, 10) * 0x9E3779B97F4A7C15ull + 1;
        size_t sos = find_marker(b, len, 0xDA, 0xDA);
        FILE *o = create(argv[3]);
        put(o, b, sos);
        unsigned long long have = len;
        static unsigned char seg[65537];
        while (have < want) {
            unsigned long long need = want - have;
            size_t body = need < 4 ? 1 : (need - 4 > 65533 ? 65533 : (size_t)(need - 4));
            seg[0] = 0xFF, seg[1] = 0xFE;
            seg[2] = (unsigned char)((body + 2) >> 8), seg[3] = (unsigned char)((body + 2) & 0xFF);
            for (size_t i = 0; i < body; i += 8) { /* xorshift64: incompressible, seeded */
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                memcpy(seg + 4 + i, &x, body - i < 8 ? body - i : 8);
            }
            put(o, seg, body + 4);
            have += body + 4;
        }
        put(o, b + sos, len - sos);
        fclose(o);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "sofbomb")) {
        size_t len;
        unsigned char *b = slurp(argv[2], &len);
        size_t sof = find_marker(b, len, 0xC0, 0xC2);
        unsigned w = (unsigned)atoi(argv[4]), h = (unsigned)atoi(argv[5]);
        if (w == 0 || w > 65535 || h == 0 || h > 65535)
            return 2;
        b[sof + 5] = (unsigned char)(h >> 8), b[sof + 6] = (unsigned char)h;
        b[sof + 7] = (unsigned char)(w >> 8), b[sof + 8] = (unsigned char)w;
        FILE *o = create(argv[3]);
        put(o, b, len);
        fclose(o);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "pngtag")) {
        size_t len;
        unsigned char *b = slurp_any(argv[2], &len);
        static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
        if (len < 33 || memcmp(b, sig, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) {
            fprintf(stderr, "%s: not a PNG\n", argv[2]);
            return 1;
        }
        size_t tl = strlen(argv[4]);
        if (tl > 60000)
            tl = 60000;
        /* keyword "Comment", NUL, text */
        size_t dl = 8 + tl;
        unsigned char *chunk = malloc(12 + dl);
        put_be32(chunk, (uint32_t)dl);
        memcpy(chunk + 4, "tEXtComment", 12);
        memcpy(chunk + 16, argv[4], tl);
        put_be32(chunk + 8 + dl, crc32_png(0, chunk + 4, 4 + dl));
        FILE *o = create(argv[3]);
        put(o, b, 33);
        put(o, chunk, 12 + dl);
        put(o, b + 33, len - 33);
        fclose(o);
        return 0;
    }
    fprintf(stderr, "usage: tgmkimg tag IN OUT TEXT | pngtag IN OUT TEXT | pad IN OUT BYTES SEED | "
                    "sofbomb IN OUT W H | freeport\n");
    return 2;
}
