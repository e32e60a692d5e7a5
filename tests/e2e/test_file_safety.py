"""Files tilegraph reads can never run code, and a damaged file is refused with an error that
names it: compileAndExport / tilegraph.load and the executable cache (docs/RELIABILITY.md)."""
import json
import os
import pickle
import warnings

import pytest
import torch

import tilegraph
from tilegraph import _archive
from models import MLP, batches


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _exported(tmp_path, training=True, steps=2):
    torch.manual_seed(0)
    model = MLP()
    opts = tilegraph.Options().deviceIterations(steps)
    x, t = batches("mlp", steps, 4, torch.Generator().manual_seed(1))
    if training:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        exe = tilegraph.trainingModel(model, opts, opt)
    else:
        exe = tilegraph.inferenceModel(model.eval(), opts)
    exe(x, t)  # a call first, so momentum state is non-zero
    path = str(tmp_path / "model.tg")
    exe.compileAndExport(path, x, t)
    return exe, model, path, (x, t)


def test_a_crafted_pickle_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    for name, write in (("pickle.tg", lambda f: pickle.dump(_Payload(str(marker)), f)),
                        ("torchsave.tg", lambda f: torch.save(_Payload(str(marker)), f))):
        path = tmp_path / name
        with open(path, "wb") as f:
            write(f)
        with pytest.raises(tilegraph.ArchiveError, match="pickle") as info:
            tilegraph.load(str(path))
        assert str(path) in str(info.value)
        assert not marker.exists(), "loading the file ran its code"


def test_export_is_not_pickle_and_load_continues_training_exactly(tmp_path):
    exe, model, path, (x, t) = _exported(tmp_path)
    with open(path, "rb") as f:
        assert f.read(8) == _archive.MAGIC
    loaded = tilegraph.load(path)
    # Same weights and optimizer state (momentum): the next steps agree bit for bit.
    out_a, loss_a = exe(x, t)
    out_b, loss_b = loaded(x, t)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(dict(loaded.model.named_parameters())[name], p, rtol=0,
                                   atol=0)
    # The loaded module's state_dict loads into the original class.
    fresh = MLP()
    fresh.load_state_dict(loaded.model.state_dict())
    torch.testing.assert_close(fresh.fc2.bias, model.fc2.bias, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="no Python code"):
        loaded.model(x, t)


def test_load_into_a_given_model_and_refuse_a_mismatched_one(tmp_path):
    exe, model, path, (x, t) = _exported(tmp_path, training=False)
    target = MLP()
    loaded = tilegraph.load(path, model=target)
    assert loaded.model is target
    torch.testing.assert_close(target.fc1.weight, model.fc1.weight, rtol=0, atol=0)
    torch.testing.assert_close(loaded(x, t)[0], exe(x, t)[0])
    with pytest.raises(ValueError, match="fc1.weight"):
        tilegraph.load(path, model=MLP(dh=16))


def test_a_directory_is_refused_naming_it(tmp_path):
    with pytest.raises(tilegraph.ArchiveError, match=f"{tmp_path}: cannot be read"):
        tilegraph.load(str(tmp_path))


def test_truncated_or_tampered_files_are_refused_naming_the_file(tmp_path):
    _, _, path, _ = _exported(tmp_path)
    data = open(path, "rb").read()
    cases = {"empty": b"", "header only": data[:10], "half": data[: len(data) // 2],
             "one byte short": data[:-1],
             "flipped byte": data[:100] + bytes([data[100] ^ 1]) + data[101:],
             "appended": data + b"x"}
    for label, content in cases.items():
        bad = tmp_path / f"bad-{label.replace(' ', '_')}.tg"
        bad.write_bytes(content)
        with pytest.raises(tilegraph.ArchiveError) as info:
            tilegraph.load(str(bad))
        message = str(info.value)
        assert str(bad) in message, (label, message)
        assert "truncated" in message or "checksum" in message, (label, message)


def _rewrite(path, out, edit):
    """A copy of an export with its header edited and a *valid* checksum (a crafted file)."""
    entry = _archive.read(path, "export")
    meta, texts, tensors = entry.meta, dict(entry.texts), dict(entry.tensors)
    edit(meta, texts, tensors)
    _archive.write(out, "export", meta, texts, tensors)
    return out


def _tree_with_context(context):
    """An output structure whose one dict node carries `context` (pytree protocol 1)."""
    node = {"type": "builtins.dict", "context": json.dumps(context),
            "children_spec": [{"type": None, "context": None, "children_spec": []}]}
    return json.dumps({"spec": json.dumps([1, node]), "leaves": [["tensor", 0]]})


@pytest.mark.parametrize("edit, match", [
    (lambda m, t, x: t.update(ir=t["ir"].replace("f32[4,20]", "f32[7,7905747460161236407]")),
     "int64"),
    (lambda m, t, x: t.update(ir=t["ir"][: len(t["ir"]) // 2]), "corrupt"),
    (lambda m, t, x: m["capture"]["output_meta"][0].__setitem__(1, "os.system"), "dtype"),
    (lambda m, t, x: m["optimizer"].update(cls="builtins.eval"), "optimizer"),
    (lambda m, t, x: m["capture"]["params"].update({"__class__.x": "fc1.weight"}), "corrupt"),
    (lambda m, t, x: m["options"].update(output_mode="anything"), "corrupt"),
    # Options are checked as their setters check them, not handed to the compiler.
    (lambda m, t, x: m["options"].update(device_iterations=0), "device_iterations must be >= 1"),
    (lambda m, t, x: m["options"].update(device_iterations=float("inf")), "expected an int"),
    (lambda m, t, x: m["options"].update(replication_factor=2 ** 40), "must be <="),
    (lambda m, t, x: m["options"].update(random_seed=2 ** 70), "random_seed must be <="),
    # What the header says about the outputs must agree with the graph (these failed at
    # the first call with an IndexError or a reshape error).
    (lambda m, t, x: m["capture"]["output_meta"].pop(), "output_meta describes"),
    (lambda m, t, x: m["capture"]["output_meta"][0].__setitem__(0, [3]), "output_meta: output"),
    (lambda m, t, x: m["capture"].update(input_mutations=[[7, 0]]), "input index 7"),
    (lambda m, t, x: m["capture"].update(input_mutations=[[0, 0]]), "size"),
    (lambda m, t, x: m["capture"].update(output_structure=_tree_with_context([[1, 2]])),
     "does not rebuild"),
    # Nesting deep enough to exhaust Python's recursion: an error, not a RecursionError.
    (lambda m, t, x: m["capture"].update(output_structure="[" * 100000 + "]" * 100000),
     "corrupt"),
])
def test_crafted_files_with_valid_checksums_give_clear_errors(tmp_path, edit, match):
    _, _, path, _ = _exported(tmp_path)
    bad = _rewrite(path, str(tmp_path / "crafted.tg"), edit)
    with pytest.raises(ValueError, match=match):
        tilegraph.load(bad)


@pytest.mark.parametrize("kind", ["enum", "defaultdict"])
def test_a_crafted_tree_structure_imports_nothing(tmp_path, monkeypatch, kind):
    """torch's treespec reader imports the module a context's {"__enum__": ..., "fqn":
    "module:attr"} names (then indexes the attribute: ctypes' cdll[name] is a dlopen) and a
    defaultdict's default_factory by name: a file with a valid checksum ran code at
    tilegraph.load. Trees from files are checked first; such a file is refused and the
    module is never imported."""
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\nX = {{}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, _, path, _ = _exported(tmp_path)
    if kind == "enum":
        structure = _tree_with_context([{"__enum__": True, "fqn": "planted:X", "name": "a"}])
    else:
        node = {"type": "collections.defaultdict",
                "context": json.dumps({"default_factory_module": "planted",
                                       "default_factory_name": "X", "dict_context": ["a"]}),
                "children_spec": [{"type": None, "context": None, "children_spec": []}]}
        structure = json.dumps({"spec": json.dumps([1, node]), "leaves": [["tensor", 0]]})
    bad = _rewrite(path, str(tmp_path / "crafted.tg"),
                   lambda m, t, x: m["capture"].update(output_structure=structure))
    with pytest.raises(ValueError, match="tree structure"):
        tilegraph.load(bad)
    assert not marker.exists()


def test_out_of_range_tensor_entries_are_refused(tmp_path):
    _, _, path, _ = _exported(tmp_path)
    data = bytearray(open(path, "rb").read())
    # Point a tensor past the payload, then fix up the checksum as a forger would.
    import hashlib
    import json
    import struct
    magic, version, n = struct.unpack_from("<8sIQ", data, 0)
    header = json.loads(bytes(data[20:20 + n]))
    header["tensors"][0]["offset"] = 1 << 40
    blob = json.dumps(header).encode()
    body = bytes(data[:12]) + struct.pack("<Q", len(blob)) + blob + bytes(data[20 + n:-32])
    bad = tmp_path / "offset.tg"
    bad.write_bytes(body + hashlib.sha256(body).digest())
    with pytest.raises(tilegraph.ArchiveError, match="does not fit"):
        tilegraph.load(str(bad))


# ---- the executable cache ------------------------------------------------------------------

def _cached_compile(cache_dir, model=None):
    torch.manual_seed(0)
    model = model or MLP()
    opts = tilegraph.Options().enableExecutableCaching(str(cache_dir))
    exe = tilegraph.inferenceModel(model.eval(), opts)
    x, t = batches("mlp", 1, 4, torch.Generator().manual_seed(0))
    return exe, exe(x, t)[0]


def test_a_planted_symlink_is_never_followed(tmp_path):
    learn = tmp_path / "learn"
    _cached_compile(learn)
    (entry,) = learn.glob("*.tgcache")
    key = entry.name.split(".")[0]
    cache = tmp_path / "cache"
    cache.mkdir()
    victims = []
    for name in (entry.name, f".{key}.{os.getpid()}.tmp", f".{key}.tmp"):
        victim = tmp_path / f"victim{len(victims)}"
        victim.write_text("precious")
        os.symlink(victim, cache / name)
        victims.append(victim)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        exe, out = _cached_compile(cache)
    assert all(v.read_text() == "precious" for v in victims)
    assert not os.path.islink(cache / entry.name)  # replaced by a real entry
    assert not exe.loaded_from_cache
    exe2, out2 = _cached_compile(cache)
    assert exe2.loaded_from_cache
    torch.testing.assert_close(out2, out)


def test_a_corrupt_or_foreign_entry_is_reported_discarded_and_recompiled(tmp_path):
    exe, out = _cached_compile(tmp_path)
    (entry,) = tmp_path.glob("*.tgcache")
    for damage in (lambda: entry.write_bytes(entry.read_bytes()[:-10]),
                   lambda: entry.write_bytes(b"garbage")):
        damage()
        with pytest.warns(UserWarning, match="discarding executable-cache entry .*" + entry.name):
            exe2, out2 = _cached_compile(tmp_path)
        assert not exe2.loaded_from_cache
        torch.testing.assert_close(out2, out)
        _archive.read(str(entry), "cache")  # rewritten, valid
    # An entry of another model planted under this model's key.
    other = tmp_path / "other"
    _cached_compile(other, MLP(dh=8))
    (foreign,) = other.glob("*.tgcache")
    entry.write_bytes(foreign.read_bytes())
    with pytest.warns(UserWarning, match="belongs to a different model"):
        exe3, out3 = _cached_compile(tmp_path)
    assert not exe3.loaded_from_cache
    torch.testing.assert_close(out3, out)


def test_an_entry_or_directory_another_user_could_write_is_not_trusted(tmp_path):
    """The checksum catches damage, not intent: an entry is the program the next process
    runs, so one another user could have written (or rewritten, checksum and all) is ignored,
    and a directory others may write to (not sticky) turns the cache off."""
    cache = tmp_path / "cache"
    exe, out = _cached_compile(cache)
    (entry,) = cache.glob("*.tgcache")
    assert entry.stat().st_mode & 0o777 == 0o600
    assert _cached_compile(cache)[0].loaded_from_cache
    untrusting = [lambda: os.chmod(entry, 0o666)]
    if os.geteuid() == 0:  # only root can hand a file to another user
        untrusting.append(lambda: os.chown(entry, 54321, os.getegid()))
    for make_untrusted in untrusting:
        make_untrusted()
        with pytest.warns(UserWarning, match="entry .* ignored: (writable by other|owned by)"):
            exe2, out2 = _cached_compile(cache)
        assert not exe2.loaded_from_cache
        torch.testing.assert_close(out2, out)
        os.chmod(entry, 0o600)
        if os.geteuid() == 0:
            os.chown(entry, os.geteuid(), os.getegid())
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.warns(UserWarning, match="disabled: writable by other users"):
        exe3, _ = _cached_compile(open_dir)
    assert not exe3.loaded_from_cache and not list(open_dir.glob("*.tgcache"))
    os.chmod(open_dir, 0o1777)  # sticky, as /tmp: others cannot replace this user's entries
    _cached_compile(open_dir)
    assert _cached_compile(open_dir)[0].loaded_from_cache


def test_unusable_cache_paths_degrade_to_no_cache_with_a_warning(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    # A file, a path under a file, and a directory nobody can write to, root included.
    for path in (a_file, a_file / "sub", "/proc/self"):
        with pytest.warns(UserWarning, match="executable cache .* disabled"):
            exe, out = _cached_compile(path)
        assert out.shape == (4, 5)
    assert a_file.read_text() == "not a directory"
