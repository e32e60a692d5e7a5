// Compiled guards: the per-call "is the module still the one we captured?" check in C++.
//
// tilegraph/_guards.py's fingerprint() is the definition of what a capture depends on (module
// modes, plain attributes, hooks, parameter and buffer shapes) and it describes changes; but
// it builds a tuple per attribute, thousands per call on a ResNet, which costs milliseconds
// and wakes Python's garbage collector. ModuleGuard records the same facts once as a flat
// list of tokens and `unchanged(model)` walks the module again comparing token by token,
// allocating nothing that outlives a comparison. It is at least as strict as the
// fingerprint (it also records each parameter's and buffer's identity, and looks deeper
// through shared objects), never less: a "changed" answer is confirmed by the caller with the
// fingerprint, an "unchanged" one is final.
// Most of a module's attributes are numbers, strings and tuples (a Conv2d's sizes and
// flags) that only an assignment can change: while a module's __dict__ keeps its version
// tag, the check skips them and walks only tensors, containers and objects (EfficientNet-B0,
// 337 modules: 247 -> 141 us per call on one core).
//
// TensorVersions does the same for _guards.host_versions: the identity, data pointer and
// in-place version counter of every synchronized weight, compared without building tuples.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace nb = nanobind;

namespace {

// What the walk needs to know about Python's side (types, names), given once by _guards.py.
struct GuardSpec {
  std::vector<PyTypeObject*> plain_exact;  // types compared by value (bool, int, str, ...)
  nb::object tensor_type, module_type;
  // The module's parameters and buffers (their identities when the guard was made): where
  // an attribute holds one again (nn.LSTM's _flat_weights) it counts without its version,
  // as in fingerprint(). Sound while the walk's parameter and buffer records hold, which
  // record these same identities.
  std::unordered_set<uintptr_t> registered;
  nb::object internals;     // frozenset of module attribute names the walk skips
  nb::object skip;          // frozenset of further names (e.g. "training" without modes)
  std::vector<nb::object> hook_names;  // the hook dicts whose identities count
  bool with_modes = true;
  Py_ssize_t max_items = 64;
  int max_depth = 2;
};

// An interned Python string for a literal name (made once; called with the GIL held).
PyObject* Name(const char* literal) {
  static std::unordered_map<const char*, PyObject*> names;
  auto [it, fresh] = names.emplace(literal, nullptr);
  if (fresh) it->second = PyUnicode_InternFromString(literal);
  return it->second;
}

// One recorded fact. kValue holds a reference and compares with ==, the rest compare numbers.
struct Token {
  enum Kind : uint8_t { kId, kInt, kValue, kNone, kMark } kind;
  uint64_t number = 0;
  nb::object value;
};

// The dictionary version tag (PEP 509) of a dict: CPython gives a dict a new one, from a
// global counter, whenever it is modified, so (address, tag) equal means the same dict
// holding the same objects. 0: not available (Python 3.12 deprecates the field), and the
// walk then never takes the fast path.
uint64_t DictTag(PyObject* dict) {
#if PY_VERSION_HEX < 0x030C0000
  return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag;
#else
  (void)dict;
  return 0;
#endif
}

// A module's attribute dictionary as recorded: its tag, and per attribute the token range of
// its value and whether that value is immutable (a plain scalar, or a tuple of them). While
// the tag holds, no attribute was added, removed or rebound, so the check walks only the
// values that can change in place (tensors, lists, dicts, objects) and skips the rest.
struct Section {
  struct Attribute {
    size_t value_begin = 0, end = 0;
    PyObject* value = nullptr;  // borrowed: alive while the dict's tag holds
    bool immutable = false;
  };
  uintptr_t dict = 0;
  uint64_t tag = 0;
  std::vector<Attribute> attributes;
};

// Walks a module tree the way fingerprint() does, either recording tokens or checking them.
class Walker {
 public:
  Walker(const GuardSpec& spec, std::vector<Token>* tokens, std::vector<Section>* sections,
         bool record)
      : spec_(spec), tokens_(tokens), sections_(sections), record_(record) {}

  // False as soon as a token differs (check mode); Python errors become "changed".
  bool Module(PyObject* root) {
    std::vector<PyObject*> stack{root};
    while (!stack.empty() && ok_) {
      PyObject* m = stack.back();
      stack.pop_back();
      Id(m);
      Id(reinterpret_cast<PyObject*>(Py_TYPE(m)));
      PyObject* raw = PyObject_GenericGetDict(m, nullptr);
      if (raw == nullptr) PyErr_Clear();
      nb::object dict = nb::steal(raw);
      if (raw == nullptr || !PyDict_Check(raw)) return Fail();
      for (const nb::object& name : spec_.hook_names) {
        PyObject* hooks = PyDict_GetItem(dict.ptr(), name.ptr());  // borrowed
        if (hooks == nullptr || !PyDict_Check(hooks)) {
          Mark(0);
          continue;
        }
        Mark(static_cast<uint64_t>(PyDict_Size(hooks)) + 1);
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (ok_ && PyDict_Next(hooks, &pos, &k, &v)) Id(v);
      }
      Attributes(dict.ptr(), 0, /*module_level=*/true);
      Tensors(dict.ptr(), "_parameters", /*parameters=*/true);
      Tensors(dict.ptr(), "_buffers", /*parameters=*/false);
      PyObject* children = PyDict_GetItem(dict.ptr(), Name("_modules"));
      if (children == nullptr || !PyDict_Check(children)) return Fail();
      Mark(static_cast<uint64_t>(PyDict_Size(children)));
      std::vector<PyObject*> order;
      Py_ssize_t pos = 0;
      PyObject *k, *v;
      while (ok_ && PyDict_Next(children, &pos, &k, &v)) {
        if (v == Py_None) continue;
        Key(k);
        Id(v);
        order.push_back(v);
      }
      stack.insert(stack.end(), order.rbegin(), order.rend());  // visit in declaration order
    }
    if (ok_ && !record_ && next_ != tokens_->size()) return Fail();
    return ok_;
  }

 private:
  bool Fail() { return ok_ = false; }

  void Emit(Token::Kind kind, uint64_t number, PyObject* value = nullptr) {
    if (!ok_) return;
    if (record_) {
      Token t{kind, number, value ? nb::borrow(value) : nb::object()};
      tokens_->push_back(std::move(t));
      return;
    }
    if (next_ >= tokens_->size()) {
      Fail();
      return;
    }
    const Token& t = (*tokens_)[next_++];
    if (t.kind != kind || t.number != number) {
      Fail();
      return;
    }
    if (kind == Token::kValue) {
      if (Py_TYPE(t.value.ptr()) != Py_TYPE(value)) {
        Fail();
        return;
      }
      const int eq = PyObject_RichCompareBool(t.value.ptr(), value, Py_EQ);
      if (eq != 1) {
        PyErr_Clear();
        Fail();
      }
    }
  }
  void Id(PyObject* o) { Emit(Token::kId, reinterpret_cast<uintptr_t>(o)); }
  void Mark(uint64_t n) { Emit(Token::kMark, n); }
  void Int(int64_t n) { Emit(Token::kInt, static_cast<uint64_t>(n)); }
  void Plain(PyObject* o) { Emit(Token::kValue, 0, o); }

  // getattr(o, name) or an empty object (and a failed walk) when it raises.
  nb::object Attr(PyObject* o, const char* name) {
    PyObject* r = PyObject_GetAttr(o, Name(name));
    if (r == nullptr) {
      PyErr_Clear();
      Fail();
      return nb::object();
    }
    return nb::steal(r);
  }

  bool IsPlainExactly(PyObject* v) const {
    PyTypeObject* t = Py_TYPE(v);
    for (PyTypeObject* p : spec_.plain_exact)
      if (t == p) return true;
    return false;
  }
  bool IsPlain(PyObject* v) {
    if (IsPlainExactly(v)) return true;
    // Exact containers are instances of no plain type (those are scalars, torch.Size, ...).
    if (PyTuple_CheckExact(v) || PyList_CheckExact(v) || PyDict_CheckExact(v)) return false;
    for (PyTypeObject* p : spec_.plain_exact)  // subclasses (enum members, bool of int, ...)
      if (PyType_IsSubtype(Py_TYPE(v), p)) return true;
    return false;
  }
  // isinstance(v, type), without the __class__ lookup isinstance falls back on (it would
  // run a config object's own __getattribute__ for every test).
  static bool IsA(PyObject* v, const nb::object& type) {
    return PyType_IsSubtype(Py_TYPE(v), reinterpret_cast<PyTypeObject*>(type.ptr()));
  }

  bool Skipped(PyObject* key, bool module_level) {
    if (!module_level) return false;
    for (PyObject* set : {spec_.internals.ptr(), spec_.skip.ptr()}) {
      const int r = PySet_Contains(set, key);
      if (r < 0) PyErr_Clear();
      if (r == 1) return true;
    }
    return false;
  }

  void Attributes(PyObject* dict, int depth, bool module_level) {
    if (module_level) return ModuleAttributes(dict);
    WalkAttributes(dict, depth, false);
  }

  // Every attribute of `dict` in order, then the end mark.
  void WalkAttributes(PyObject* dict, int depth, bool module_level) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (ok_ && PyDict_Next(dict, &pos, &k, &v)) {
      if (Skipped(k, module_level)) continue;
      Key(k);
      Value(v, depth);
    }
    Mark(0);  // end of this dictionary
  }

  // A module's own attributes, recorded with their Section; checked through it when the
  // dictionary is the recorded one, unmodified (the same tokens are consumed either way).
  void ModuleAttributes(PyObject* dict) {
    if (record_) {
      Section section;
      section.dict = reinterpret_cast<uintptr_t>(dict);
      section.tag = DictTag(dict);
      Py_ssize_t pos = 0;
      PyObject *k, *v;
      while (ok_ && PyDict_Next(dict, &pos, &k, &v)) {
        if (Skipped(k, true)) continue;
        Key(k);
        Section::Attribute a;
        a.value_begin = tokens_->size();
        Value(v, 0);
        a.end = tokens_->size();
        a.value = v;
        a.immutable = Immutable(v);
        section.attributes.push_back(a);
      }
      sections_->push_back(std::move(section));
      Mark(0);
      return;
    }
    if (section_ >= sections_->size()) return (void)Fail();
    const Section& section = (*sections_)[section_++];
    const uint64_t tag = DictTag(dict);
    if (tag == 0 || tag != section.tag || section.dict != reinterpret_cast<uintptr_t>(dict))
      return WalkAttributes(dict, 0, true);
    for (const Section::Attribute& a : section.attributes) {
      if (!ok_) return;
      if (a.immutable) {
        next_ = a.end;
        continue;
      }
      next_ = a.value_begin;
      Value(a.value, 0);
      if (next_ != a.end) return (void)Fail();
    }
    Mark(0);
  }

  // Values no in-place operation can change: exact plain scalars and tuples of them.
  bool Immutable(PyObject* v) const {
    if (IsPlainExactly(v)) return true;
    if (!PyTuple_CheckExact(v)) return false;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); ++i)
      if (!Immutable(PyTuple_GET_ITEM(v, i))) return false;
    return true;
  }

  // A dictionary key or an attribute name: strings by value, anything else by identity.
  void Key(PyObject* key) {
    if (PyUnicode_CheckExact(key)) Plain(key);
    else Id(key);
  }

  void Tensor(PyObject* t) {
    Id(t);
    if (spec_.registered.count(reinterpret_cast<uintptr_t>(t))) {
      Mark(7);  // a parameter or buffer: its values are inputs, not part of the capture
      Shape(t);
      return;
    }
    PyObject* version = PyObject_GetAttr(t, Name("_version"));
    if (version == nullptr) {  // inference tensors have no version counter
      PyErr_Clear();
      Emit(Token::kNone, 0);
    } else {
      const long long n = PyLong_AsLongLong(version);
      Py_DECREF(version);
      if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Fail();
        return;
      }
      Int(n);
    }
    Shape(t);
  }

  void Shape(PyObject* t) {
    nb::object shape = Attr(t, "shape");
    if (ok_) Plain(shape.ptr());
    nb::object dtype = Attr(t, "dtype");
    if (ok_) Id(dtype.ptr());
  }

  void Value(PyObject* v, int depth) {
    if (IsPlain(v)) {
      Plain(v);
      return;
    }
    if (IsA(v, spec_.tensor_type)) {
      Mark(1);
      Tensor(v);
      return;
    }
    if (IsA(v, spec_.module_type)) {
      Mark(2);
      Id(v);
      return;
    }
    const bool sequence = PyTuple_Check(v) || PyList_Check(v);
    const Py_ssize_t n = sequence ? PySequence_Fast_GET_SIZE(v) : 0;
    if (sequence && n <= spec_.max_items) {
      Mark(3);
      Id(reinterpret_cast<PyObject*>(Py_TYPE(v)));
      Int(n);
      for (Py_ssize_t i = 0; i < n && ok_; ++i) Value(PySequence_Fast_GET_ITEM(v, i), depth);
      return;
    }
    if (PyDict_Check(v) && PyDict_Size(v) <= spec_.max_items) {
      Mark(4);
      Int(PyDict_Size(v));
      Py_ssize_t pos = 0;
      PyObject *k, *x;
      while (ok_ && PyDict_Next(v, &pos, &k, &x)) {
        Key(k);
        Value(x, depth);
      }
      return;
    }
    PyObject* dict = nullptr;
    if (!PyCallable_Check(v) && depth < spec_.max_depth) {
      dict = PyObject_GenericGetDict(v, nullptr);
      if (dict == nullptr || !PyDict_Check(dict)) {  // no __dict__ (slots, builtins)
        PyErr_Clear();
        Py_XDECREF(dict);
        dict = nullptr;
      }
    }
    if (dict == nullptr) {  // compared by identity
      Mark(5);
      Id(v);
      return;
    }
    Mark(6);
    Id(v);
    Id(reinterpret_cast<PyObject*>(Py_TYPE(v)));
    Attributes(dict, depth + 1, /*module_level=*/false);
    Py_DECREF(dict);
  }

  // A module's parameters or buffers: name, identity, shape, dtype (and requires_grad).
  void Tensors(PyObject* module_dict, const char* which, bool parameters) {
    PyObject* d = PyDict_GetItem(module_dict, Name(which));  // borrowed
    if (d == nullptr || !PyDict_Check(d)) return (void)Fail();
    Mark(static_cast<uint64_t>(PyDict_Size(d)));
    Py_ssize_t pos = 0;
    PyObject *k, *t;
    while (ok_ && PyDict_Next(d, &pos, &k, &t)) {
      if (t == Py_None) continue;
      Key(k);
      Id(t);
      Shape(t);
      if (parameters && spec_.with_modes) {
        nb::object grad = Attr(t, "requires_grad");
        if (ok_) Int(grad.ptr() == Py_True);
      }
    }
  }

  const GuardSpec& spec_;
  std::vector<Token>* tokens_;
  std::vector<Section>* sections_;
  bool record_;
  size_t next_ = 0;
  size_t section_ = 0;
  bool ok_ = true;
};

class ModuleGuard {
 public:
  ModuleGuard(nb::handle model, nb::object plain_types, nb::object tensor_type,
              nb::object module_type, nb::object registered, nb::object internals,
              nb::object skip, nb::tuple hooks, bool with_modes, int max_items, int max_depth) {
    for (nb::handle id : registered) spec_.registered.insert(nb::cast<uintptr_t>(id));
    for (nb::handle t : nb::borrow<nb::tuple>(plain_types))
      spec_.plain_exact.push_back(reinterpret_cast<PyTypeObject*>(t.ptr()));
    spec_.tensor_type = tensor_type;
    spec_.module_type = module_type;
    spec_.internals = internals;
    spec_.skip = skip;
    for (nb::handle h : hooks) spec_.hook_names.push_back(nb::borrow(h));
    spec_.with_modes = with_modes;
    spec_.max_items = max_items;
    spec_.max_depth = max_depth;
    valid_ = Walker(spec_, &tokens_, &sections_, /*record=*/true).Module(model.ptr());
  }

  // True when everything recorded is as it was (false also when the walk could not finish).
  bool Unchanged(nb::handle model) const {
    if (!valid_) return false;
    return Walker(spec_, const_cast<std::vector<Token>*>(&tokens_),
                  const_cast<std::vector<Section>*>(&sections_), /*record=*/false)
        .Module(model.ptr());
  }

  size_t size() const { return tokens_.size(); }

 private:
  GuardSpec spec_;
  std::vector<Token> tokens_;
  std::vector<Section> sections_;  // one per module, in walk order
  bool valid_ = false;
};

// (name, tensor) pairs' identity, data pointer and version counter at one moment.
class TensorVersions {
 public:
  explicit TensorVersions(nb::list named) {
    for (nb::handle pair : named) {
      if (!PyTuple_Check(pair.ptr()) || PyTuple_GET_SIZE(pair.ptr()) != 2)
        throw nb::type_error("TensorVersions: expected (name, tensor) pairs");
      nb::object t = nb::borrow(PyTuple_GET_ITEM(pair.ptr(), 1));
      Entry e{t, 0, 0};
      if (!Read(t.ptr(), &e.data, &e.version)) {
        PyErr_Clear();
        valid_ = false;
      }
      entries_.push_back(std::move(e));
    }
  }

  bool valid() const { return valid_; }
  // (data pointer, version or -1) of each tensor as recorded.
  nb::list Recorded() const {
    nb::list out;
    for (const Entry& e : entries_) out.append(nb::make_tuple(e.data, e.version));
    return out;
  }

  bool Unchanged(nb::list named) const {
    if (!valid_ || static_cast<size_t>(nb::len(named)) != entries_.size()) return false;
    for (size_t i = 0; i < entries_.size(); ++i) {
      PyObject* pair = PyList_GET_ITEM(named.ptr(), static_cast<Py_ssize_t>(i));
      if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return false;
      PyObject* t = PyTuple_GET_ITEM(pair, 1);
      const Entry& e = entries_[i];
      uint64_t data = 0;
      int64_t version = 0;
      if (t != e.tensor.ptr() || !Read(t, &data, &version)) {
        PyErr_Clear();
        return false;
      }
      if (data != e.data || version != e.version) return false;
    }
    return true;
  }

 private:
  struct Entry {
    nb::object tensor;
    uint64_t data;
    int64_t version;  // -1: no version counter (inference tensors)
  };
  static bool Read(PyObject* t, uint64_t* data, int64_t* version) {
    PyObject* ptr = PyObject_CallMethodNoArgs(t, Name("data_ptr"));
    if (ptr == nullptr) return false;
    *data = PyLong_AsUnsignedLongLongMask(ptr);
    Py_DECREF(ptr);
    PyObject* v = PyObject_GetAttr(t, Name("_version"));
    if (v == nullptr) {
      PyErr_Clear();
      *version = -1;
      return true;
    }
    *version = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return !PyErr_Occurred();
  }

  std::vector<Entry> entries_;
  bool valid_ = true;
};

}  // namespace

void BindGuards(nb::module_& m) {
  nb::class_<ModuleGuard>(m, "ModuleGuard")
      .def(nb::init<nb::handle, nb::object, nb::object, nb::object, nb::object, nb::object,
                    nb::object, nb::tuple, bool, int, int>(),
           nb::arg("model"), nb::arg("plain_types"), nb::arg("tensor_type"),
           nb::arg("module_type"), nb::arg("registered"), nb::arg("internals"), nb::arg("skip"),
           nb::arg("hooks"), nb::arg("with_modes"), nb::arg("max_items"), nb::arg("max_depth"))
      .def("unchanged", &ModuleGuard::Unchanged, nb::arg("model"))
      .def("__len__", &ModuleGuard::size);
  nb::class_<TensorVersions>(m, "TensorVersions")
      .def(nb::init<nb::list>(), nb::arg("named"))
      .def("unchanged", &TensorVersions::Unchanged, nb::arg("named"))
      .def_prop_ro("valid", &TensorVersions::valid)
      .def("recorded", &TensorVersions::Recorded);
}
