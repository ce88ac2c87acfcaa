"""README's params reference is generated from the config dataclasses and kept in step with
them, with params.yaml and with dvc.yaml (`python -m ganaug.params_doc`)."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field

import pytest
from ruamel.yaml import YAML

from conftest import REPO
from ganaug.cli import STAGES as CLI_STAGES
from ganaug.config import Params, flatten, params_from_dict
from ganaug.params_doc import END, START_LINE, field_comments, key_docs, main, render, replace_block, stage_params

README = REPO / "README.md"
DVC_YAML = REPO / "dvc.yaml"


@dataclass(frozen=True)
class _Commented:
    plain: int = 1
    beside: int = 2  # the comment beside it
    # two lines
    # above it
    above: str = "a"  # and one beside
    spread: list[int] = field(
        default_factory=lambda: [1, 2]
    )  # on the closing line

    # a comment after a blank line belongs to no field above it
    last: bool = False


def test_field_comments_reads_the_lines_above_and_the_end_of_line_comment():
    assert field_comments(_Commented) == {
        "plain": "", "beside": "the comment beside it", "above": "two lines above it and one beside",
        "spread": "on the closing line", "last": "a comment after a blank line belongs to no field above it",
    }


def test_readme_params_reference_is_what_the_dataclasses_give():
    text = README.read_text()
    assert replace_block(text, render(DVC_YAML)) == text, (
        "README's params reference differs from src/ganaug/config.py or dvc.yaml: run `make params-doc`"
    )


def test_every_key_is_documented_by_a_comment_in_config_py():
    undocumented = [doc.key for doc in key_docs() if not doc.meaning]
    assert not undocumented, f"write a comment beside these fields in src/ganaug/config.py: {undocumented}"


def yaml_keys(mapping: dict, known: set[str], prefix: str = "") -> set[str]:
    """Dotted paths of a params mapping down to its keys (a mapping-valued key such as
    `data.phantom.class_fractions` is one key)."""
    out: set[str] = set()
    for name, value in mapping.items():
        path = prefix + name
        if isinstance(value, dict) and path not in known:
            out |= yaml_keys(value, known, path + ".")
        else:
            out.add(path)
    return out


def test_params_yaml_holds_every_key_with_the_dataclass_default():
    raw = YAML(typ="safe", pure=True).load((REPO / "params.yaml").read_text())
    keys = {doc.key for doc in key_docs()}
    assert yaml_keys(raw, keys) == keys
    defaults, given = flatten(Params()), flatten(params_from_dict(raw))
    differing = {k: (given[k], defaults[k]) for k in defaults if given[k] != defaults[k]}
    assert not differing, f"params.yaml value vs dataclass default: {differing}"


def test_every_stage_param_in_dvc_yaml_is_a_known_key_or_section():
    keys = {doc.key for doc in key_docs()}
    sections = {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
    for stage, listed in stage_params(DVC_YAML).items():
        if not listed:  # only a stage whose command reads no params (cli.STAGES: no sections) may list none
            assert CLI_STAGES.get(stage.replace("_", "-"), ("?",))[0] == (), stage
            continue
        assert set(listed) <= keys | sections, (stage, set(listed) - keys - sections)


def test_rows_follow_declaration_order_and_render_defaults_as_yaml():
    docs = {doc.key: doc for doc in key_docs()}
    assert list(docs)[:2] == ["data.source", "data.image_size"]
    assert [f.name for f in dataclasses.fields(Params)] == list(dict.fromkeys(k.split(".")[0] for k in docs))
    block = render(DVC_YAML)
    assert "| `data.medmnist.path` | `null` | string or `null` | `prepare` |" in block
    assert "| `classifier.device` | `auto` | `auto`, `cpu`, `cuda` | `train_reference`, `arm_real`, `arm_mixed`, `arm_synthetic` |" in block
    assert "| `arms.balance` | `oversample` | `oversample`, `class_weight` | `arm_real` |" in block
    assert "| `gan.lr_g` | `0.0002` | number, > 0 and <= 1 | `train_gan` |" in block


@pytest.mark.parametrize("text, found", [
    ("# title\n", "0 start and 0 end"),
    (f"{START_LINE}\nold\n", "1 start and 0 end"),
    (f"{END}\n{START_LINE}\n", "1 start and 1 end"),
    (f"{START_LINE}\n{START_LINE}\n{END}\n", "2 start and 1 end"),
])
def test_a_readme_without_one_pair_of_markers_is_refused(text, found):
    with pytest.raises(ValueError, match=f"README.md: expected one line .*found {found} markers"):
        replace_block(text, "new")


def test_check_fails_on_a_stale_table_and_write_fixes_it_in_place(tmp_path, capsys):
    shutil.copy(DVC_YAML, tmp_path / "dvc.yaml")
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{START_LINE}\n| stale |\n{END}\n\n## next\n")
    assert main(["--check", str(readme)]) == 1
    assert "stale: run `make params-doc`" in capsys.readouterr().err
    assert main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith(f"{END}\n\n## next\n") and "| stale |" not in text
    assert main(["--check", str(readme)]) == 0


def test_missing_dvc_yaml_or_markers_exit_2_naming_the_file(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["--check", str(readme)]) == 2
    assert f"{tmp_path / 'dvc.yaml'} not found" in capsys.readouterr().err
    shutil.copy(DVC_YAML, tmp_path / "dvc.yaml")
    assert main(["--write", str(readme)]) == 2
    assert f"{readme}: expected one line" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"
