"""The dashboard in headless Chromium (Debian's, driven by Playwright), against a
real hive set up by the Rust test that runs this script:

    dashboard.py HIVE_URL TOKEN SCREENSHOT_DIR SMOLLM2_ID PULL_REF HOSTILE_ID

It checks what a user sees, takes a screenshot of each page into SCREENSHOT_DIR,
and prints one JSON line of what it saw. Any failed check raises.
"""

import json
import os
import sys
import time

from playwright.sync_api import expect, sync_playwright

URL, TOKEN, SHOTS, SMOL, PULL_REF, HOSTILE = sys.argv[1:7]
CHROMIUM = os.environ.get("RBEE_CHROMIUM", "/usr/bin/chromium")
seen = {}


def bmp():
    """A 16x16 24-bit BMP of two colours."""
    import struct

    w = h = 16
    rows = b"".join(bytes([255, 0, 0] * (w // 2) + [0, 200, 0] * (w // 2)) for _ in range(h))
    head = struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return head + info + rows


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def run(p):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    alerts = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.url))

    # a first visit: the token is asked for, and nothing says it was refused before
    # one was typed
    page.goto(URL + "/")
    expect(page.locator("#token-dialog")).to_be_visible()
    expect(page.locator("#token-error")).to_be_hidden()
    assert "refused" not in page.locator("body").inner_text(), page.locator("body").inner_text()
    # a wrong token: the form says so, once, and no data shows
    page.fill("#token-input", "not-the-token")
    page.press("#token-input", "Enter")
    expect(page.locator("#token-error")).to_contain_text("refused")
    assert page.locator("body").inner_text().count("refused") == 1, page.locator("body").inner_text()
    assert page.locator("#models-table").count() == 0, "no data without the token"
    shot(page, "token-refused")
    seen["wrong_token"] = page.locator("#token-error").inner_text()

    # the right one: the models table, with SmolLM2's properties
    page.fill("#token-input", TOKEN)
    page.press("#token-input", "Enter")
    row = page.locator("#models-table tbody tr", has=page.locator(f'a[href="#model/{quote(SMOL)}"]'))
    expect(row).to_have_count(1)
    cells = row.locator("td").all_inner_texts()
    # named as clients name it, the alias, the GGUF's own name under it
    assert row.locator("a").inner_text() == "smollm2-135m-instruct:q4_1", cells
    assert cells[1] == "llama", cells
    assert cells[2] == "Q4_1", cells
    assert cells[3].endswith("M"), cells  # parameters, ~135M
    assert cells[4] == "8192", cells
    seen["smollm2_row"] = cells
    # every control has a label
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
               .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"""
    )
    assert unlabeled == [], unlabeled
    # sort by size from the keyboard
    page.get_by_role("button", name="Size").focus()
    page.keyboard.press("Enter")
    expect(page.locator('th[aria-sort="ascending"]')).to_contain_text("Size")
    shot(page, "models")

    # HTML in a model's name is text, never run
    hostile = page.locator("#models-table tbody tr", has=page.locator(f'a[href="#model/{quote(HOSTILE)}"]'))
    expect(hostile).to_have_count(1)
    assert "<img" in hostile.inner_text(), hostile.inner_text()
    assert page.locator("#models-table img").count() == 0
    assert alerts == [], alerts

    # a bad reference shows the API's message
    page.fill("#pull-ref", "hf:")
    page.click("#pull-form button[type=submit]")
    expect(page.locator("#pull-status .error")).to_contain_text("hf:")
    seen["bad_reference"] = page.locator("#pull-status .error").inner_text()

    # a pull: the bar moves, then finishes
    page.fill("#pull-ref", PULL_REF)
    page.click("#pull-form button[type=submit]")
    bar = page.locator("#pull-status progress")
    expect(bar).to_be_visible()
    values = set()
    deadline = time.time() + 120
    while time.time() < deadline:
        v = float(bar.get_attribute("value") or 0)
        if 0 < v < 100:
            values.add(round(v, 1))
        if page.locator("#pull-result").count():
            break
        page.wait_for_timeout(50)
    expect(page.locator("#pull-result")).to_have_text("Pull completed")
    assert float(bar.get_attribute("value")) == 100
    assert len(values) >= 2, f"the bar moved: {sorted(values)}"
    seen["pull_progress_values"] = len(values)
    shot(page, "pull")

    # one model: every property, the raw keys, memory by context
    page.goto(URL + "/#model/" + quote(SMOL))
    expect(page.locator("main h2")).to_contain_text("Smollm2", ignore_case=True)
    expect(page.locator("th", has_text="general.architecture")).to_have_count(1)
    expect(page.locator("th", has_text="tokenizer.chat_template")).to_have_count(1)
    expect(page.locator("caption", has_text="Memory by context")).to_have_count(1)
    # the hive's own estimate, the row of the context a worker gets marked
    expect(page.locator("th", has_text="(a worker's)")).to_have_count(1)
    shot(page, "model")

    # workers: spawn one, see it, follow its log
    page.goto(URL + "/#workers")
    page.fill("#spawn-model", SMOL)
    page.click("#spawn-form button[type=submit]")
    expect(page.locator("li.ok", has_text="spawn completed")).to_be_visible(timeout=120_000)
    expect(page.locator("td", has_text="ready")).to_have_count(1)
    page.get_by_role("button", name="Show the log of").first.click()
    expect(page.locator("#worker-log")).not_to_be_empty(timeout=20_000)
    seen["log_chars"] = len(page.locator("#worker-log").inner_text())
    shot(page, "workers")
    # the models page marks what is loaded
    page.goto(URL + "/#models")
    loaded = page.locator("#models-table tbody tr", has=page.locator(f'a[href="#model/{quote(SMOL)}"]'))
    expect(loaded.locator(".loaded")).to_have_count(1)
    expect(page.locator("#models-table .loaded")).to_have_count(1)

    for name in ["binaries", "jobs", "machine"]:
        page.goto(URL + "/#" + name)
        page.wait_for_selector("table")
        shot(page, name)
    expect(page.locator("table").first).to_contain_text("RAM")
    # a hive in no fleet says how to join one
    page.goto(URL + "/#fleet")
    expect(page.locator("main")).to_contain_text("--etcd")
    shot(page, "fleet")

    # a chat, streamed through the one endpoint, with its speed
    page.goto(URL + "/#chat")
    expect(page.locator("#chat-model option")).not_to_have_count(0)
    page.select_option("#chat-model", label=page.locator("#chat-model option", has_text="smollm2").first.inner_text())
    # a system prompt and a temperature go with the request
    page.click("#chat-settings summary")
    page.fill("#chat-system", "You are terse.")
    page.fill("#chat-temperature", "0")
    # Shift+Enter is a new line; Enter sends
    page.fill("#chat-input", "Say hello")
    page.press("#chat-input", "Shift+Enter")
    page.keyboard.type("in three words.")
    assert "\n" in page.input_value("#chat-input"), page.input_value("#chat-input")
    assert page.locator(".msg.user").count() == 0
    sent = []
    page.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/chat/completions") else None)
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-speed")).to_contain_text("tokens/s", timeout=120_000)
    body = json.loads(sent[-1])
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}, body
    assert body["temperature"] == 0 and body["messages"][-1]["content"] == "Say hello\nin three words.", body
    # the answer is Markdown made of text nodes: what a model writes is never HTML
    rendered = page.evaluate(
        """() => { const d = document.createElement('div');
               d.append(...markdown('**bold** `code` <img src=x onerror=alert(1)>\\n```\\n<script>alert(2)</script>\\n```\\n- one\\n- two'));
               return [d.querySelectorAll('strong').length, d.querySelectorAll('code').length,
                       d.querySelectorAll('img, script').length, d.querySelectorAll('li').length]; }"""
    )
    assert rendered == [1, 2, 0, 2], rendered
    answer = page.locator(".msg.assistant .body").last.inner_text()
    assert answer.strip(), "an answer"
    seen["chat_answer"] = answer
    seen["chat_speed"] = page.locator("#chat-speed").inner_text()
    shot(page, "chat")

    # an image, for a model that sees (SmolLM2 is paired with a projector here):
    # previewed, sent as a data: URL in an image_url part, shown in the transcript
    expect(page.locator("#chat-image")).to_be_enabled()
    page.set_input_files("#chat-image", files=[{"name": "square.bmp", "mimeType": "image/bmp", "buffer": bmp()}])
    expect(page.locator("#chat-image-preview img.thumb")).to_have_count(1)
    page.fill("#chat-input", "What is in this image?")
    answers = page.locator(".msg.assistant").count()
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-form button[type=submit]")).to_be_enabled(timeout=120_000)
    expect(page.locator(".msg.assistant")).to_have_count(answers + 1)
    assert page.locator("#chat-log .error").count() == 0, page.locator("#chat-log .error").all_inner_texts()
    body = json.loads(sent[-1])
    parts = body["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"], parts
    assert parts[1]["image_url"]["url"].startswith("data:image/bmp;base64,Qk"), parts[1]["image_url"]["url"][:40]
    expect(page.locator(".msg.user img.thumb")).to_have_count(1)
    expect(page.locator("#chat-image-preview img")).to_have_count(0)
    seen["image_answer"] = page.locator(".msg.assistant .body").last.inner_text()
    shot(page, "chat-image")
    # a model that cannot see: nothing to attach
    values = page.locator("#chat-model option").evaluate_all("os => os.map(o => o.value)")
    chosen = page.input_value("#chat-model")
    blind = [v for v in values if v != chosen]
    if blind:
        page.select_option("#chat-model", value=blind[0])
        expect(page.locator("#chat-image")).to_be_disabled()
        page.select_option("#chat-model", value=chosen)
        expect(page.locator("#chat-image")).to_be_enabled()

    # a phone
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    mobile = phone.new_page()
    mobile.goto(URL + "/")
    mobile.evaluate(f"localStorage.setItem('rbee-hive-token', {json.dumps(TOKEN)})")
    mobile.goto(URL + "/#models")
    expect(mobile.locator("#models-table")).to_be_visible()
    expect(mobile.get_by_role("link", name="Workers")).to_be_visible()
    shot(mobile, "models-phone")
    # nothing wider than the phone: wide tables scroll in their own box
    for name in ["models", "workers", "binaries"]:
        mobile.goto(URL + "/#" + name)
        mobile.wait_for_selector("table")
        wide = mobile.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"#{name} is {wide}px wider than the phone"
    shot(mobile, "binaries-phone")

    assert errors == [], errors
    off_origin = [r for r in requests if not r.startswith(URL)]
    assert off_origin == [], off_origin
    browser.close()


def quote(s):
    from urllib.parse import quote as q

    return q(s, safe="")


with sync_playwright() as p:
    run(p)
print(json.dumps(seen))
