"""``tinysr data``: fetching, checking and laying out the standard sets, against a local HTTP
server on 127.0.0.1 that serves archives made from the shared copies (no internet needed)."""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinysr import datasets
from tinysr.cli import main
from tinysr.errors import TinySRError
from tinysr.io import read_image, write_image


def _png_bytes(path: Path, tmp: Path) -> bytes:
    # re-encoded, as a mirror might: the check is on pixels, not on the file's bytes
    out = tmp / f"re_{path.name}"
    write_image(out, read_image(path))
    return out.read_bytes()


def make_tar(images: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves ``responses`` in turn, one per GET (the last one repeats): (body, declared length)."""

    def __init__(self):
        self.responses: list[tuple[bytes, int]] = []
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                body, length = server.responses[min(server.requests, len(server.responses) - 1)]
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # shorter than declared: a truncated transfer
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def serve(self, *bodies: bytes, truncate_first: bool = False) -> None:
        self.responses = [(b, len(b)) for b in bodies]
        if truncate_first:  # the first transfer stops halfway; the next ones are whole
            self.responses.insert(0, (bodies[0][: len(bodies[0]) // 2], len(bodies[0])))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    s = Server()
    for name in ("set5", "set14"):
        monkeypatch.setitem(datasets.REGISTRY, name, dataclasses.replace(datasets.REGISTRY[name], url=s.url("benchmark.tar")))
    yield s
    s.close()


@pytest.fixture
def set5_archive(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("archive")
    images = {f"benchmark/Set5/HR/{p.name}": _png_bytes(p, tmp) for p in sorted((data_dir / "Set5" / "HR").glob("*.png"))}
    images["benchmark/Set5/LR_bicubic/X2/babyx2.png"] = b"not the HR images: left out"
    good = make_tar(images)
    first = sorted(images)[0]
    img = read_image(data_dir / "Set5" / "HR" / Path(first).name).copy()
    img[0, 0] ^= 1  # one pixel off: decodes fine, is not the set's image
    write_image(tmp / "off.png", img)
    corrupt = make_tar({**images, first: (tmp / "off.png").read_bytes()})
    return good, corrupt


def test_the_registry_digests_are_the_shared_copies(data_dir):
    for name, folder in (("set5", "Set5/HR"), ("set14", "Set14/HR"), ("t91", "T91"), ("bsd200", "BSD200")):
        images = sorted((data_dir / folder).iterdir())
        assert datasets.check_images(name, images) is None, name
    assert datasets.known_digests("b100") is None  # not in the shared data: checked by count and decoding


def test_get_downloads_checks_and_lays_out_a_set_then_reuses_it(server, set5_archive, tmp_path, capsys):
    server.serve(set5_archive[0])
    root = tmp_path / "datasets"
    folder = datasets.get("set5", root, log=print)
    assert folder == root / "Set5" and sorted(p.name for p in (folder / "HR").iterdir()) == [
        "baby.png",
        "bird.png",
        "butterfly.png",
        "head.png",
        "woman.png",
    ]
    assert datasets.is_present("set5", root) and json.loads((folder / datasets.MARKER).read_text())
    assert server.requests == 1 and not list(root.glob(".*.partial"))
    assert datasets.get("Set5", root, log=print) == folder and server.requests == 1  # present: not fetched again
    assert "present" in capsys.readouterr().out


def test_a_name_stands_for_its_folder_in_test_and_recipes(server, set5_archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYSR_CACHE", str(tmp_path / "cache"))
    assert main(["test", "-m", "bicubic", "-d", "set5", "-s", "2", "-q"]) == 2  # not fetched yet: says how
    assert "tinysr data get set5" in capsys.readouterr().err
    server.serve(set5_archive[0])
    assert main(["data", "get", "set5", "-q"]) == 0
    assert main(["test", "-m", "bicubic", "-d", "set5", "-s", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Set5" in out and "33.68" in out  # SPEC §1's bicubic x2 on Set5
    assert main(["data", "path", "set5"]) == 0 and capsys.readouterr().out.strip().endswith("datasets/Set5")


def test_an_archive_failing_its_check_is_replaced_by_a_fresh_download(server, set5_archive, tmp_path):
    good, corrupt = set5_archive
    server.serve(corrupt, good)
    lines = []
    folder = datasets.get("set5", tmp_path, log=lines.append)
    assert server.requests == 2 and datasets.is_present("set5", tmp_path) and (folder / "HR" / "baby.png").is_file()
    assert any("failed its check" in ln and "1 of its 5 images" in ln for ln in lines)


def test_a_truncated_transfer_is_retried_not_used(server, set5_archive, tmp_path):
    server.serve(set5_archive[0], truncate_first=True)
    datasets.get("set5", tmp_path, log=lambda _: None)
    assert server.requests == 2 and datasets.is_present("set5", tmp_path)


def test_an_archive_that_stays_corrupt_keeps_nothing(server, set5_archive, tmp_path):
    server.serve(set5_archive[1])
    with pytest.raises(TinySRError, match="set5 failed its check twice"):
        datasets.get("set5", tmp_path, log=lambda _: None)
    assert server.requests == 2
    assert not (tmp_path / "Set5").exists() and not list(tmp_path.glob(".*.partial"))
    assert not any((tmp_path / "downloads").glob("*.tar"))  # the bad archive is gone, never reused
    server.serve(b"this is no archive")
    with pytest.raises(TinySRError, match="does not unpack"):
        datasets.get("set5", tmp_path, log=lambda _: None)


def test_a_local_archive_is_used_as_a_download_and_refused_when_it_is_not_the_set(set5_archive, tmp_path):
    (tmp_path / "benchmark.tar").write_bytes(set5_archive[0])
    folder = datasets.get("set5", tmp_path / "data", archive=tmp_path / "benchmark.tar", log=lambda _: None)
    assert datasets.is_present("set5", tmp_path / "data") and (tmp_path / "benchmark.tar").is_file()  # the user's file stays
    with pytest.raises(TinySRError, match="--archive .*: not Set14 \\(0 images where Set14 has 14\\)"):
        datasets.get("set14", tmp_path / "data", archive=tmp_path / "benchmark.tar", log=lambda _: None)
    assert folder.is_dir()


def test_zip_archives_unpack_too(set5_archive, tmp_path):
    with tarfile.open(fileobj=io.BytesIO(set5_archive[0])) as tar, zipfile.ZipFile(tmp_path / "sets.zip", "w") as z:
        for member in tar:
            z.writestr(member.name, tar.extractfile(member).read())
    datasets.get("set5", tmp_path / "data", archive=tmp_path / "sets.zip", log=lambda _: None)
    assert datasets.is_present("set5", tmp_path / "data")


def test_a_changed_file_makes_a_set_absent_and_a_foreign_folder_is_not_replaced(set5_archive, tmp_path):
    (tmp_path / "benchmark.tar").write_bytes(set5_archive[0])
    folder = datasets.get("set5", tmp_path / "data", archive=tmp_path / "benchmark.tar", log=lambda _: None)
    (folder / "HR" / "baby.png").write_bytes(b"x")
    assert not datasets.is_present("set5", tmp_path / "data")
    datasets.get("set5", tmp_path / "data", archive=tmp_path / "benchmark.tar", log=lambda _: None)  # repaired
    assert datasets.is_present("set5", tmp_path / "data")
    write_image(tmp_path / "data" / "Set14" / "HR" / "mine.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TinySRError, match="Set14: exists and was not written by tinysr data"):
        datasets.get("set14", tmp_path / "data", archive=tmp_path / "benchmark.tar", log=lambda _: None)
    assert (tmp_path / "data" / "Set14" / "HR" / "mine.png").is_file()


def test_manga109_is_checked_where_the_user_put_it(tmp_path, monkeypatch):
    with pytest.raises(TinySRError, match="manga109: academic use, on request"):
        datasets.get("manga109", tmp_path, log=lambda _: None)
    monkeypatch.setitem(datasets.REGISTRY, "manga109", dataclasses.replace(datasets.REGISTRY["manga109"], images=2))
    for i in range(2):
        write_image(tmp_path / "Manga109" / "HR" / f"m{i}.png", np.full((8, 8, 3), i, np.uint8))
    datasets.get("manga109", tmp_path, log=lambda _: None)
    assert datasets.is_present("manga109", tmp_path)


def test_unknown_names_and_empty_gets_are_one_line_errors(capsys):
    assert main(["data", "get", "set6"]) == 2
    assert "set6: not a standard set" in capsys.readouterr().err
    assert main(["data", "get"]) == 2
    assert "name at least one set" in capsys.readouterr().err
    assert main(["data", "list"]) == 0 and "bsd200" in capsys.readouterr().out
