#pragma once
// 16-byte vectorised global loads and stores for the elementwise kernels: a thread moves one
// Pack of V = 16 / sizeof(T) elements per access when every pointer is 16-byte aligned, and
// single elements otherwise (V = 1) and for the tail past the last whole pack.
#include <cstdint>
#include <initializer_list>

namespace lpfast {

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p, int64_t pack) {
  return reinterpret_cast<const Pack<T, V>*>(p)[pack];
}

template <int V, typename T>
__device__ __forceinline__ void store_pack(T* p, int64_t pack, const Pack<T, V>& x) {
  reinterpret_cast<Pack<T, V>*>(p)[pack] = x;
}

// True when every non-null pointer allows 16-byte packs.
inline bool packs_aligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <typename T>
constexpr int pack_width() {
  return 16 / sizeof(T) > 0 ? int(16 / sizeof(T)) : 1;
}

}  // namespace lpfast
