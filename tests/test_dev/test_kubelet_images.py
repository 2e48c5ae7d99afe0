"""The image map: Docker's ENTRYPOINT/CMD rule, reference spelling, unknown images."""

from pathlib import Path

import pytest

from dev.kubelet.images import (
    Image,
    ImageMap,
    ImageMapError,
    ImageNotFoundError,
    container_argv,
    normalize_ref,
    parse_image_map,
)

REPO = Path(__file__).resolve().parents[2]
IMAGE = Image(ref="x:1", dir=Path("/"), entrypoint=("python", "-m", "app"), cmd=("--serve",))


def test_no_command_no_args_runs_entrypoint_and_cmd() -> None:
    assert container_argv(IMAGE, None, None) == ["python", "-m", "app", "--serve"]


def test_args_replace_cmd_only() -> None:
    assert container_argv(IMAGE, None, ["--once"]) == ["python", "-m", "app", "--once"]


def test_command_replaces_entrypoint_and_drops_cmd() -> None:
    assert container_argv(IMAGE, ["sh", "-c", "true"], None) == ["sh", "-c", "true"]
    assert container_argv(IMAGE, ["echo"], ["a", "b"]) == ["echo", "a", "b"]


@pytest.mark.parametrize(
    ("ref", "normal"),
    [
        ("nginx", "nginx:latest"),
        ("docker.io/library/nginx:1.27", "nginx:1.27"),
        ("docker.io/rewind/engine:dev", "rewind/engine:dev"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("rewind-examples/post-analytics:v2", "rewind-examples/post-analytics:v2"),
    ],
)
def test_references_are_spelled_one_way(ref: str, normal: str) -> None:
    assert normalize_ref(ref) == normal


def test_parse_resolves_folders_against_the_repo(tmp_path: Path) -> None:
    images = parse_image_map(
        {"images": {"a/b:1": {"dir": "sub", "entrypoint": ["run"], "env": {"X": 1}}}}, tmp_path
    )
    assert images["a/b:1"].dir == tmp_path / "sub"
    assert images["a/b:1"].env == {"X": "1"}


def test_parse_rejects_a_string_entrypoint(tmp_path: Path) -> None:
    with pytest.raises(ImageMapError):
        parse_image_map({"images": {"a:1": {"dir": ".", "entrypoint": "run"}}}, tmp_path)


def test_unknown_image_names_the_image_map(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text("images:\n  a:1: {dir: .}\n")
    with pytest.raises(ImageNotFoundError, match=r"dev/images\.yaml"):
        ImageMap(path, tmp_path).resolve("nope:1")


def test_map_is_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text("images:\n  a:1: {dir: .}\n")
    images = ImageMap(path, tmp_path)
    assert images.resolve("a:1").dir == tmp_path
    (tmp_path / "b").mkdir()
    path.write_text("images:\n  a:1: {dir: .}\n  b:2: {dir: b, cmd: [go]}\n")
    assert images.resolve("b:2").cmd == ("go",)


def test_the_repository_image_map_has_the_test_images() -> None:
    images = ImageMap(REPO / "dev" / "images.yaml", REPO)
    for ref in ("rewind-dev/http-server:v1", "rewind-dev/http-server:v2", "rewind-dev/crasher:v1",
                "rewind-dev/job:v1", "rewind/engine:dev", "rewind/operator:dev"):  # fmt: skip
        assert images.resolve(ref).dir.is_dir()
