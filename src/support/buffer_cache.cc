#include "support/buffer_cache.h"

#include "support/host_memory.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace tg {
namespace {

constexpr size_t kAlignment = 64;

struct Kept {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> by_size;
  size_t total = 0;
};

Kept& TheCache() {
  static Kept* kept = new Kept;  // never destroyed: buffers may be released at exit
  return *kept;
}

size_t Rounded(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

void* BufferCache::Allocate(size_t bytes) {
  if (bytes >= kMinBytes) {
    Kept& k = TheCache();
    std::lock_guard<std::mutex> lock(k.mutex);
    auto it = k.by_size.find(Rounded(bytes));
    if (it != k.by_size.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      k.total -= it->first;
      return p;
    }
  }
  return AllocateHostMemory(Rounded(bytes == 0 ? 1 : bytes));
}

void BufferCache::Release(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes >= kMinBytes) {
    const size_t size = Rounded(bytes);
    Kept& k = TheCache();
    std::lock_guard<std::mutex> lock(k.mutex);
    std::vector<void*>& same = k.by_size[size];
    if (same.size() < kMaxPerSize && k.total + size <= kMaxTotalBytes) {
      same.push_back(p);
      k.total += size;
      return;
    }
  }
  FreeHostMemory(p);
}

size_t BufferCache::kept_bytes() {
  Kept& k = TheCache();
  std::lock_guard<std::mutex> lock(k.mutex);
  return k.total;
}

}  // namespace tg
