// LAPACKE C interface (Debian: liblapacke-dev). Only real-valued routines are used by Assay.
#include <lapacke.h>
