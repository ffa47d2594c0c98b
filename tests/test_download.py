"""Downloads end, and end cleanly, against a real HTTP server on 127.0.0.1 that misbehaves:
too big (announced or not), trickling, silent, cut off. Limits are seconds here, not the
minutes of params.yaml."""

import http.server
import threading
import time

import pytest

from cnnpipe.core.errors import DataError
from cnnpipe.data import fashion_mnist
from cnnpipe.data.download import DownloadLimits, download
from cnnpipe.data.sources import load_source
from cnnpipe.params.schema import Archive as ArchiveConfig, Data as DataConfig

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class MisbehavingServer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _headers(self, length=None, chunked=False):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def do_GET(self):
        try:
            getattr(self, "serve_" + self.path.strip("/").split(".")[0].replace("-", "_"))()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def serve_ok(self):
        self._headers(len(PAYLOAD))
        self.wfile.write(PAYLOAD)

    def serve_announced_10gib(self):
        self._headers(10 * 2**30)
        self.wfile.write(PAYLOAD)  # a start; the client must not wait for the rest

    def serve_unannounced_endless(self):
        self._headers()  # no Content-Length: the body ends when the connection closes
        for _ in range(2000):  # 200 MiB at most, should the client not stop reading
            self.wfile.write(PAYLOAD)

    def serve_trickle(self):
        self._headers(len(PAYLOAD))
        for byte in PAYLOAD[:300]:  # 30 s at most
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def serve_silent(self):
        self._headers(len(PAYLOAD))
        time.sleep(10)

    def serve_cut(self):
        self._headers(len(PAYLOAD))
        self.wfile.write(PAYLOAD[:40_000])
        self.wfile.flush()
        self.close_connection = True

    def serve_cut_chunked(self):
        self._headers(chunked=True)
        self.wfile.write(b"%x\r\n" % 50_000 + PAYLOAD[:20_000])
        self.wfile.flush()
        self.close_connection = True

    # Fashion-MNIST's file names, cut off as well.
    def serve_train_images_idx3_ubyte(self):
        self.serve_cut()


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MisbehavingServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


LIMITS = DownloadLimits(max_bytes=2**20, stall_seconds=1.0, deadline_seconds=20.0)


def failed_download(url, tmp_path, limits=LIMITS) -> tuple[str, float]:
    """The one-line error and the seconds it took; nothing may be left in the folder."""
    folder = tmp_path / "downloads"
    started = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        download(url, folder / "file.zip", limits)
    seconds = time.monotonic() - started
    assert list(folder.iterdir()) == []  # no partial file, no destination
    message = str(excinfo.value)
    assert "\n" not in message
    return message, seconds


def test_a_well_behaved_download_arrives_whole(server, tmp_path):
    download(f"{server}/ok", tmp_path / "file.zip", LIMITS)
    assert (tmp_path / "file.zip").read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["file.zip"]


def test_an_announced_size_over_the_cap_is_refused_before_the_body(server, tmp_path):
    message, seconds = failed_download(f"{server}/announced_10gib", tmp_path)
    assert "announces 10240.0 MiB, more than the limit of 1.0 MiB (data.download.max_mb)" in message
    assert seconds < 30  # the promise is the message; the bound only catches a hang


def test_an_unannounced_body_over_the_cap_is_stopped_while_streaming(server, tmp_path):
    message, seconds = failed_download(f"{server}/unannounced_endless", tmp_path)
    assert "more than the limit of 1.0 MiB arrived (data.download.max_mb)" in message
    assert seconds < 60  # likewise


def test_a_trickling_server_trips_the_stall_detector(server, tmp_path):
    message, seconds = failed_download(f"{server}/trickle", tmp_path)
    assert "stalled" in message and "data.download.stall_seconds" in message, message
    assert 0.9 < seconds < 30  # waited for the stall limit (1 s), then gave up


def test_a_trickle_fast_enough_for_the_stall_detector_still_meets_the_deadline(
    server, tmp_path
):
    limits = DownloadLimits(max_bytes=2**20, stall_seconds=30.0, deadline_seconds=1.5)
    message, seconds = failed_download(f"{server}/trickle", tmp_path, limits)
    assert "not finished after" in message and "data.download.deadline_seconds" in message
    assert 1.4 < seconds < 30  # waited for the deadline (1.5 s), then gave up


def test_a_silent_server_is_a_stall_not_a_hang(server, tmp_path):
    message, seconds = failed_download(f"{server}/silent", tmp_path)
    assert "stalled: 0 bytes" in message
    assert seconds < 30  # the promise is the message; the bound only catches a hang


def test_a_connection_cut_before_the_announced_length_is_truncation(server, tmp_path):
    message, _ = failed_download(f"{server}/cut", tmp_path)
    assert "truncated" in message and "after 40000 bytes of the 102400 announced" in message


def test_a_chunked_body_cut_mid_chunk_is_truncation(server, tmp_path):
    message, _ = failed_download(f"{server}/cut_chunked", tmp_path)
    assert "truncated" in message


def test_a_partial_file_left_by_a_killed_run_is_removed(server, tmp_path):
    (tmp_path / ".file.zip.k1ll3d.partial").write_bytes(b"half")
    download(f"{server}/ok", tmp_path / "file.zip", LIMITS)
    assert [p.name for p in tmp_path.iterdir()] == ["file.zip"]


def test_an_archive_url_and_fashion_mnist_share_the_limits(server, tmp_path):
    config = DataConfig(
        source="archive",
        archive=ArchiveConfig(path_or_url=f"{server}/cut.zip", sha256="a" * 64,
                              download_dir=str(tmp_path / "archive")),
        download={"max_mb": 1, "stall_seconds": 1.0, "deadline_seconds": 20.0},
    )
    with pytest.raises(DataError, match="truncated"):
        load_source(config)
    assert list((tmp_path / "archive").iterdir()) == []
    with pytest.raises(DataError, match="truncated"):  # not "checksum mismatch"
        fashion_mnist.load_fashion_mnist(tmp_path / "none", server, tmp_path / "fm", LIMITS)
    assert list((tmp_path / "fm").iterdir()) == []


def test_a_full_disk_is_not_blamed_on_the_server(server, tmp_path, monkeypatch):
    import errno

    from cnnpipe.data import download as download_module

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode else handle

    # Only the download module's open: the partial file is the one file it writes.
    monkeypatch.setattr(download_module, "open", open_on_a_full_disk, raising=False)
    message, _ = failed_download(f"{server}/ok", tmp_path)
    assert "cannot write the download" in message and "No space left on device" in message
