"""Generated documentation stays in step with the settings declarations."""

from pathlib import Path

from appserver.cli import settings_doc

REPO = Path(__file__).resolve().parents[1]


def test_settings_reference_is_current() -> None:
    committed = (REPO / "docs" / "settings.md").read_text()
    assert committed == settings_doc(), "docs/settings.md is stale: run `appserver settings-doc > docs/settings.md`"


def test_every_setting_is_documented() -> None:
    from appserver.config import ServerConfig

    text = (REPO / "docs" / "settings.md").read_text()
    for name, field in ServerConfig.model_fields.items():
        assert f"`{name}`" in text
        assert field.description, f"{name} has no help text"
