"""The docs site: rendered without Quarto from the executed notebooks, then every page loaded in headless
Chromium (Debian's `chromium`, installed by .ci/install-debian): no console or page errors, every image
loads, every internal link and anchor resolves. Screenshots of the index and the trade-off page are kept
in $HYBRID_BATCH_ARTIFACTS/screenshots (default build/docs/screenshots), next to the site (…/_site)."""
import os, re, shutil, tempfile, threading, time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse
from urllib.error import HTTPError
from urllib.request import urlopen
import pytest
from hybrid_batch.docs import render_site, sidebar_notebooks, notebook_module

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/"nbs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ("index", "08_tradeoff")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

def _artifacts()->Path: return Path(os.environ.get("HYBRID_BATCH_ARTIFACTS") or ROOT/"build"/"docs")

@pytest.fixture(scope="session")
def site():
    "The site, rendered once per session from freshly executed notebooks."
    dest = _artifacts()/"_site"
    shutil.rmtree(dest, ignore_errors=True)
    t = time.time(); pages = render_site(NBS, dest)
    print(f"\nrendered {len(pages)} pages to {dest} in {time.time() - t:.0f} s")
    return dest

def test_every_sidebar_notebook_has_a_self_contained_page(site):
    for nb in sidebar_notebooks(NBS):
        page = (site/f"{nb.stem}.html").read_text()
        assert '<nav class="sidebar">' in page and 'class=current' in page, nb.name
        assert not re.search(r'<(script|link)\b[^>]*\b(src|href)="https?:', page), f"{nb.name}: page loads from the network"

def test_api_docs_for_every_exported_symbol(site):
    "Every name in a module's __all__ has an entry (signature, docstring, parameters) on its notebook's page."
    from execnb.nbio import read_nb
    for nb in sidebar_notebooks(NBS):
        mod = notebook_module(read_nb(nb), NBS)
        if mod is None: continue
        page = (site/f"{nb.stem}.html").read_text()
        missing = [n for n in mod.__all__ if f'<div class="api" id="{n}">' not in page]
        assert not missing, f"{nb.name}: no API entry for {missing}"
    page = (site/"19_docs.html").read_text()
    entry = page[page.index('<div class="api" id="render_site">'):]
    entry = entry[:entry.index("</table>")]
    for s in ["render_site(", "nbs:str", "dest:str", "Render the docs site", "notebooks folder with sidebar.yml"]:
        assert s in entry, s

def test_figures_and_outputs_are_embedded(site):
    "Executed outputs are on the pages: the trade-off figures as PNG data, tables as HTML, maths as SVG."
    tradeoff = (site/"08_tradeoff.html").read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', tradeoff)) >= 2
    assert '<table border="1" class="dataframe' in tradeoff
    assert 'class="math"' in (site/"04_losses.html").read_text()

@pytest.fixture(scope="module")
def server(site):
    handler = partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown(); httpd.server_close()

@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None: pytest.skip("Debian chromium is not installed (run .ci/install-debian)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()

_PAGE_FACTS = """() => ({
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 60), ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)})"""

def _load(ctx, url:str)->dict:
    "Open `url`; return its console errors, failed requests and the facts of _PAGE_FACTS."
    page, errors = ctx.new_page(), []
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status}: {r.url}"))
    resp = page.goto(url, wait_until="load")
    assert resp.status == 200, f"{url}: HTTP {resp.status}"
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    facts = page.evaluate(_PAGE_FACTS)
    return {"page": page, "errors": errors, **facts}

def test_every_page_in_chromium(site, server, browser):
    "No console errors, every image loads, every internal link and anchor resolves; screenshots kept."
    t, shots = time.time(), _artifacts()/"screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    names = [nb.stem for nb in sidebar_notebooks(NBS)]
    ids, links, problems = {}, [], []
    for name in names:
        url = server + f"{name}.html"
        r = _load(browser, url)
        problems += [f"{name}: {e}" for e in r["errors"]]
        problems += [f"{name}: image did not load: {i['src']}" for i in r["images"] if not i["ok"]]
        ids[f"/{name}.html"] = set(r["ids"])
        links += [(name, h) for h in r["links"] if h.startswith(server)]
        if name in SHOTS: r["page"].screenshot(path=str(shots/f"{name}.png"), full_page=True)
        r["page"].close()
    for name, href in links:  # an anchor matches an id raw or percent-decoded, as in the HTML spec
        target, anchor = urldefrag(href)
        path = urlparse(target).path
        if path not in ids:
            try: urlopen(target).close()
            except HTTPError as e: problems.append(f"{name}: link {href} -> HTTP {e.code}")
        elif anchor and not {anchor, unquote(anchor)} & ids[path]: problems.append(f"{name}: link {href}: no element with that id")
    assert not problems, "\n".join(problems)
    assert len({p for p, _ in links}) == len(names), "every page links to the others"
    for s in SHOTS: assert (shots/f"{s}.png").stat().st_size > 10_000
    print(f"\nbrowser checks of {len(names)} pages, {len(links)} links: {time.time() - t:.1f} s; screenshots in {shots}")
