"""The IPU Model's HTML report (python/tilegraph/ipu_report.py), drawn in a real headless browser.

Synthetic reports following the "tilegraph-ipu-report" schema are written to HTML, loaded in
Debian's chromium-headless-shell (--dump-dom: the DOM after the page's script has run), and
the drawn DOM is parsed with html.parser and compared with the report: summary values, one
bar per tile carrying its bytes, the overflow rows, text from the report shown as text and
never run as markup, and a BERT-Large-sized trace (20,000 compute sets) drawn quickly.

The module is loaded by path, so neither tilegraph's compiled core nor torch is needed (but
for the last test, which draws the report of a model compiled for the IPU Model).
Without the browser the test skips, naming the package, except under CI (CI set), where it
fails: the browser is part of scripts/setup.sh.
"""
import html.parser
import importlib.util
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ipu_report_under_test",
                                               REPO / "python" / "tilegraph" / "ipu_report.py")
ipu_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ipu_report)

BROWSER_PACKAGE = "chromium-headless-shell"
BROWSER_TIMEOUT_S = 120
CATEGORIES = ["variables", "activations", "exchange", "vertex_state", "code"]
OPS = ["matmul", "add", "gelu", "softmax", "layer_norm", "reduce_sum"]
GC200 = {"name": "GC200", "tiles_per_ipu": 1472, "bytes_per_tile": 638976, "clock_hz": 1.33e9,
         "workers_per_tile": 6}
GC2 = {"name": "GC2", "tiles_per_ipu": 1216, "bytes_per_tile": 262144, "clock_hz": 1.6e9,
       "workers_per_tile": 6}
TITLE = "untouched title"
# Strings that would run script or make elements if the report put them into markup.
HOSTILE_NAMES = [
    """<img src=x onerror="document.title='pwned'">""",
    "</script><script>document.title='pwned'</script>",
    "%7 = add(%5, %6) & <b>bold</b> \"double\" 'single' <!-- comment",
    "<svg onload=\"document.title='pwned'\"></svg>\u2028\u00b5",
]


# ---- synthetic reports ----------------------------------------------------------------------

def make_report(target, num_ipus=1, num_compute_sets=60, overflow_tiles=(), names=None,
                samples_per_second=10752.0, seed=0):
    """A self-consistent report: the per-IPU summary, overflows and totals follow from the
    per-tile arrays; compute sets run back to back in one lane per IPU (step i on IPU
    i % num_ipus); overflow_tiles (per IPU) get more memory than a tile holds."""
    rng = random.Random(seed)
    tiles, capacity = target["tiles_per_ipu"], target["bytes_per_tile"]
    names = names or []
    tile_memory, ipus, overflows = [], [], []
    for ipu in range(num_ipus):
        categories = {c: [rng.randrange(capacity // 10) for _ in range(tiles)] for c in CATEGORIES}
        for k, tile in enumerate(overflow_tiles):
            categories["activations"][tile] = capacity + 1000 * k
        total = [sum(categories[c][t] for c in CATEGORIES) for t in range(tiles)]
        tile_memory.append({"ipu": ipu, "categories": categories, "total": total})
        over = [t for t in range(tiles) if total[t] > capacity]
        overflows += [{"ipu": ipu, "tile": t, "bytes": total[t], "over_by": total[t] - capacity}
                      for t in over]
        max_tile = max(range(tiles), key=total.__getitem__)
        ipus.append({"ipu": ipu, "max_tile_bytes": total[max_tile], "max_tile": max_tile,
                     "total_bytes": sum(total), "overflowing_tiles": len(over), "cycles": 0})
    overflows.sort(key=lambda o: (-o["over_by"], o["ipu"], o["tile"]))

    compute_sets, liveness = [], []
    lane_end = [0] * num_ipus
    for step in range(num_compute_sets):
        ipu = step % num_ipus
        op = OPS[step % len(OPS)]
        name = names[step % len(names)] if names else f"%{step + 2} = {op}(%{step + 1})"
        cs = {"step": step, "ipu": ipu, "name": name, "op": op,
              "source": f"model.py:{10 + step % 50}", "start_cycle": lane_end[ipu],
              "sync_cycles": rng.randrange(50, 200), "exchange_cycles": rng.randrange(100, 2000),
              "compute_cycles": rng.randrange(200, 20000), "tiles_used": rng.randrange(1, tiles + 1)}
        compute_sets.append(cs)
        lane_end[ipu] += cs["sync_cycles"] + cs["exchange_cycles"] + cs["compute_cycles"]
        liveness.append({"step": step, "ipu": ipu, "label": name,
                         "live_bytes": rng.randrange(10**6, 10**8),
                         "max_tile_bytes": rng.randrange(capacity // 4, capacity)})
    for ipu in ipus:
        ipu["cycles"] = lane_end[ipu["ipu"]]
    total_cycles = max(lane_end)
    largest = [{"name": names[i % len(names)] if names else f"%w{i}", "source": f"model.py:{i + 1}",
                "kind": "variable" if i % 2 else "activation", "bytes_on_tile": 50000 - 1000 * i,
                "tile": 5 + i, "ipu": i % num_ipus} for i in range(8)]
    return {
        "format": "tilegraph-ipu-report", "version": 1, "estimate": True,
        "target": dict(target), "num_ipus": num_ipus, "fits": not overflows,
        "total_cycles": total_cycles, "seconds_per_step": total_cycles / target["clock_hz"],
        "samples_per_second": samples_per_second, "ipus": ipus, "tile_memory": tile_memory,
        "liveness": liveness, "compute_sets": compute_sets, "overflows": overflows,
        "largest": largest,
    }


def fitting_report():
    return make_report(GC200, num_ipus=1)


def overflowing_report():
    return make_report(GC2, num_ipus=2, overflow_tiles=(5, 700, 1215), names=HOSTILE_NAMES,
                       samples_per_second=None, seed=1)


# ---- the browser and the DOM it dumps -------------------------------------------------------

class Node:
    def __init__(self, tag, attrs):
        self.tag, self.attrs, self.children = tag, attrs, []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag=None, cls=None):
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.classes)]

    def by_id(self, element_id):
        found = [n for n in self.iter() if n.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id {element_id!r}"
        return found[0]


class DomBuilder(html.parser.HTMLParser):
    """A tree of Nodes from serialized HTML (as Chromium writes it: every non-void element,
    SVG ones included, has an end tag)."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_dom(text):
    builder = DomBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def find_browser():
    for candidate in (os.environ.get("TILEGRAPH_CHROMIUM"), shutil.which(BROWSER_PACKAGE),
                      f"/usr/bin/{BROWSER_PACKAGE}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    path = find_browser()
    if path is None:
        message = (f"{BROWSER_PACKAGE} is not installed (apt-get install {BROWSER_PACKAGE}; "
                   "scripts/setup.sh installs it)")
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the IPU report browser test, not skip it",
                        pytrace=False)
        pytest.skip(message)
    return path


def dump_dom(browser, page, profile_dir):
    """The page's DOM after its script ran (and 2 s of virtual time for anything async, such as
    an injected image's onerror), and the wall-clock seconds the browser took."""
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={profile_dir}", "--virtual-time-budget=2000",
               "--dump-dom", pathlib.Path(page).resolve().as_uri()]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the browser and the helpers it started
        process.communicate()
        pytest.fail(f"{browser} did not finish within {BROWSER_TIMEOUT_S} s on {page}")
    seconds = time.monotonic() - start
    assert process.returncode == 0, f"{browser} exited with {process.returncode}:\n{err[-3000:]}"
    assert "<body" in out, f"no DOM dumped:\n{err[-3000:]}"
    return parse_dom(out), seconds


def render(browser, report, tmp_path, name="report"):
    page = ipu_report.write_html(report, tmp_path / f"{name}.html")
    assert page == str(tmp_path / f"{name}.html")
    dom, seconds = dump_dom(browser, page, tmp_path / f"{name}-profile")
    body = dom.find_all("body")[0]
    errors = [n.text() for n in dom.find_all(cls="banner") if n.attrs.get("id") == "render-error"]
    assert body.attrs.get("data-rendered") == "ok", f"page did not draw: {errors}"
    stray = [text for node in body.iter() if node.tag != "script" for text in node.children
             if isinstance(text, str) and text.strip() in ("null", "undefined", "NaN")]
    assert not stray, f"stray text in the page: {stray}"
    return dom, seconds


def data_value(dom, element_id):
    return json.loads(dom.by_id(element_id).attrs["data-value"])


# ---- checks shared by the reports -----------------------------------------------------------

def check_summary(dom, report):
    assert dom.by_id("target-name").attrs["data-value"] == report["target"]["name"]
    assert data_value(dom, "num-ipus") == report["num_ipus"]
    assert data_value(dom, "fits") is report["fits"]
    assert data_value(dom, "total-cycles") == report["total_cycles"]
    assert data_value(dom, "seconds-per-step") == report["seconds_per_step"]
    assert data_value(dom, "samples-per-second") == report["samples_per_second"]
    assert "estimate" in dom.by_id("estimate-note").text()
    for ipu in report["ipus"]:
        n = ipu["ipu"]
        assert data_value(dom, f"max-tile-bytes-ipu{n}") == ipu["max_tile_bytes"]
        assert data_value(dom, f"max-tile-ipu{n}") == ipu["max_tile"]
        assert data_value(dom, f"total-bytes-ipu{n}") == ipu["total_bytes"]
        assert data_value(dom, f"overflowing-tiles-ipu{n}") == ipu["overflowing_tiles"]
        assert data_value(dom, f"cycles-ipu{n}") == ipu["cycles"]
    # Readable text beside the exact values: thousands separators, binary units.
    assert dom.by_id("total-cycles").text() == f"{report['total_cycles']:,}"
    assert dom.by_id("max-tile-bytes-ipu0").text().split()[1] in ("KiB", "MiB")


def check_tile_bars(dom, report):
    capacity = report["target"]["bytes_per_tile"]
    for memory, ipu in zip(report["tile_memory"], report["ipus"]):
        n = memory["ipu"]
        bars = [b for b in dom.find_all("rect", cls="tile") if b.attrs["data-ipu"] == str(n)]
        assert len(bars) == report["target"]["tiles_per_ipu"]
        assert [int(b.attrs["data-tile"]) for b in bars] == list(range(len(bars)))
        assert [int(b.attrs["data-total"]) for b in bars] == memory["total"]
        fullest = bars[ipu["max_tile"]]
        assert int(fullest.attrs["data-total"]) == ipu["max_tile_bytes"]
        for category in CATEGORIES:
            attr = "data-" + category.replace("_", "-")
            assert int(fullest.attrs[attr]) == memory["categories"][category][ipu["max_tile"]]
        over = [int(b.attrs["data-tile"]) for b in bars if "over" in b.classes]
        assert over == [t for t, total in enumerate(memory["total"]) if total > capacity]


def check_liveness(dom, report):
    lines = dom.find_all("polyline", cls="liveness-line")
    assert len(lines) == 2 * report["num_ipus"]
    for line in lines:
        ipu, series = int(line.attrs["data-ipu"]), line.attrs["data-series"]
        values = [e[series] for e in report["liveness"] if e["ipu"] == ipu]
        points = line.attrs["points"].split()
        assert len(points) == int(line.attrs["data-points"]) <= 2000
        assert len(points) == min(len(values), 2000) or len(values) > 2000
        assert int(line.attrs["data-max"]) == max(values)


def check_top_compute_sets(dom, report):
    cycles = lambda cs: cs["sync_cycles"] + cs["exchange_cycles"] + cs["compute_cycles"]
    expected = sorted(report["compute_sets"], key=lambda cs: -cycles(cs))[:25]
    rows = dom.by_id("top-compute-sets").find_all("tr", cls="top-cs-row")
    assert len(rows) == len(expected)
    for row, cs in zip(rows, expected):
        cells = {td.attrs["data-key"]: td for td in row.find_all("td")}
        assert cells["name"].text() == cs["name"]
        assert cells["source"].text() == cs["source"]
        assert int(cells["total_cycles"].attrs["data-value"]) == cycles(cs)
        assert int(cells["compute_cycles"].attrs["data-value"]) == cs["compute_cycles"]


# ---- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [fitting_report, overflowing_report])
def test_embedded_json_round_trips(make):
    report = make()
    page = ipu_report.render_html(report)
    dom = parse_dom(page)
    data = dom.by_id("report-data")
    assert data.tag == "script" and data.attrs["type"] == "application/json"
    assert json.loads(data.text()) == report
    # Hostile names stay inside the JSON: the page has exactly its own two scripts, and
    # nothing loads from anywhere (self-contained).
    assert page.count("</script") == 2 and len(dom.find_all("script")) == 2
    assert not [n for n in dom.iter() if "src" in n.attrs or "href" in n.attrs]
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_non_finite_numbers_become_null():
    report = fitting_report()
    report["samples_per_second"] = float("inf")
    report["seconds_per_step"] = float("nan")
    data = json.loads(parse_dom(ipu_report.render_html(report)).by_id("report-data").text())
    assert data["samples_per_second"] is None and data["seconds_per_step"] is None


def test_fitting_report_in_browser(browser, tmp_path):
    report = fitting_report()
    dom, _ = render(browser, report, tmp_path)
    check_summary(dom, report)
    assert dom.by_id("fits").text() == "yes"
    assert not [n for n in dom.iter() if n.attrs.get("id") == "does-not-fit-banner"]
    check_tile_bars(dom, report)
    check_liveness(dom, report)
    check_top_compute_sets(dom, report)
    # Few compute sets: one trace bar each, phases drawn in all three colours.
    assert len(dom.find_all("rect", cls="cs-bar")) == len(report["compute_sets"])
    assert {p.attrs["data-phase"] for p in dom.find_all("path", cls="phase")} == {
        "sync", "exchange", "compute"}
    assert not dom.find_all("tr", cls="overflow-row")
    assert "No tile exceeds" in dom.by_id("overflows").text()
    largest = dom.find_all("tr", cls="largest-row")
    assert [r.find_all("td")[2].text() for r in largest] == [x["source"] for x in report["largest"]]


def test_overflowing_report_with_hostile_names_in_browser(browser, tmp_path):
    report = overflowing_report()
    assert not report["fits"] and len(report["overflows"]) == 6
    dom, _ = render(browser, report, tmp_path)
    check_summary(dom, report)
    assert dom.by_id("samples-per-second").text() == "n/a"
    assert "Does not fit" in dom.by_id("does-not-fit-banner").text()
    check_tile_bars(dom, report)
    check_liveness(dom, report)
    check_top_compute_sets(dom, report)

    rows = dom.find_all("tr", cls="overflow-row")
    shown = [(int(r.attrs["data-ipu"]), int(r.attrs["data-tile"]),
              *(int(td.attrs["data-value"]) for td in r.find_all("td") if td.attrs["data-key"]
                in ("bytes", "over_by"))) for r in rows]
    assert shown == [(o["ipu"], o["tile"], o["bytes"], o["over_by"]) for o in report["overflows"]]

    # The hostile names are shown as text, and none of them ran or made an element.
    title = dom.find_all("title")[0].text()
    assert title == "tilegraph IPU report: GC2" and "pwned" not in title
    body = dom.find_all("body")[0]
    assert not body.find_all("img") and not body.find_all("b")[1:]  # the note's own <b> only
    assert [s.tag for s in dom.find_all("script")] == ["script", "script"]
    names = [r.find_all("td")[0].text() for r in dom.find_all("tr", cls="largest-row")]
    assert names == [x["name"] for x in report["largest"]]
    assert set(HOSTILE_NAMES) <= set(names)


def test_browser_harness_would_see_an_injection(browser, tmp_path):
    """Control: a page that does put a hostile name into markup gets its title changed, so
    the checks above would catch the report doing the same."""
    page = tmp_path / "unsafe.html"
    page.write_text(f"<!DOCTYPE html><title>{TITLE}</title><body><div id=x></div><script>"
                    f"document.getElementById('x').innerHTML = {json.dumps(HOSTILE_NAMES[0])};"
                    "</script></body>")
    dom, _ = dump_dom(browser, page, tmp_path / "profile")
    assert dom.find_all("title")[0].text() == "pwned"
    assert dom.find_all("img")


def test_long_trace_renders_quickly(browser, tmp_path):
    """A BERT-Large-sized training step: 20,000 compute sets and liveness steps."""
    report = make_report(GC200, num_ipus=1, num_compute_sets=20000, seed=2)
    dom, seconds = render(browser, report, tmp_path)
    render_ms = int(dom.find_all("body")[0].attrs["data-render-ms"])
    print(f"20,000 compute sets: drawn in {render_ms} ms, browser ran {seconds:.1f} s")
    assert render_ms < 5000 and seconds < 60
    check_summary(dom, report)
    check_tile_bars(dom, report)
    check_liveness(dom, report)
    check_top_compute_sets(dom, report)
    bars = dom.find_all("rect", cls="cs-bar")
    assert len(bars) == 2000  # merged 10 at a time
    assert sum(int(b.attrs["data-count"]) for b in bars) == 20000
    assert int(bars[-1].attrs["data-start"]) + int(bars[-1].attrs["data-cycles"]) == report["total_cycles"]
    # Merged bars keep the cycle total: each bar spans the compute sets it stands for.
    assert sum(int(b.attrs["data-cycles"]) for b in bars) == report["total_cycles"]
    ops = {r.find_all("td")[0].text(): int(r.find_all("td")[1].attrs["data-value"])
           for r in dom.find_all("tr", cls="op-row")}
    assert ops == {op: 20000 // len(OPS) + (i < 20000 % len(OPS)) for i, op in enumerate(OPS)}


def test_many_tiles_are_grouped_into_bars(browser, tmp_path):
    """More tiles than bars fit (a hypothetical 4,000-tile IPU): each bar stands for a group
    of tiles and shows the fullest of them, so the fullest tile of the IPU is still drawn."""
    big_ipu = dict(GC200, name="big", tiles_per_ipu=4000)
    report = make_report(big_ipu, num_ipus=1, num_compute_sets=10, overflow_tiles=(3001,), seed=3)
    dom, _ = render(browser, report, tmp_path)
    check_summary(dom, report)
    bars = dom.find_all("rect", cls="tile")
    assert len(bars) == 1334  # groups of 3 tiles
    totals = report["tile_memory"][0]["total"]
    for bar in bars:
        first, last = int(bar.attrs["data-first-tile"]), int(bar.attrs["data-last-tile"])
        assert int(bar.attrs["data-total"]) == max(totals[first:last + 1])
    fullest = [b for b in bars if int(b.attrs["data-tile"]) == report["ipus"][0]["max_tile"]]
    assert int(fullest[0].attrs["data-total"]) == report["ipus"][0]["max_tile_bytes"]
    assert [int(b.attrs["data-tile"]) for b in bars if "over" in b.classes] == [3001]


# ---- a real report from the compiler ----------------------------------------------------------
def test_a_compiled_models_report_in_browser(browser, tmp_path):
    """The report of a model compiled for the IPU Model (not synthetic): drawn with the
    same numbers, one bar per tile, the user's source lines in the tables."""
    import torch
    import tilegraph

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(),
                                torch.nn.Linear(512, 10))
    executor = tilegraph.inferenceModel(model, tilegraph.Options().useIpuModel(True))
    executor(torch.randn(16, 256))
    report = executor.ipuModelReport()
    path = executor.writeIpuModelReport(tmp_path / "real.html")
    assert json.loads((tmp_path / "real.json").read_text()) == report
    dom, _ = dump_dom(browser, path, tmp_path / "profile")
    assert dom.find_all("body")[0].attrs.get("data-rendered") == "ok"
    check_summary(dom, report)
    check_tile_bars(dom, report)
    check_liveness(dom, report)
    check_top_compute_sets(dom, report)
    assert dom.by_id("fits").text() == "yes"
    assert report["target"]["name"] == "GC200" and len(report["tile_memory"][0]["total"]) == 1472
