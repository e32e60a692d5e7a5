// Trains an ONNX file with tilegraph's C++ TrainingSession, no Python involved: the model's
// loss is a scalar value of the graph (e.g. a model exported from PyTorch with its loss),
// the data comes from raw files, the trained model goes back to an ONNX file.
//
//   onnx_train MODEL.onnx --loss NAME --steps N [--lr 0.01] [--momentum 0] [--adam]
//              --input NAME=FILE ... [--save OUT.onnx]
//
// Each FILE holds the input for all N steps: raw little-endian elements of the input's
// type (float32, int64, ...), shape [N, *the input's shape]. Prints the loss of every step.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "onnx/model_file.h"
#include "onnx/session.h"

using namespace tg;

namespace {

HostTensor ReadRaw(const std::string& path, const TensorType& type) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open '" + path + "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string s = bytes.str();
  if (s.size() != type.bytes())
    throw std::runtime_error("'" + path + "' has " + std::to_string(s.size()) + " bytes; " +
                             type.ToString() + " needs " + std::to_string(type.bytes()));
  return HostTensor(type, s.data());
}

int Usage() {
  std::fprintf(stderr, "usage: onnx_train MODEL.onnx --loss NAME --steps N [--lr X] "
                       "[--momentum X] [--adam] --input NAME=FILE ... [--save OUT.onnx]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string model_path = argv[1], loss, save;
  int64_t steps = 1;
  double lr = 0.01, momentum = 0.0;
  bool adam = false;
  std::map<std::string, std::string> files;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--loss") loss = next();
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--lr") lr = std::stod(next());
    else if (a == "--momentum") momentum = std::stod(next());
    else if (a == "--adam") adam = true;
    else if (a == "--save") save = next();
    else if (a == "--input") {
      std::string spec = next();
      size_t eq = spec.find('=');
      if (eq == std::string::npos) return Usage();
      files[spec.substr(0, eq)] = spec.substr(eq + 1);
    } else {
      return Usage();
    }
  }
  if (loss.empty()) return Usage();
  try {
    DataFlow flow;
    flow.batches_per_step = steps;
    flow.mode = OutputMode::kAll;
    flow.anchors = {loss};
    TrainingSession session(LoadOnnxModel(model_path), loss,
                            adam ? Adam(lr) : Sgd(lr, momentum), flow);
    std::vector<HostTensor> data;
    std::vector<TensorView> views;
    for (const auto& name : session.input_names()) {
      if (!files.count(name)) throw std::runtime_error("no --input for '" + name + "'");
      TensorType t = session.input_type(name);
      t.shape.insert(t.shape.begin(), steps);
      data.push_back(ReadRaw(files[name], t));
    }
    for (const auto& d : data) views.push_back({d.data(), d.type()});
    HostTensor losses = session.Run(views).at(0);
    for (int64_t s = 0; s < steps; ++s) std::printf("step %lld loss %.6f\n",
                                                    static_cast<long long>(s + 1),
                                                    losses.GetAsDouble(s));
    if (!save.empty()) session.SaveModel(save);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
