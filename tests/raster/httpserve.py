"""A static HTTP server with byte ranges for tests (run as ``python httpserve.py ROOT LOG``): serves ROOT on
127.0.0.1 at a free port, prints the port, appends each path asked for to LOG. Python's own
``SimpleHTTPRequestHandler`` ignores ``Range``; GDAL reads COGs in ranges."""

from __future__ import annotations

import re
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` that honours ``Range: bytes=a-b`` with 206 responses (GDAL reads COGs in
    ranges), quietly. Appends the paths asked for to the file ``log``."""

    log: Path | None = None

    def log_message(self, *args):  # noqa: D102 - no request log on stderr
        pass

    def send_head(self):
        """The file's headers (and its open file), a 206 partial one when a byte range is asked for."""
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(self.path + "\n")
        m = _RANGE.match(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = path.open("rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Limited(f, end - start + 1)


class _Limited:
    """An open file read only up to ``n`` bytes (the body of a 206 response)."""

    def __init__(self, f, n: int) -> None:
        self.f, self.left = f, n

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, never past the range."""
        size = self.left if size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data

    def close(self) -> None:
        """Close the file."""
        self.f.close()




def main(root: str, log: str) -> None:
    """Serve ``root`` until killed; print the port first."""
    RangeHandler.log = Path(log)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=root))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
