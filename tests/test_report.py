"""snakemake --report: the page it opens on holds the run's numbers, rendered by a real browser."""

import html
import json
import re
import shutil
import subprocess

import debian
import pytest
from conftest import TINY, run_snakemake

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium, installed with apt (Debian's chromium) when missing and the suite runs as root on
    Debian, as CI does; elsewhere the test is skipped when there is none."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found:
        return found
    why = debian.can_install()
    if why:
        pytest.skip(f"no Chromium on PATH and {why} (apt-get install chromium)")
    debian.install("chromium")
    return shutil.which("chromium")


def _render(browser: str, page, profile) -> str:
    """The DOM of ``page`` after its scripts ran, from headless Chromium."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        page.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def _text(dom: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_report_opens_on_the_run_and_its_numbers(chain, tmp_path, request):
    work, env, run = chain
    page = tmp_path / "report.html"
    result = run_snakemake(work, env, "--report", str(page))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert page.stat().st_size > 10000
    dom = _render(request.getfixturevalue("chromium"), page, tmp_path / "profile")  # built even without one
    text = _text(dom)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    classes = list(metrics["cam"]["iou"])

    # it opens on the run's description and the IoU table: one row per class, one column per source
    start = text.index(f"atsg run {TINY['run']}")
    assert "from image-level labels only" in text[start : start + 400]
    table = text[text.index("IoU on the test split (%)", start) : text.index("Weak / fully supervised mIoU", start)]
    sources = ["cam", "pseudo_labels", "predictions", "supervised"]
    assert "class CAM pseudo-labels weak supervised" in table

    def pct(v):
        return "\u2014" if v is None else f"{100 * v:.1f}"

    for c in classes:
        assert " ".join([c, *(pct(metrics[s]["iou"][c]) for s in sources)]) in table, (c, table)
    assert " ".join(["mIoU", *(pct(metrics[s]["miou"]) for s in sources)]) in table, table
    ratio = metrics["supervised"]["weak_to_supervised"]
    assert f"Weak / fully supervised mIoU on test: {ratio:.3f}" in text
    f1 = metrics["classification"]["test"]
    assert f"Classifier F1 on test (image-level, probability > 0.5): {pct(f1['f1'])}" in text
    # the figures are the report's results, in this order, linked from the page
    menu = [text.index(name) for name in ("1. Scores", "2. Training", "3. Sample tiles", "4. Confusion matrix")]
    assert menu == sorted(menu)
    assert dom.count("javascript:app.showCategory(") >= 4
    assert "align-items: flex-start" in dom  # the page starts at the top of the window, title first
    source = page.read_text()
    for caption in ("Per-class IoU on the reported split", "Training curves of every training", "Class colours"):
        assert caption in source


def test_the_report_stage_writes_the_page_and_its_figures(chain):
    """Rule report ran in the chain: the page has the run's numbers as reStructuredText and embeds each figure."""
    _, _, run = chain
    page = (run / "report" / "run.rst").read_text()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for source in ("cam", "pseudo_labels", "predictions", "supervised"):
        assert f"     - **{100 * metrics[source]['miou']:.1f}**" in page
    assert "image::" not in page and len(page.splitlines()) < 120  # short: the report centres it vertically
    assert "predictions of tiles at their own size, scales 1, dense CRF on (10 iterations)" in page  # as it ran
    for fig in ("iou.png", "training.png"):
        assert (run / "report" / fig).stat().st_size > 5000
    classifier = json.loads((run / "classifier" / "metrics.json").read_text())
    assert [e["step"] for e in classifier["losses"]] == [2, 4] and all(e["loss"] > 0 for e in classifier["losses"])


def test_report_refuses_what_is_not_a_training(tmp_path, cli_env):
    out = subprocess.run(
        ["atsg", "report", "--training", "decoder=x.json", "--out", str(tmp_path)],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "--training decoder=...: not a training" in out.stderr
    assert not any(tmp_path.iterdir())


def test_the_page_renders_any_class_name_literally():
    """Class names are data: one named like reStructuredText markup (a reference, emphasis, a table bar) shows
    as written, and missing scores as a dash."""
    from docutils.core import publish_parts

    from atsg.scoring.report import headline, to_markdown, to_rst

    classes = ["car_", "a*b", "x|y", "low `veg`"]
    scores = {"miou": 0.5, "iou": {"car_": 0.25, "a*b": None, "x|y": 1.0, "low `veg`": 0.125}}
    metrics = {"cam": scores, "predictions": scores}
    text = to_rst(headline(metrics, classes, "test"), "atsg run odd")
    html_out = publish_parts(text, writer="html", settings_overrides={"report_level": 2})["html_body"]
    assert "System Message" not in html_out
    body = _text(html_out)
    for c, v in [("car_", "25.0"), ("a*b", "\u2014"), ("x|y", "100.0"), ("low `veg`", "12.5")]:
        assert f"{c} {v} {v}" in body, (c, body)
    assert "mIoU 50.0 50.0" in body
    rows = [line for line in to_markdown(headline(metrics, classes, "test"), "x").splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(classes) + 1 and all(len(re.split(r"(?<!\\)\|", r)) == 5 for r in rows)
