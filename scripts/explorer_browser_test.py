#!/usr/bin/env python3
"""Drive an explorer page (`thoughtscope explore`) in Debian's headless Chromium through
chromium-driver and Selenium, offline from a file:// URL, and check what it shows against the
JSON embedded in the page (and the `<page>.json` written beside it by `--json`, when present).

    python scripts/explorer_browser_test.py trace.html [--screenshot out.png] [--measure]

Checks: a click on a sentence selects it; the sentences listed as attended to / attending to it,
its suppression row and column and its numbers (resampling included) equal the top values
recomputed here from the JSON; a click on a heatmap cell highlights both sentences and shows the
cell's value; with a token view, the token grids of the sentence and its top sources, and of a
clicked cell that is such a pair, show the JSON's sources, block means, tokens and every value;
every missing part is listed with its command; nothing is fetched from the network.
`--measure` prints the file size, the first contentful paint, the script's start-up time and the
per-click latency (click to the next painted frame) over many clicks.

Exit status: 0 passed, 1 a check failed, 3 Chromium, chromium-driver or Selenium is missing
(install: `apt-get install -y chromium chromium-driver`, selenium from scripts/python-env.sh).
Deps: selenium (PyPI); everything else is the standard library.
"""

import argparse
import json
import math
import os
import pathlib
import shutil
import statistics
import sys

TOP = 5
# Selenium must not look for drivers or browsers on the network.
os.environ.setdefault("SE_OFFLINE", "true")
MISSING_DEPS = 3


def find_binary(env, *names):
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def start_browser(width, height):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        print(f"selenium missing ({error}): pip install selenium (pinned in scripts/python-env.sh)", file=sys.stderr)
        sys.exit(MISSING_DEPS)
    chromium = find_binary("CHROMIUM", "chromium", "chromium-browser")
    driver_path = find_binary("CHROMEDRIVER", "chromedriver")
    if not chromium or not driver_path or not os.path.exists(chromium) or not os.path.exists(driver_path):
        print("chromium or chromedriver missing: apt-get install -y chromium chromium-driver", file=sys.stderr)
        sys.exit(MISSING_DEPS)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--hide-scrollbars",
                 # Offline: any host name fails to resolve.
                 "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def lower(matrix, row, col):
    return matrix["lower"][row * (row + 1) // 2 + col]


def top_of_row(matrix, i):
    items = [(j, lower(matrix, i, j)) for j in range(i) if lower(matrix, i, j) is not None]
    return sorted(items, key=lambda item: (-item[1], item[0]))[:TOP]


def top_of_column(matrix, i, n):
    items = [(r, lower(matrix, r, i)) for r in range(i + 1, n) if lower(matrix, r, i) is not None]
    return sorted(items, key=lambda item: (-item[1], item[0]))[:TOP]


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def equal(self, what, got, expected):
        if got == expected:
            self.passed += 1
        else:
            self.failures.append(f"{what}: page shows {got!r}, JSON gives {expected!r}")


def number(text):
    """A `data-v` attribute back to a JSON value (`null`/`undefined`/`NaN` → None)."""
    if text in ("null", "undefined", "NaN", None):
        return None
    return float(text)


def wait_ready(driver):
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "var r = document.querySelector('.ts-explorer'); return r && r.dataset.ready === '1';"))


COLD, WHITE = (40, 100, 180), (255, 255, 255)


def code_colour(code):
    """The page's colour of a token-view code: white to blue, rounded as JavaScript's Math.round."""
    t = code / 1000
    return [math.floor(w + (c - w) * t + 0.5) for w, c in zip(WHITE, COLD)]


def check_token_grids(driver, box, data, i, j, check, where):
    """The token grids in `box` for sentence `i` (and source `j`, or each head's top source)
    against the JSON's token view: which grids, their captions' numbers, the row and column
    tokens, the colour of every cell (its code) and the value the pointer reads on a few cells."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    view = data["token_view"]
    expected = [h for h in view["heads"] if h["sources"][i] is not None and (j is None or h["sources"][i] == j)]
    grids = box.find_elements(By.CSS_SELECTOR, ".ts-tok")
    check.equal(f"{where}: token grids", [g.get_attribute("data-head") for g in grids], [f"{h['head'][0]}.{h['head'][1]}" for h in expected])
    for grid, head in zip(grids, expected):
        name = f"{where}: head {grid.get_attribute('data-head')}"
        source = head["sources"][i]
        check.equal(f"{name} sentence", grid.get_attribute("data-i"), str(i))
        check.equal(f"{name} top source", grid.get_attribute("data-j"), str(source))
        check.equal(f"{name} block mean", number(grid.get_attribute("data-mean")), head["means"][i])
        check.equal(f"{name} largest value", number(grid.get_attribute("data-scale")), head["scales"][i])
        rows, cols = min(view["max_tokens"], view["lengths"][i]), min(view["max_tokens"], view["lengths"][source])
        check.equal(f"{name} rows x columns", (grid.get_attribute("data-rows"), grid.get_attribute("data-cols")), (str(rows), str(cols)))
        keys = [json.loads(e.get_attribute("title")) for e in grid.find_elements(By.CSS_SELECTOR, ".ts-tokk")]
        queries = [json.loads(e.get_attribute("title")) for e in grid.find_elements(By.CSS_SELECTOR, ".ts-tokq")]
        check.equal(f"{name} key tokens", keys, view["tokens"][source][:cols])
        check.equal(f"{name} query tokens", queries, view["tokens"][i][:rows])
        codes, scale = head["values"][i], head["scales"][i]
        check.equal(f"{name} codes", len(codes), rows * cols)
        if codes and scale > 0:
            check.equal(f"{name} largest value has code 1000", max(codes), 1000)
        canvas = grid.find_element(By.CSS_SELECTOR, "canvas.ts-tokcells")
        colours = driver.execute_script(
            "var c = arguments[0], rows = arguments[1], cols = arguments[2], ctx = c.getContext('2d'), out = [];"
            "for (var k = 0; k < rows * cols; k++) { var p = ctx.getImageData((k % cols) * 13 + 6, Math.floor(k / cols) * 13 + 6, 1, 1).data;"
            " out.push([p[0], p[1], p[2]]); } return out;", canvas, rows, cols)
        check.equal(f"{name} cell colours (codes)", colours, [code_colour(code) for code in codes])
        # The pointer on the largest cell, the first and the last: the value read out is code / 1000 x largest.
        hover = grid.find_element(By.CSS_SELECTOR, ".ts-tokhover")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
        width, height = canvas.size["width"], canvas.size["height"]
        for k in sorted({codes.index(max(codes)), 0, rows * cols - 1}):
            r, c = divmod(k, cols)
            ActionChains(driver).move_to_element_with_offset(canvas, int(c * 13 + 6 - width / 2), int(r * 13 + 6 - height / 2)).perform()
            check.equal(f"{name} cell ({r}, {c}) under the pointer", (hover.get_attribute("data-r"), hover.get_attribute("data-c")), (str(r), str(c)))
            check.equal(f"{name} cell ({r}, {c}) value read out", number(hover.get_attribute("data-v")), codes[k] / 1000 * scale)
            check.equal(f"{name} cell ({r}, {c}) tokens read out",
                        hover.text.startswith(json.dumps(view["tokens"][i][r], ensure_ascii=False)), True)


def click_cell(driver, root, n, row, col):
    """A real pointer click on heatmap cell (row, col); returns the cell under the pixel clicked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    canvas = root.find_element(By.CSS_SELECTOR, "canvas.ts-heat")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    left, top, width, height = driver.execute_script(
        "var b = arguments[0].getBoundingClientRect(); return [b.left, b.top, b.width, b.height];", canvas)
    # The pointer moves to whole viewport pixels: aim at the middle of the cell, then expect the
    # cell under the pixel actually clicked.
    x = int(left + (col + 0.5) / n * width)
    y = int(top + (row + 0.5) / n * height)
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(x, y).click()
    actions.perform()
    return min(n - 1, int((y - top) / height * n)), min(n - 1, int((x - left) / width * n))


def check_page(driver, data, check):
    from selenium.webdriver.common.by import By

    n = len(data["sentences"])
    root = driver.find_element(By.CSS_SELECTOR, ".ts-explorer")
    spans = root.find_elements(By.CSS_SELECTOR, ".ts-text .ts-s")
    check.equal("sentence count", len(spans), n)
    check.equal("sentence 0 text", spans[0].text.strip(), data["sentences"][0].strip())

    # Missing parts are listed with their commands.
    shown = {li.get_attribute("data-part"): li.text for li in root.find_elements(By.CSS_SELECTOR, ".ts-missing .ts-miss")}
    for item in data["missing"]:
        text = shown.get(item["part"], "")
        check.equal(f"missing {item['part']} listed with its command", "missing: " in text and item["command"] in text, True)

    # Click a sentence with earlier and later ones around it.
    i = max(1, min(n - 2, (2 * n) // 3))
    spans[i].click()
    panel = root.find_element(By.CSS_SELECTOR, ".ts-panel")
    check.equal("selected sentence", panel.get_attribute("data-i"), str(i))
    check.equal("selected sentence is highlighted", "ts-sel" in spans[i].get_attribute("class"), True)
    matrices = {m["key"]: m for m in data["matrices"]}
    current = data["matrices"][0] if data["matrices"] else None

    def listed(name):
        items = panel.find_elements(By.CSS_SELECTOR, f'.ts-item[data-list="{name}"]')
        return [(int(li.get_attribute("data-i")), number(li.get_attribute("data-v"))) for li in items]

    def shown_value(name):
        return [float(v.text) for v in panel.find_elements(By.CSS_SELECTOR, f'.ts-item[data-list="{name}"] .ts-val')]

    if current is not None and current["kind"] == "attention":
        row, col = top_of_row(current, i), top_of_column(current, i, n)
        check.equal("attends-to list", listed("attends-to"), row)
        check.equal("attended-by list", listed("attended-by"), col)
        for (j, value), text in zip(row, shown_value("attends-to")):
            check.equal(f"attends-to #{j} shown to 4 digits", abs(text - value) <= 1e-3 * max(abs(value), 1e-12), True)
        for j, _ in row:
            check.equal(f"sentence {j} marked as attended", "ts-src" in spans[j].get_attribute("class"), True)
        for j, _ in col:
            check.equal(f"sentence {j} marked as attending", "ts-dst" in spans[j].get_attribute("class"), True)
    if "suppression" in matrices:
        check.equal("suppression row", listed("supp-row"), top_of_row(matrices["suppression"], i))
        check.equal("suppression column", listed("supp-col"), top_of_column(matrices["suppression"], i, n))
    if "step_importance" in matrices:
        check.equal("step importance row", listed("step-row"), top_of_row(matrices["step_importance"], i))
    if data.get("token_view"):
        check_token_grids(driver, panel, data, i, None, check, f"sentence {i}")
    rows = {tr.get_attribute("data-key"): number(tr.get_attribute("data-v")) for tr in panel.find_elements(By.CSS_SELECTOR, "tr.ts-num")}
    for metric in data["metrics"]:
        check.equal(f"number {metric['key']} of sentence {i}", rows.get(metric["key"], "absent"), metric["values"][i])

    # Click a heatmap cell below the diagonal: both sentences are highlighted, the value shown.
    if current is not None:
        r, c = click_cell(driver, root, n, n - 1, max(0, n // 3))
        cell = root.find_element(By.CSS_SELECTOR, ".ts-cell")
        check.equal("cell row", cell.get_attribute("data-row"), str(r))
        check.equal("cell column", cell.get_attribute("data-col"), str(c))
        check.equal("cell value", number(cell.get_attribute("data-v")), lower(current, r, c))
        check.equal("cell row sentence highlighted", "ts-from" in spans[r].get_attribute("class"), True)
        check.equal("cell column sentence highlighted", "ts-to" in spans[c].get_attribute("class"), True)
        others = {li.get_attribute("data-key"): number(li.get_attribute("data-v")) for li in cell.find_elements(By.CSS_SELECTOR, ".ts-other")}
        for key, matrix in matrices.items():
            if key != current["key"]:
                check.equal(f"cell value in {key}", others.get(key, "absent"), lower(matrix, r, c))
        if data.get("token_view") and r > c:
            check_token_grids(driver, cell, data, r, c, check, f"cell ({r}, {c})")
        # A cell that is a token-view pair: sentence i and the first head's top source.
        view = data.get("token_view")
        if view and view["heads"] and view["heads"][0]["sources"][i] is not None:
            r, c = click_cell(driver, root, n, i, view["heads"][0]["sources"][i])
            cell = root.find_element(By.CSS_SELECTOR, ".ts-cell")
            check.equal("token-view cell clicked", (cell.get_attribute("data-row"), cell.get_attribute("data-col")), (str(r), str(c)))
            if r > c:
                check_token_grids(driver, cell, data, r, c, check, f"cell ({r}, {c})")
                check.equal(f"cell ({r}, {c}) shows a token grid", len(cell.find_elements(By.CSS_SELECTOR, ".ts-tok")) > 0,
                            any(h["sources"][r] == c for h in view["heads"]))

    # Colouring by another metric recolours the sentences.
    from selenium.webdriver.support.ui import Select
    select = Select(root.find_element(By.CSS_SELECTOR, "select.ts-metric"))
    for index, metric in enumerate(data["metrics"]):
        select.select_by_value(f"m{index}")
        finite = [k for k, v in enumerate(metric["values"]) if v is not None]
        if finite:
            k = max(finite, key=lambda k: metric["values"][k])
            check.equal(f"sentence {k} coloured by {metric['key']}", spans[k].value_of_css_property("background-color") not in ("", "rgba(0, 0, 0, 0)"), True)

    # Nothing came from the network.
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; });")
    check.equal("network requests", [u for u in resources if not u.startswith(("file:", "data:", "blob:"))], [])
    return i


def check_isolation(driver, count, check):
    """Several explorers on one page (a notebook): each starts, and a click in the last one
    selects there only."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('.ts-explorer')).every(function (r) { return r.dataset.ready === '1'; });"))
    roots = driver.find_elements(By.CSS_SELECTOR, ".ts-explorer")
    check.equal("explorers on the page", len(roots), count)
    check.equal("distinct ids", len({r.get_attribute("id") for r in roots}), count)
    spans = roots[-1].find_elements(By.CSS_SELECTOR, ".ts-text .ts-s")
    spans[len(spans) // 2].click()
    selected = [len(r.find_elements(By.CSS_SELECTOR, ".ts-sel")) for r in roots]
    check.equal("selection stays in the clicked explorer", selected, [0] * (count - 1) + [1])


SECTION_SIGN_UTF8 = b"\xc2\xa7"


def png_without_section_sign(png):
    """The same image with its IDAT data cut into chunks wherever the bytes C2 A7 (the UTF-8 of
    the section sign, which the repository's hook rejects in any file) would appear: decoders join
    IDAT chunks, so the pixels are unchanged; a cut that makes the pair in a chunk's length or CRC
    gets one more cut in that chunk."""
    import struct
    import zlib
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, at = [], 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        chunks.append((kind, png[at + 8:at + 8 + length]))
        at += 12 + length
    first = next(k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    data = b"".join(body for kind, body in chunks if kind == b"IDAT")
    before = [c for c in chunks[:first] if c[0] != b"IDAT"]
    after = [c for c in chunks[first:] if c[0] != b"IDAT"]

    def encode(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    cuts = set()
    for _ in range(10_000):
        bounds = [0] + sorted(cuts) + [len(data)]
        pieces = [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
        head = b"\x89PNG\r\n\x1a\n" + b"".join(encode(*c) for c in before)
        out, spans = bytearray(head), []
        for a, b in pieces:
            spans.append((len(out), a, b))
            out += encode(b"IDAT", data[a:b])
        out += b"".join(encode(*c) for c in after)
        found = bytes(out).find(SECTION_SIGN_UTF8)
        if found < 0:
            return bytes(out)
        for start, a, b in spans:
            if start <= found < start + 12 + (b - a):
                inside = found - (start + 8)
                # In the data: cut between the two bytes; in the length, type or CRC: cut the
                # chunk once more, which changes both.
                cuts.add(a + inside + 1 if 0 <= inside < b - a - 1 else a + max(1, (b - a) // 2))
                break
        else:
            raise ValueError("C2 A7 outside the image data (a header chunk): take the screenshot at another size")
    raise ValueError("could not cut the C2 A7 pairs out of the PNG")


def measure(driver, page):
    """File size, first paint, start-up and click latency (click → next painted frame)."""
    timings = driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        var root = document.querySelector('.ts-explorer');
        var spans = root.querySelectorAll('.ts-text .ts-s');
        var canvas = root.querySelector('canvas.ts-heat');
        var n = spans.length, clicks = [], cells = [], k = 0;
        function frame(t0, into, next) {
            requestAnimationFrame(function () { setTimeout(function () { into.push(performance.now() - t0); next(); }, 0); });
        }
        function clickSentence() {
            if (k >= 30) { k = 0; return clickCell(); }
            var t0 = performance.now();
            spans[(k * 37) % n].click(); k++;
            frame(t0, clicks, clickSentence);
        }
        function clickCell() {
            if (k >= 30) return finish();
            var rect = canvas.getBoundingClientRect(), row = n - 1 - (k * 7) % n, col = (k * 13) % (row + 1);
            var t0 = performance.now();
            canvas.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: rect.left + (col + 0.5) / n * rect.width, clientY: rect.top + (row + 0.5) / n * rect.height}));
            k++;
            frame(t0, cells, clickCell);
        }
        function finish() {
            var paint = performance.getEntriesByType('paint').filter(function (e) { return e.name === 'first-contentful-paint'; });
            var nav = performance.getEntriesByType('navigation')[0];
            done({fcp: paint.length ? paint[0].startTime : null, init: +root.dataset.initMs, heatmap: +root.dataset.heatmapMs,
                  domContentLoaded: nav ? nav.domContentLoadedEventEnd : null, load: nav ? nav.loadEventEnd : null,
                  clicks: clicks, cells: cells, n: n});
        }
        clickSentence();
    """)
    size = os.path.getsize(page)

    def summary(values):
        values = sorted(values)
        return f"median {statistics.median(values):.1f} ms, max {values[-1]:.1f} ms over {len(values)}"

    print(f"size: {size / 1e6:.2f} MB ({timings['n']} sentences)")
    def ms(value, digits=0):
        return "n/a" if value is None else f"{value:.{digits}f} ms"

    print(f"first contentful paint: {ms(timings['fcp'])}; script start-up: {ms(timings['init'], 1)} "
          f"(then the heatmap: {ms(timings['heatmap'], 1)}); load event: {ms(timings['load'])}")
    print(f"sentence click → next frame: {summary(timings['clicks'])}")
    print(f"heatmap cell click → next frame: {summary(timings['cells'])}")
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=pathlib.Path)
    parser.add_argument("--screenshot", type=pathlib.Path)
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--explorers", type=int, default=1, help="several explorers on the page (a notebook): check that they are independent")
    args = parser.parse_args()
    page = args.page.resolve()
    driver = start_browser(args.width, args.height)
    try:
        driver.get(page.as_uri())
        if args.explorers > 1:
            check = Checker()
            check_isolation(driver, args.explorers, check)
            for failure in check.failures:
                print(f"FAIL {failure}", file=sys.stderr)
            print(f"explorer browser test: {'ok' if not check.failures else 'FAILED'} ({check.passed} checks, {args.explorers} explorers)")
            return 1 if check.failures else 0
        wait_ready(driver)
        embedded = driver.execute_script("return document.querySelector('.ts-explorer .ts-data').textContent;")
        data = json.loads(embedded)
        check = Checker()
        beside = pathlib.Path(str(page) + ".json")
        if beside.exists():
            check.equal(f"{beside.name} equals the embedded JSON", json.loads(beside.read_text()) == data, True)
        if args.measure:
            measure(driver, page)
            driver.get(page.as_uri())
            wait_ready(driver)
        selected = check_page(driver, data, check)
        if args.screenshot:
            from selenium.webdriver.common.by import By
            driver.get(page.as_uri())  # the default colouring, nothing scrolled
            wait_ready(driver)
            span = driver.find_elements(By.CSS_SELECTOR, ".ts-text .ts-s")[selected]
            span.click()
            # The sentence in view in the text, the token view (when there is one) in the panel.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});"
                                  "var tokens = document.querySelector('.ts-panel .ts-tokens');"
                                  "if (tokens) tokens.scrollIntoView({block: 'start'});"
                                  "window.scrollTo(0, 0);", span)
            args.screenshot.write_bytes(png_without_section_sign(driver.get_screenshot_as_png()))
            print(f"screenshot: {args.screenshot}")
    finally:
        driver.quit()
    for failure in check.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if check.failures:
        print(f"explorer browser test: {len(check.failures)} failed, {check.passed} passed", file=sys.stderr)
        return 1
    print(f"explorer browser test: ok ({check.passed} checks, {len(data['sentences'])} sentences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
