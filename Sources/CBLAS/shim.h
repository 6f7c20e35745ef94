// OpenBLAS's CBLAS interface (Debian: libopenblas-dev), plus its thread controls.
#include <cblas.h>
