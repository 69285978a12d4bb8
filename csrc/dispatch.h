#pragma once
// Dispatch over a (source, destination) pair of floating dtypes, for kernels that convert while
// they copy. Inside the body, src_t and dst_t name the two C++ types.
#include <ATen/Dispatch.h>

#define LPFAST_DISPATCH_PAIR(SRC, DST, NAME, ...)                               \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, SRC, NAME, [&] {    \
    using src_t = scalar_t;                                                     \
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, DST, NAME, [&] { \
      using dst_t = scalar_t;                                                   \
      __VA_ARGS__();                                                            \
    });                                                                         \
  })
