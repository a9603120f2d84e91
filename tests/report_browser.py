#!/usr/bin/python3
"""The run folder's report.html, while a run goes on and in a real browser.

  report_browser.py TRAIN_UNET WORKDIR

1. A tiny synthetic run trains while this script reads report.html and curves.svg as fast as it can:
   every read is a complete document (report.html ends with </html>, curves.svg with </svg>), and
   every panel the page links to exists, so a reload at any moment sees a consistent page.
2. Headless Chromium (Debian's `chromium`) loads the finished page, and a page taken in the middle of
   the run, inside a frame of a small checking page: they load without a console error, the curves
   are laid out as an SVG with its lines, the inline panel decodes, and the metrics table has a row
   per epoch. Without Chromium this part is skipped with a message (exit 77).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

FLAGS = ["--synthetic-count", "32", "--val-fraction", "0.5", "--image-size", "32x48", "--features", "4,8",
         "--epochs", "6", "--batch-size", "4", "--lr", "0.003", "--threads", "1", "--workers", "1",
         "--device", "cpu", "--quiet"]
EPOCHS = 6

CHECKER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<iframe id="f" src="%s" width="1300" height="2400"></iframe>
<pre id="result">pending</pre>
<script>
const f = document.getElementById('f');
f.addEventListener('load', () => {
  const r = {};
  try {
    const d = f.contentDocument;
    r.title = d.title;
    r.status = d.getElementById('status').textContent;
    const svg = d.querySelector('#curves svg');
    r.paths = svg ? svg.querySelectorAll('path').length : 0;
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    r.curves = Math.round(box.width) + 'x' + Math.round(box.height);
    const img = d.getElementById('panel');
    r.panel = img ? (img.complete ? img.naturalWidth + 'x' + img.naturalHeight : 'incomplete') : 'none';
    r.rows = d.querySelectorAll('#metrics tr').length - 1;
    r.links = d.querySelectorAll('a[href^="panels/"]').length;
  } catch (e) {
    r.error = String(e);
  }
  document.getElementById('result').textContent = 'RESULT ' + JSON.stringify(r);
});
</script>
</body></html>
"""


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return None


def watch_run(exe, out):
    """Runs train_unet and reads its views until it ends; returns (failures, versions seen, a mid-run page)."""
    failures, versions, middle = [], set(), None
    p = subprocess.Popen([exe] + FLAGS + ["--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads = 0
    while True:
        done = p.poll() is not None
        html = read(os.path.join(out, "report.html"))
        svg = read(os.path.join(out, "curves.svg"))
        if html is not None:
            reads += 1
            if not (html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")):
                failures.append("a partial report.html (%d bytes)" % len(html))
            for link in re.findall(r'href="(panels/[^"]+)"', html):
                if not os.path.exists(os.path.join(out, link)):
                    failures.append("report.html links %s, which does not exist" % link)
            if html not in versions:
                versions.add(html)
                if middle is None and "2 of %d epochs done" % EPOCHS in html:
                    middle = html
        if svg is not None and not (svg.startswith("<svg") and svg.endswith("</svg>\n")):
            failures.append("a partial curves.svg (%d bytes)" % len(svg))
        if done:
            break
        time.sleep(0.002)
    so, se = p.communicate()
    if p.returncode != 0:
        failures.append("train_unet failed (%d): %s" % (p.returncode, se.strip()))
    print("read report.html %d times while the run went on: %d versions, each complete" % (reads, len(versions)))
    return failures, versions, middle


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(chromium, work, page, label):
    """Loads `page` (relative to work) in the checking page; returns (result dict, console errors)."""
    checker = os.path.join(work, "check_%s.html" % label)
    with open(checker, "w") as f:
        f.write(CHECKER % page)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", "file://" + checker]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    m = re.search(r"RESULT (\{.*\})", p.stdout)
    errors = [line for line in p.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "Failed to load" in line]
    if p.returncode != 0 or not m:
        return None, ["chromium exited %d without a result: %s" % (p.returncode, p.stderr.strip()[-500:])]
    return json.loads(m.group(1).replace("&quot;", '"')), errors


def check_render(result, errors, epochs, label):
    failures = []
    print("%s: %s" % (label, json.dumps(result)))
    if errors:
        failures.append("%s: console errors: %s" % (label, errors))
    if result is None:
        return failures + ["%s: no result" % label]
    if "error" in result:
        failures.append("%s: %s" % (label, result["error"]))
        return failures
    if result["paths"] != 5:
        failures.append("%s: the curves have %d lines, expected 5" % (label, result["paths"]))
    width, height = (int(v) for v in result["curves"].split("x"))
    if width < 400 or height < 200:
        failures.append("%s: the curves are laid out at %s" % (label, result["curves"]))
    if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", result["panel"]):
        failures.append("%s: the panel did not decode (%s)" % (label, result["panel"]))
    if result["rows"] != epochs or result["links"] != epochs:
        failures.append("%s: %d metric rows and %d panel links, expected %d" % (label, result["rows"], result["links"], epochs))
    return failures


def main():
    exe, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out = os.path.join(work, "run")
    failures, versions, middle = watch_run(exe, out)
    if len(versions) < 3:
        failures.append("saw only %d versions of report.html" % len(versions))
    chromium = find_chromium()
    if chromium is None:
        for f in failures:
            print("FAIL: " + f)
        if failures:
            return 1
        print("skipped: the browser check (no chromium; on Debian: apt-get install chromium)")
        return 77
    if middle is None:
        failures.append("no version of report.html after epoch 2 was seen")
    else:
        with open(os.path.join(out, "report_epoch2.html"), "w") as f:
            f.write(middle)
        failures += check_render(*render(chromium, work, "run/report_epoch2.html", "epoch2"), 2, "mid-run page (epoch 2)")
    failures += check_render(*render(chromium, work, "run/report.html", "final"), EPOCHS, "finished page")
    shot = os.path.join(work, "report.png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,2400",
                    "--screenshot=" + shot, "file://" + os.path.join(out, "report.html")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    print("screenshot of the finished page: " + shot)
    for f in failures:
        print("FAIL: " + f)
    print("report.html loads in %s with no error and shows the curves and the panel" % os.path.basename(chromium)
          if not failures else "%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
