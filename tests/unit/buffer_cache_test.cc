// BufferCache: large buffers freed are handed out again (so a result written every call
// does not fault its pages in every call), within per-size and total limits; small ones
// are not kept. HostTensor::Uninitialized and the results of a run use it.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ir/host_tensor.h"
#include "support/buffer_cache.h"
#include "support/host_memory.h"

namespace tg {
namespace {

TEST(BufferCache, LargeBuffersAreReusedSmallOnesAreNot) {
  const size_t big = 3 * BufferCache::kMinBytes + 5;
  const size_t before = BufferCache::kept_bytes();
  void* a = BufferCache::Allocate(big);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  BufferCache::Release(a, big);
  EXPECT_GT(BufferCache::kept_bytes(), before);
  void* b = BufferCache::Allocate(big);
  EXPECT_EQ(a, b);  // the kept buffer, its pages already mapped
  EXPECT_EQ(BufferCache::kept_bytes(), before);
  BufferCache::Release(b, big);

  const size_t small = BufferCache::kMinBytes - 1;
  const size_t kept = BufferCache::kept_bytes();
  void* c = BufferCache::Allocate(small);
  BufferCache::Release(c, small);
  EXPECT_EQ(BufferCache::kept_bytes(), kept);
}

TEST(BufferCache, KeepsAtMostAFewPerSizeAndABoundedTotal) {
  const size_t size = 2 * BufferCache::kMinBytes + 64;
  std::vector<void*> held;
  for (size_t i = 0; i < BufferCache::kMaxPerSize + 3; ++i) held.push_back(BufferCache::Allocate(size));
  const size_t before = BufferCache::kept_bytes();
  for (void* p : held) BufferCache::Release(p, size);
  EXPECT_LE(BufferCache::kept_bytes() - before, BufferCache::kMaxPerSize * size);
  EXPECT_LE(BufferCache::kept_bytes(), BufferCache::kMaxTotalBytes);
  // Far more than the total limit: released, not kept.
  const size_t huge = BufferCache::kMaxTotalBytes / 2 + 64;
  void* h1 = BufferCache::Allocate(huge);
  void* h2 = BufferCache::Allocate(huge);
  BufferCache::Release(h1, huge);
  BufferCache::Release(h2, huge);
  EXPECT_LE(BufferCache::kept_bytes(), BufferCache::kMaxTotalBytes);
}

TEST(BufferCache, HostTensorsZeroFillUnlessAskedNotTo) {
  TensorType t{DType::kF32, {1 << 19}};  // 2 MiB: from the cache
  {
    HostTensor dirty = HostTensor::Uninitialized(t);
    for (int64_t i = 0; i < t.numel(); ++i) dirty.as<float>()[i] = 7.0f;
  }  // kept by the cache with its 7s
  HostTensor zeros(t);
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(zeros.as<float>()[i], 0.0f) << i;
  std::vector<float> src(static_cast<size_t>(t.numel()), 1.5f);
  HostTensor copy(t, src.data());
  EXPECT_EQ(copy.as<float>()[t.numel() - 1], 1.5f);
  HostTensor copied_again = copy;  // copies keep the contents
  EXPECT_EQ(copied_again.as<float>()[0], 1.5f);
}

TEST(HostMemory, LargeBuffersStartOnAHugePageBoundary) {
  // From kHugePageBytes on, 2 MiB aligned (huge pages can back them); below, 64-byte aligned.
  for (size_t bytes : {size_t{2}, size_t{100}, kHugePageBytes - 1, kHugePageBytes,
                       kHugePageBytes * 3 + 5}) {
    auto* p = static_cast<uint8_t*>(AllocateHostMemory(bytes));
    const auto address = reinterpret_cast<uintptr_t>(p);
    EXPECT_EQ(address % (bytes >= kHugePageBytes ? kHugePageBytes : 64), 0u) << bytes;
    p[0] = 1;
    p[bytes - 1] = 2;  // the whole buffer is usable
    EXPECT_EQ(p[0] + p[bytes - 1], 3);
    FreeHostMemory(p);
  }
  // Large buffers of the cache (tensors) come from there too.
  void* cached = BufferCache::Allocate(kHugePageBytes + 64);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(cached) % kHugePageBytes, 0u);
  BufferCache::Release(cached, kHugePageBytes + 64);
}

}  // namespace
}  // namespace tg
