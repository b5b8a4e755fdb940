"""First load of the dashboard in headless Chromium: bytes over the wire and
requests, and how long until the models page is usable (its first page of rows on
screen) and until every model is loaded.

    dashboard_load.py HIVE_URL [RUNS]
"""

import statistics
import sys
import time

from playwright.sync_api import sync_playwright

URL = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    usable, whole, first_bytes, first_requests, models_total = [], [], None, None, None
    for run in range(RUNS):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sizes = []
        page.on("requestfinished", lambda r: sizes.append(r.sizes()))
        t0 = time.perf_counter()
        page.goto(URL + "/#models")
        page.wait_for_selector("#models-table tbody tr:nth-child(100)")
        t1 = time.perf_counter()
        page.wait_for_function("() => !document.querySelector('#models-table caption').textContent.includes('loading')", timeout=60_000)
        t2 = time.perf_counter()
        usable.append(t1 - t0)
        whole.append(t2 - t0)
        models_total = page.locator("#models-table caption").inner_text()
        if run == 0:
            # the page itself: the shell, its script and style, and its first API calls
            page_only = [s for s in sizes]
            first_requests = len(page_only)
            first_bytes = sum(s["responseBodySize"] + s["responseHeadersSize"] + s["requestHeadersSize"] for s in page_only)
        context.close()
    browser.close()
print(f"models: {models_total}")
print(f"first load: {first_requests} requests, {first_bytes / 1024:.1f} KiB over the wire (all of them, the model pages included)")
print(f"first 100 rows on screen: median {statistics.median(usable) * 1000:.0f} ms, max {max(usable) * 1000:.0f} ms over {RUNS} loads")
print(f"every model loaded: median {statistics.median(whole) * 1000:.0f} ms, max {max(whole) * 1000:.0f} ms")
