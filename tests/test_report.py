"""The report stage: reports/index.html from a small pipeline's outputs (written here with the
writers the stages use: save_packed, evaluate.main, the memorisation audit's grid), its content
(answer, tables, figures, data, lineage, escaping, no test-split image), its MLflow logging, and
the page as headless Chromium shows it (no console errors, every figure decoded, not blank)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ganaug.config import ArmsConfig, EvaluateConfig, Params  # noqa: E402
from ganaug.data.packed import PackedDataset, Split, save_packed  # noqa: E402
from ganaug.io import write_json  # noqa: E402
from ganaug.quality.gate import gate_decision  # noqa: E402
from ganaug.quality.memorisation import audit_pixels, closest_pairs_grid  # noqa: E402
from ganaug.report import browser  # noqa: E402
from ganaug.report.build import answer  # noqa: E402
from ganaug.report.html import esc, page, tag  # noqa: E402
from ganaug.stages import evaluate  # noqa: E402
from ganaug.stages import report as report_stage  # noqa: E402

CLASSES = ["normal", "pneumonia"]
ARMS = ArmsConfig(real=["real", "balanced"], mixed=["synthetic"], ratios=[0.5, 1.0], synthetic=[])
SKILL = {"real": 0.70, "balanced": 0.71, "synthetic-0.5": 0.72, "synthetic-1.0": 0.95}  # share of test images right
TEST_PIXEL = 233  # every test-split pixel: a real grid showing it would show a test image
SOURCE_NAME = "phantom <i>&"  # markup in a text: must come out escaped


def images(rng: np.random.Generator, n: int, class_index: int) -> np.ndarray:
    """(n, 1, 16, 16) uint8 in [0, 200): a bright disc for class 1, noise around it (never TEST_PIXEL)."""
    yy, xx = np.mgrid[:16, :16]
    disc = ((yy - 8) ** 2 + (xx - 8) ** 2 < 20) * (120 if class_index else 30)
    return np.clip(disc[None, None] + rng.integers(0, 80, (n, 1, 16, 16)), 0, 199).astype(np.uint8)


def split(rng: np.random.Generator, counts: tuple[int, int], test: bool = False) -> Split:
    x = np.concatenate([images(rng, n, c) for c, n in enumerate(counts)])
    if test:
        x = np.full_like(x, TEST_PIXEL)
    labels = np.repeat(np.arange(2), counts).astype(np.int64)
    return Split(x, labels, np.arange(len(x), dtype=np.int64) // 2)  # two images per patient


def write_prepared(root: Path, rng: np.random.Generator) -> dict:
    leakage = {"counts": {"exact_duplicates": {"train-val": 0, "train-test": 1, "val-test": 0},
                          "near_duplicates": {"train-val": 2, "train-test": 0, "val-test": 0}, "patients_in_two_splits": 0},
               "action": "drop", "dropped": {"train": 0, "val": 0, "test": 1}}
    duplicates = {"counts": {s: {"exact_pairs": 0, "near_pairs": 1 if s == "train" else 0, "images_with_a_copy": 2 if s == "train" else 0,
                                 "share_with_a_copy": 0.0, "label_conflicts": 0} for s in ("train", "val", "test")},
                  "action": "keep", "removed": {"train": 0, "val": 0, "test": 0}}
    dataset = PackedDataset({"train": split(rng, (20, 60)), "val": split(rng, (6, 18)), "test": split(rng, (40, 60), test=True)},
                            CLASSES, {"name": SOURCE_NAME, "seed": 0}, {"image_size": 16},
                            {"leakage": leakage, "duplicates_within_split": duplicates, "warnings": ["a data warning"]})
    return save_packed(dataset, root / "data/prepared")


def write_gan_and_synthetic(root: Path, rng: np.random.Generator, train: np.ndarray) -> None:
    fake = np.concatenate([images(rng, 60, c) for c in range(2)])
    fake_labels = np.repeat(np.arange(2), 60).astype(np.int64)
    (root / "data/synthetic").mkdir(parents=True)
    np.savez(root / "data/synthetic/synthetic.npz", images=fake, labels=fake_labels)
    audit = audit_pixels(fake, train)
    for folder in (root / "data/synthetic", root / "models/gan"):
        folder.mkdir(parents=True, exist_ok=True)
        plt.imsave(folder / "memorisation_closest_pairs.png", closest_pairs_grid(audit, fake, train), cmap="gray", vmin=0, vmax=255)
    final = {"fd_domain": 3.2, "fd_domain_ci_low": 2.9, "fd_domain_ci_high": 3.6, "coverage_domain": 0.4, "diversity": 0.8,
             "label_fidelity_relative": 0.9, "memorisation_pixel_copy_rate": 0.0, "epochs": 3, "steps": 30}
    write_json(root / "models/gan/quality.json", final)
    gate = gate_decision(final, {"label_fidelity_relative": 0.5, "coverage_domain": 0.1, "diversity": 0.3})
    write_json(root / "data/synthetic/manifest.json", {
        "generator_file": "models/gan/generator.pt", "generator_sha256": "f" * 64, "generator_mlflow_run_id": "no-such-run",
        "dataset_hash": "x", "seed": 1234, "pool_ratio": 1.0, "counts": {"normal": 60, "pneumonia": 60},
        "memorisation": {"memorisation_pixel_copy_rate": 0.0, "memorisation_domain_copy_rate": 0.05},
        "quality_gate": gate.record(overridden=False)})
    steps = np.arange(30)
    (root / "plots").mkdir(exist_ok=True)
    pd.DataFrame({"step": steps, "epoch": steps // 10, "loss_d": 1.3 - steps / 60, "loss_g": 0.7 + steps / 50,
                  "d_real": 0.6, "d_fake": 0.4}).to_csv(root / "plots/gan_losses.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "fd_domain": [9.0, 5.0, 3.2], "coverage_domain": [0.1, 0.3, 0.4],
                  "diversity": [0.5, 0.7, 0.8]}).to_csv(root / "plots/gan_quality.csv", index=False)


def write_arms(root: Path, rng: np.random.Generator) -> None:
    """Three seeds per arm: right on about SKILL of the 100 test images (as test_evaluate's arms)."""
    labels = np.repeat([0, 1], [40, 60])
    for arm, skill in SKILL.items():
        difficulty = rng.random(len(labels))
        seeds = {}
        for s in range(3):
            right = difficulty < skill + rng.normal(0, 0.01)
            seeds[f"seed{s}"] = np.eye(2)[np.where(right, labels, 1 - labels)] * 0.6 + 0.2
        folder = root / "models/arms" / arm
        folder.mkdir(parents=True)
        np.savez(folder / "test_predictions.npz", labels=labels, **seeds)
        write_json(folder / "metrics.json", {"arm": arm, "mlflow_run_id": f"run-{arm}",
                                             "train_counts": {"real": {"normal": 20, "pneumonia": 60}},
                                             "seeds": {str(s): {"mlflow_run_id": f"run-{arm}-{s}"} for s in range(3)}})


def params() -> Params:
    return dataclasses.replace(Params(), arms=ARMS, evaluate=dataclasses.replace(EvaluateConfig(), n_bootstrap=100))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(root, page text, stdout) of the report stage on a small pipeline's outputs."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        rng = np.random.default_rng(0)
        meta = write_prepared(root, rng)
        with np.load(root / "data/prepared/dataset.npz") as npz:
            write_gan_and_synthetic(root, rng, npz["train_images"])
        write_arms(root, rng)
        evaluate.main(params())
        out = io.StringIO()
        import contextlib

        with contextlib.redirect_stdout(out):
            report_stage.main(params())
        evaluate_run = mlflow.search_runs(experiment_names=["ganaug"], filter_string="tags.`ganaug.stage` = 'evaluate'",
                                          output_format="list")[0].info.run_id
        artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(evaluate_run, "report")]
    return root, (root / "reports/index.html").read_text(), out.getvalue(), meta, evaluate_run, artifacts


class Figures(HTMLParser):
    """The page's <img data-figure=…> as decoded arrays, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, np.ndarray] = {}
        self.urls: list[str] = []

    def handle_starttag(self, tag_name, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag_name == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix), attrs["src"][:40]
            import base64

            self.figures[attrs["data-figure"]] = np.asarray(Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix):]))))


def parse(text: str) -> Figures:
    parser = Figures()
    parser.feed(text)
    return parser


def test_page_answers_the_question_with_the_arms_table_and_verdicts(built):
    _, text, out, *_ = built
    assert "Does adding GAN-generated images" in text
    assert re.search(r'id="answer"><strong>Answer: </strong>Yes, for synthetic-1\.0 \(vs balanced\), synthetic-1\.0 \(vs real\)', text)
    assert "synthetic-0.5 vs real: balanced accuracy" in text and "no clear difference" in text
    assert '<span class="helped">helped</span>' in text  # the verdict cell of synthetic-1.0
    for heading in ("Against real (arm - real)", "Against balanced (arm - balanced)", "Metric vs mixing ratio",
                    "Real and synthetic images per class", "Memorisation audit", "The GAN", "Quality gate", "The data", "Lineage"):
        assert heading in text, heading
    assert out.startswith("Yes, for synthetic-1.0")


def test_page_embeds_every_figure_non_blank_and_nothing_external(built):
    _, text, *_ = built
    parsed = parse(text)
    assert set(parsed.figures) == {"ratio-curve", "gan-curves", "closest-pairs", "gan-closest-pairs", "real-normal",
                                   "real-pneumonia", "synthetic-normal", "synthetic-pneumonia"}
    for name, pixels in parsed.figures.items():
        assert pixels.size and pixels.astype(float).std() > 1, f"{name} is blank"
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in parsed.urls), [u[:40] for u in parsed.urls]
    assert "<link" not in text and "http://" not in text and "https://" not in text
    assert "default-src &#x27;none&#x27;" in text  # the page's CSP (attribute-escaped): a network request would be refused (and logged)


def test_real_grids_come_from_the_train_split_never_the_test_split(built):
    _, text, *_ = built
    figures = parse(text).figures
    for name in ("real-normal", "real-pneumonia"):
        values = set(np.unique(figures[name]))
        assert TEST_PIXEL not in values and max(values - {255}) < 200, name  # train pixels < 200, gaps white
    assert figures["real-normal"].shape[1] == 8 * 16 + 7 * 2  # 8 columns of 16 px with 2 px gaps


def test_page_shows_data_gate_and_lineage_escaped(built):
    root, text, _, meta, evaluate_run, _ = built
    assert "phantom &lt;i&gt;&amp;" in text and SOURCE_NAME not in text
    assert meta["dataset_hash"] in text and meta["content_hash"]["train"] in text
    assert evaluate_run in text  # the evaluate MLflow run
    assert "<td>train</td><td>80</td><td>20</td><td>60</td><td>40</td>" in text  # images, per class, patients
    assert "patients in two splits: 0" in text and "a data warning" in text
    assert "<strong>Decision: </strong>passed" in text and "label_fidelity_relative" in text
    assert "f" * 64 in text and "not registered" in text  # generator sha256; its run registered no version
    assert "3.200 [2.900, 3.600]" in text  # fd_domain with its interval


def test_page_is_logged_to_the_evaluate_run(built):
    *_, artifacts = built
    assert artifacts == ["report/index.html"]


def test_without_the_evaluate_run_the_page_goes_to_a_new_report_run(built, tmp_path, monkeypatch, capsys):
    root = built[0]
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")  # a store without the evaluate run
    report_stage.main(params())
    assert "is not in the MLflow store" in capsys.readouterr().out
    run = mlflow.search_runs(experiment_names=["ganaug"], filter_string="tags.`ganaug.stage` = 'report'", output_format="list")[0]
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "report")] == ["report/index.html"]


def comparison(arm: str, verdict: str, low: float, high: float) -> dict:
    return {"arm": arm, "reference": "real", "metric": "balanced_accuracy", "difference": (low + high) / 2, "low": low,
            "high": high, "corrected_low": low, "corrected_high": high, "corrected_level": 0.975, "verdict": verdict}


@pytest.mark.parametrize(("verdicts", "headline"), [
    ([("no clear difference", -0.02, 0.03)], "No clear difference: no arm with synthetic images differs from real"),
    ([("hurt", -0.09, -0.01)], "No: synthetic images hurt balanced accuracy for synthetic-1.0 (vs real)"),
    ([], "Not answered: no arm trained with synthetic images"),
])
def test_answer_in_plain_words(verdicts, headline):
    evaluation = {"metrics": ["balanced_accuracy"], "references": ["real"], "ci_level": 0.95,
                  "families": {"synthetic-1.0": {"family": "synthetic", "ratio": 1.0}, "balanced": {"family": "balanced"}},
                  "comparisons": [comparison("synthetic-1.0", *v) for v in verdicts]
                  + [comparison("balanced", "helped", 0.01, 0.05)]}  # not an arm with synthetic images: not the answer
    got, lines = answer(evaluation)
    assert got.startswith(headline)
    assert len(lines) == len(verdicts)


def test_html_builder_escapes_text_and_keeps_its_own_markup():
    assert tag("td", "<script>alert(1)</script>") == "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"
    assert tag("p", tag("b", "x & y"), " <i>") == "<p><b>x &amp; y</b> &lt;i&gt;</p>"
    assert tag("a", "t", href='#"><x') == '<a href="#&quot;&gt;&lt;x">t</a>'
    assert esc(None) == "" and tag("img", src="data:,", alt="a") == '<img src="data:," alt="a">'


# ------------------------------------------------------------------------------ headless Chromium


@pytest.fixture(scope="module")
def chromium():
    found = browser.find_chromium()
    if found is None:
        pytest.skip("no Chromium on PATH (looked for chromium, chromium-browser, google-chrome); "
                    ".ci/run installs Debian's chromium")
    return found


def test_console_detector_sees_a_broken_page(chromium, tmp_path):
    """The check below can fail: a page with a script error and an external image is caught."""
    broken = tmp_path / "broken.html"
    broken.write_text(page("broken", tag("img", src="http://127.0.0.1:9/x.png", alt="x", data_figure="x"))
                      .replace("</body>", "<script>throw new Error('deliberate');</script></body>"))
    rendered = browser.render(broken, chromium)
    assert any("Uncaught Error: deliberate" in m for m in rendered.console), rendered.console
    assert any("127.0.0.1:9/x.png" in m and "Content Security Policy" in m for m in rendered.console), rendered.console
    assert 'data-figures="0/1"' in rendered.dom


def test_page_loads_in_chromium_without_console_errors_and_figures_decode(chromium, built, tmp_path):
    root, text, *_ = built
    n_images = len(parse(text).figures)
    rendered = browser.render(root / "reports/index.html", chromium)
    assert rendered.console == []
    assert f'data-figures="{n_images}/{n_images}"' in rendered.dom  # every embedded image decoded
    shot = browser.screenshot(root / "reports/index.html", tmp_path / "page.png", 1200, 1600, chromium)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text and figures, not a blank page


def test_closest_pairs_fallback_puts_a_copied_training_image_first():
    """Without synthesize's figure the page recomputes the pairs in pixels: a generated image that
    is a training image's copy is the first row, its two halves equal."""
    from ganaug.report.figures import GAP, closest_pairs_png

    rng = np.random.default_rng(1)
    train = images(rng, 30, 0)
    synthetic = np.concatenate([images(rng, 10, 1), train[7:8]])  # the last one copies train image 7
    grid = np.asarray(Image.open(io.BytesIO(closest_pairs_png(synthetic, train, n_pairs=3))))
    assert grid.shape == (3 * 16 + 2 * GAP, 32)  # 3 rows of (generated | training), 16 px each
    first = grid[:16]
    assert np.array_equal(first[:, :16], train[7, 0]) and np.array_equal(first[:, 16:], train[7, 0])
    assert not np.array_equal(grid[16 + GAP:32 + GAP, :16], grid[16 + GAP:32 + GAP, 16:])
