#ifndef PL_VERSION_H
#define PL_VERSION_H
#define PL_NAME "parley"
#define PL_VERSION "0.1.0"
#endif
