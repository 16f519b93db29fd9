/* moeq bench kernel: placeholder until the kernel benchmark lands. */
#include <stdio.h>
#include "common.h"

int cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "moeq bench: not implemented yet\n");
    return 2;
}
