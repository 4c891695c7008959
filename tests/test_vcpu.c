#include "testutil.h"
int main(int argc, char **argv) { return vmmt_select_engine(argc, argv) ? 77 : 0; }
