// Recycled large host buffers. A buffer of tens of MiB freed and allocated again is returned
// to the OS and mapped afresh, and the kernel that first writes it then takes a page fault
// and a zeroed page per 4 KiB: 8,192 of them for a 32 MiB result, which doubled the time of
// a memory-bound kernel writing a model's output. Buffers of at least kMinBytes freed here
// are kept (a few per size, a bounded total) and handed out again, as a caching allocator
// would; smaller ones go straight to the heap, which already reuses them.
#pragma once

#include <cstddef>

namespace tg {

struct BufferCache {
  static constexpr size_t kMinBytes = size_t{1} << 20;      // 1 MiB
  static constexpr size_t kMaxPerSize = 4;
  static constexpr size_t kMaxTotalBytes = size_t{512} << 20;  // kept, not in use

  // A buffer of `bytes` (a kept one when there is one), aligned to 64 bytes.
  static void* Allocate(size_t bytes);
  // Gives back a buffer from Allocate: kept when large and under the limits, else freed.
  static void Release(void* p, size_t bytes);
  // Bytes kept now (tests).
  static size_t kept_bytes();
};

// A std::allocator for byte-like buffers that are about to be overwritten: construct()
// without a value leaves memory uninitialized (std::allocator's zero-fills), and large
// buffers come from BufferCache.
template <typename T>
struct HostBufferAllocator {
  using value_type = T;
  HostBufferAllocator() = default;
  template <typename U>
  HostBufferAllocator(const HostBufferAllocator<U>&) {}  // NOLINT: converting, as allocators are

  T* allocate(size_t n) { return static_cast<T*>(BufferCache::Allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { BufferCache::Release(p, n * sizeof(T)); }

  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(static_cast<Args&&>(args)...);
  }
  template <typename U>
  bool operator==(const HostBufferAllocator<U>&) const { return true; }
};

}  // namespace tg
