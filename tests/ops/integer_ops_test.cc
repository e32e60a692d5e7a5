// Integer arithmetic: exact, and wrapping in two's complement on overflow as PyTorch's integer
// tensors do (the build uses -fwrapv), through both the CPU and the reference kernels. Also
// guards against a GCC 12 -O3 miscompile we hit: an i64 sum of eight ones gave 4.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "ops/evaluate.h"
#include "ops/op_test_util.h"

namespace tg {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

HostTensor I64(Shape shape, const std::vector<int64_t>& values) {
  HostTensor t(TensorType{DType::kI64, std::move(shape)});
  for (size_t i = 0; i < values.size(); ++i) t.as<int64_t>()[i] = values[i];
  return t;
}

void Expect(const std::string& op, const std::vector<HostTensor>& inputs, const AttrMap& attrs,
            const std::vector<int64_t>& want) {
  for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
    SCOPED_TRACE(op + (choice == DeviceKind::kCpu ? " (cpu)" : " (reference)"));
    Graph g;
    Node* n = testing::BuildSingleOpGraph(g, op, inputs, attrs);
    std::vector<const HostTensor*> ptrs;
    for (const HostTensor& t : inputs) ptrs.push_back(&t);
    HostTensor out = EvaluateNode(*n, ptrs, choice)[0];
    ASSERT_EQ(out.type().dtype, DType::kI64);
    ASSERT_EQ(out.type().numel(), static_cast<int64_t>(want.size()));
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out.as<int64_t>()[i], want[i]) << i;
  }
}

TEST(IntegerOps, SumsAreExact) {
  Expect("sum", {I64({8}, {1, 1, 1, 1, 1, 1, 1, 1})}, {}, {8});
  std::vector<int64_t> v(1000);
  for (int64_t i = 0; i < 1000; ++i) v[i] = i * 1000003;
  Expect("sum", {I64({1000}, v)}, {}, {499500 * int64_t{1000003}});
  Expect("sum", {I64({2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10})}, {{"axes", std::vector<int64_t>{1}}},
         {15, 40});
}

TEST(IntegerOps, OverflowWrapsAsInPyTorch) {
  Expect("sum", {I64({2}, {kMax, 1})}, {}, {kMin});
  Expect("add", {I64({1}, {kMax}), I64({1}, {1})}, {}, {kMin});
  Expect("sub", {I64({1}, {kMin}), I64({1}, {1})}, {}, {kMax});
  Expect("mul", {I64({1}, {kMax}), I64({1}, {2})}, {}, {-2});
  Expect("neg", {I64({2}, {kMin, 5})}, {}, {kMin, -5});
  Expect("abs", {I64({2}, {kMin, -5})}, {}, {kMin, 5});
  Expect("pow_scalar", {I64({3}, {3, -2, int64_t{1} << 32})}, {{"exponent", 2.0}},
         {9, 4, 0});
  Expect("pow_scalar", {I64({2}, {3, 2})}, {{"exponent", 63.0}},
         {-3237885987332494933, kMin});  // torch.tensor([3, 2]) ** 63
}

}  // namespace
}  // namespace tg
