#include "devices/collectives/communicator.h"

#include "support/error.h"

#include <cstring>

namespace tg {

size_t CommDTypeSize(CommDType dtype) {
  switch (dtype) {
    case CommDType::kF32: case CommDType::kI32: return 4;
    case CommDType::kF64: case CommDType::kI64: return 8;
    case CommDType::kU8: return 1;
  }
  return 1;
}

namespace {
// A collective that ran at its start (communicators without a background thread).
class Completed : public Communicator::Pending {
 public:
  void Wait() override {}
};
}  // namespace

std::shared_ptr<Communicator::Pending> Communicator::StartAllReduceSum(void* buf, int64_t count,
                                                                        CommDType dtype) {
  AllReduceSum(buf, count, dtype);
  return std::make_shared<Completed>();
}

std::shared_ptr<Communicator> Communicator::Channel(int k) {
  TG_CHECK(size() == 1, kUnsupported, name(), " has no channels");
  (void)k;
  return std::make_shared<SingleProcessCommunicator>();
}

std::shared_ptr<Communicator> Communicator::Split(int color, int key) {
  TG_CHECK(size() == 1, kUnsupported, name(), " cannot be split");
  (void)color;
  (void)key;
  return std::make_shared<SingleProcessCommunicator>();
}

std::shared_ptr<Communicator::Pending> Communicator::StartSend(const void*, int64_t, int peer,
                                                               int) {
  Fail(ErrorKind::kUnsupported, name(), " has no process ", peer, " to send to");
}

void Communicator::Recv(void*, int64_t, int peer, int) {
  Fail(ErrorKind::kUnsupported, name(), " has no process ", peer, " to receive from");
}

void SingleProcessCommunicator::AllGather(const void* in, void* out, int64_t count,
                                          CommDType dtype) {
  size_t bytes = static_cast<size_t>(count) * CommDTypeSize(dtype);
  if (bytes > 0 && in != out) std::memcpy(out, in, bytes);
}

}  // namespace tg
