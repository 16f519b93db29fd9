/* moeq: the command-line entry point; dispatches to one file per subcommand. */
#include <dirent.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "moeq_dist.h"

#ifndef MOEQ_VERSION
#define MOEQ_VERSION "0.1.0"
#endif

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
    int dist;   /* splits its work over MPI ranks under mpirun (docs/scale.md) */
} commands[] = {
    {"inspect", cmd_inspect, "what is in a checkpoint: family, sizes, parameter counts", 0},
    {"eval", cmd_eval, "perplexity over token windows; KLD and top-1 agreement against --ref", 0},
    {"verify", cmd_verify, "deep check of a model, safetensors file or token file", 0},
    {"spectral", cmd_spectral, "weight spectra and heavy-tail alpha fits per expert matrix (HDF5, SVG)", 1},
    {"calibrate", cmd_calibrate, "run the model on calibration tokens: per-expert Hessians, routing, energies (HDF5)", 1},
    {"plan", cmd_plan, "bit budget per expert matrix: uniform, AlphaQ spectra or Hessian error, solved exactly", 1},
    {"quantize", cmd_quantize, "RTN or GPTQ quantization into a packed .moeq file (per-matrix codecs, zstd)", 1},
    {"prune", cmd_prune, "remove expert channels (CAMERA, OBS Hessian, magnitude) or whole experts: ragged widths", 0},
    {"export", cmd_export, "write a GGUF that llama.cpp runs (export gguf MODEL -o OUT.gguf --type Q4_K)", 0},
    {"unpack", cmd_unpack, "a .moeq file back to a dequantized Hugging Face directory (bf16, sharded)", 0},
    {"bench", cmd_bench, "kernel benchmarks: GEMV/GEMM GB/s and ratios to memory bandwidth and sgemm", 0},
    {"tokenize", cmd_tokenize, "text to token ids with the model's tokenizer.json (Hugging Face ids)", 0},
    {"detokenize", cmd_detokenize, "token ids back to text with the model's tokenizer.json decoder", 0},
};

static void usage(FILE *f)
{
    fprintf(f, "moeq %s: post-training compression of Mixture-of-Experts checkpoints\n\n"
               "usage: moeq COMMAND [options]   (moeq COMMAND --help for its options)\n\ncommands:\n",
            MOEQ_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 ok, 1 usage, 2 bad or unsupported input, 3 numerical failure, 4 I/O failure\n");
}

/* Library warnings go to stderr, one line each, whatever the command (-q included). */
static void print_warning(const char *msg) { fprintf(stderr, "moeq: warning: %s\n", msg); }

/* How OpenMP threads wait at a barrier. libgomp reads its policy once, when it is loaded, so
 * the tool re-executes itself with one set, unless the user chose (OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT). Spinning long (libgomp's own default, ~300k spins) burns the time slice a
 * partner needs when other processes share the cores: on 2 shared cores (load 26) eval ran at
 * 178 tokens/s spinning and 1,058 passive. Passive always pays a futex sleep and wake per
 * barrier: on a quiet 2-core Xeon the AMX eval ran at 17.5k tokens/s passive and 22.6k with a
 * short spin (GOMP_SPINCOUNT=30000, 0.3 ms of pauses there); with three busy processes on the
 * same cores, 6.1-7.7k passive against 4.3-5.3k spinning. So: a short spin when no other
 * thread is runnable as the command starts (procs_running of /proc/stat less this process's
 * runnable threads, the least of three looks 1 ms apart), else passive. */
/* threads of this process that are runnable now (OpenBLAS's start-up thread spins at first) */
static int self_running(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return 1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        const char *close = strrchr(buf, ')');   /* the state follows the command name */
        n += close && close[1] == ' ' && close[2] == 'R';
    }
    closedir(d);
    return n ? n : 1;
}

static int others_running(void)
{
    int least = -1;
    for (int k = 0; k < 3; k++) {
        FILE *f = fopen("/proc/stat", "r");
        if (!f) return -1;
        char line[256];
        int r = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "procs_running %d", &r) == 1) break;
        fclose(f);
        if (r < 0) return -1;
        r -= self_running();
        if (least < 0 || r < least) least = r;
        if (k < 2) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return least;
}

/* MOEQ_WAIT_CHOSEN holds the pid that chose: the re-executed process keeps the choice, a moeq
 * started by a moeq command (bench eval's runs) chooses again, and bench eval hands its peer
 * the environment without the choice (cmd_bench_eval.c). */
static void choose_wait_policy(char **argv)
{
    const char *mark = getenv("MOEQ_WAIT_CHOSEN");
    if (mark) {
        if (atol(mark) == (long)getpid()) return;
        unsetenv("OMP_WAIT_POLICY");
        unsetenv("GOMP_SPINCOUNT");
        unsetenv("MOEQ_WAIT_CHOSEN");
    }
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    const int quiet = others_running() == 0;
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    if (quiet ? setenv("GOMP_SPINCOUNT", "30000", 1) : setenv("OMP_WAIT_POLICY", "passive", 1)) return;
    if (setenv("MOEQ_WAIT_CHOSEN", pid, 1)) return;
    /* moeq runs BLAS on one thread (moeq_threads_init); without this, OpenBLAS starts a thread
     * per core that spins for its first ~0.1 s, against the OpenMP threads: short runs with
     * the spin above then ran up to 10x slower */
    if (!getenv("OPENBLAS_NUM_THREADS")) setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);   /* returns only on failure: run on with libgomp's default */
}

int main(int argc, char **argv)
{
    choose_wait_policy(argv);
    moeq_set_warn_handler(print_warning);
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("moeq %s\n", MOEQ_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        moeq_error err = {0};
        if (moeq_dist_init(&argc, &argv, &err) != MOEQ_OK) return tool_report(commands[i].name, &err);
        int rc;
        if (moeq_dist_size() > 1 && !commands[i].dist)
            rc = tool_usage_error(commands[i].name, "this command does not split its work over MPI ranks; "
                                  "run it without mpirun (mpirun -np N works for spectral, calibrate, plan, quantize)");
        else
            rc = commands[i].fn(argc - 1, argv + 1);
        moeq_dist_finalize();
        return rc;
    }
    fprintf(stderr, "moeq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 1;
}
