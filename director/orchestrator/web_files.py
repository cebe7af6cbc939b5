"""
The orchestrator's routes for a site's files, its whole-site archives and the disk use.
"""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.protocols.basic import FileSender
from twisted.web.iweb import IRequest

from director.common.web import render_json
from director.orchestrator.disk import quota_refusal
from director.orchestrator.files import FileError, SiteFiles, TooLarge
from director.orchestrator.site_archive import import_archive, write_archive
from director.orchestrator.thread_stream import RequestSink, ThreadWriter
from director.orchestrator.web_base import (
    BadRequest,
    OrchestratorAPIBase,
    _arg,
    _file_path,
    _flag,
    _json_body,
    app,
)


class FileRoutes(OrchestratorAPIBase):
    """A site's files (read, written, moved, deleted), its archives, and the disk use."""

    # -- files ---------------------------------------------------------------------------------

    def _site_files(self, site_id: int) -> SiteFiles:
        return self._rt().site_files(self._rt().get(site_id))

    async def _in_files(self, f: Any, *args: Any) -> Any:
        assert self._files is not None
        return await self._files.run(f, *args)

    @app.route("/v1/sites/<int:site_id>/files/", methods=["GET"], branch=True)
    async def get_file(self, request: Any, site_id: int) -> Any:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        entry = await self._in_files(files.stat, path)
        if entry.type == "dir":
            if _flag(request, "zip"):
                spool = await self._in_files(_zip_to_spool, files, path)
                name = (path.rstrip("/").rsplit("/", 1)[-1] or "site") + ".zip"
                request.setHeader(b"content-type", b"application/zip")
                request.setHeader(
                    b"content-disposition", f'attachment; filename="{_safe_name(name)}"'.encode()
                )
                return await _send(request, spool)
            entries = await self._in_files(files.list_dir, path)
            return render_json(request, {"path": path, "entries": [e.to_json() for e in entries]})
        stream, size = await self._in_files(files.open_read, path)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", str(size).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        return await _send(request, stream)

    @app.route("/v1/sites/<int:site_id>/files/", methods=["PUT"], branch=True)
    async def put_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        mode = _arg(request, "mode")
        length = request.getHeader(b"content-length")
        if length and length.isdigit() and int(length) > files.limits.max_write_bytes:
            raise TooLarge(f"{path}: larger than {files.limits.max_write_bytes} bytes")
        if request.path.endswith(b"/"):
            grows = await self._fits(site_id, files, path, None)
            await self._in_files(files.mkdir, path, mode)
            return render_json(request, {"created": path, **self._written(site_id, grows)}, 201)
        request.content.seek(0, 2)
        size = request.content.tell()
        grows = await self._fits(site_id, files, path, size)
        request.content.seek(0)
        if _flag(request, "exclusive"):
            await self._in_files(files.create, path, _chunks(request.content), mode)
            return render_json(request, {"created": path, **self._written(site_id, grows)}, 201)
        await self._in_files(files.write, path, _chunks(request.content), mode)
        return render_json(request, {"written": path, **self._written(site_id, grows)})

    async def _fits(self, site_id: int, files: SiteFiles, path: str, size: int | None) -> int:
        """
        How many bytes writing C{size} bytes (None: a new directory) at C{path} adds to the
        site; 413 quota_exceeded if that would take it over its disk quota.
        """
        grows = DIRECTORY_BYTES
        if size is not None:
            grows = await self._in_files(_growth, files, path, size)
        if self._disk is None:
            return grows
        quota = self._rt().disk_quota_bytes(self._rt().get(site_id))
        refusal = quota_refusal(self._disk.used(site_id), quota, grows, path or "/")
        if refusal is not None:
            raise BadRequest("quota_exceeded", refusal, 413)
        return grows

    def _written(self, site_id: int, grows: int) -> dict[str, Any]:
        if self._disk is None:
            return {}
        self._disk.changed(site_id, grows)
        return {"disk_usage_bytes": self._disk.used(site_id)}

    # -- a site's files as one archive (moving a site between orchestrators) -------------------

    @app.route("/v1/sites/<int:site_id>/archive", methods=["GET"])
    async def get_archive(self, request: Any, site_id: int) -> bytes:
        """The whole site directory as an uncompressed tar, streamed as it is made."""
        files = self._site_files(site_id)
        await self._in_files(files.stat, "")  # 404 before anything is sent
        assert self._archives is not None
        request.setHeader(b"content-type", b"application/x-tar")
        request.setHeader(
            b"content-disposition", f'attachment; filename="site-{site_id}.tar"'.encode()
        )
        sink = RequestSink(request, self._streams)
        writer = ThreadWriter(self._reactor, sink)
        try:
            await self._archives.run(_write_all, files, writer)
        except Exception:
            if sink.written == 0 and not sink.stopped:
                raise  # nothing sent yet: a proper error answer
            if not sink.stopped:
                self.log.failure("the archive of site {id} broke off", id=site_id)
                # the tar is incomplete: the client must see a broken transfer, not an end
                transport = getattr(request.channel, "transport", None)
                if transport is not None:
                    transport.abortConnection()
        finally:
            sink.close()
        return b""

    @app.route("/v1/sites/<int:site_id>/archive", methods=["PUT"])
    async def put_archive(self, request: Any, site_id: int) -> bytes:
        """
        Replace the whole site directory with the tar (plain or gzip) in the body: unpacked
        beside it, checked member by member, swapped in only once complete.
        """
        runtime = self._rt()
        site = runtime.get(site_id)
        owner = (site.uid, site.uid)
        quota = runtime.disk_quota_bytes(site)
        files = runtime.site_files(site)

        def layout(fresh: Any) -> None:
            SiteFiles(fresh, owner=owner).ensure_layout()

        request.content.seek(0)
        assert self._archives is not None
        result = await self._archives.run(
            import_archive, files.root, request.content, owner, quota, layout
        )
        if self._disk is not None:
            self._disk.changed(site_id)  # measured again shortly
        return render_json(request, {"imported": site_id, **result})

    @app.route("/v1/disk", methods=["GET"])
    def disk_usage(self, request: IRequest) -> bytes:
        """Every site's last measured disk use and its quota (bytes; null: unknown / none)."""
        runtime = self._rt()
        sites = []
        for site in runtime.sites.values():
            usage = self._disk.usage.get(site.id) if self._disk is not None else None
            sites.append(
                {
                    "id": site.id,
                    "disk_usage_bytes": usage.used if usage else None,
                    "disk_quota_bytes": runtime.disk_quota_bytes(site),
                }
            )
        return render_json(request, {"sites": sites})

    @app.route("/v1/sites/<int:site_id>/files/", methods=["PATCH"], branch=True)
    async def patch_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        body = _json_body(request)
        if not isinstance(body, dict) or not set(body) <= {"mode", "move_to"} or not body:
            raise BadRequest("bad_request", 'expected {"mode": "755"} and/or {"move_to": "path"}')
        if "mode" in body:
            if not isinstance(body["mode"], str):
                raise BadRequest("bad_mode", 'mode must be a string like "755"')
            await self._in_files(files.chmod, path, body["mode"])
        if "move_to" in body:
            if not isinstance(body["move_to"], str):
                raise BadRequest("bad_path", "move_to must be a path")
            await self._in_files(files.move, path, body["move_to"])
            path = body["move_to"]
        return render_json(request, {"path": path})

    @app.route("/v1/sites/<int:site_id>/files/", methods=["DELETE"], branch=True)
    async def delete_file(self, request: Any, site_id: int) -> bytes:
        files = self._site_files(site_id)
        path = _file_path(request, site_id)
        await self._in_files(files.delete, path, _flag(request, "recursive"))
        return render_json(request, {"deleted": path})


#: What a new directory is counted as until the site is measured again (one block).
DIRECTORY_BYTES = 4096


def _growth(files: SiteFiles, path: str, size: int) -> int:
    """How much bigger the site gets when C{path} becomes C{size} bytes long."""
    try:
        entry = files.stat(path)
    except FileError:
        return size
    return size - entry.size if entry.type == "file" else size


def _chunks(stream: Any, size: int = 64 * 1024) -> Any:
    while True:
        data = stream.read(size)
        if not data:
            return
        yield data


def _write_all(files: SiteFiles, writer: ThreadWriter) -> int:
    count = write_archive(files, writer)  # type: ignore[arg-type]
    writer.flush()
    return count


def _zip_to_spool(files: SiteFiles, path: str) -> Any:
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    try:
        files.zip_dir(path, spool)  # type: ignore[arg-type]
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]


async def _send(request: Any, stream: Any) -> bytes:
    """Stream an open file to the client in chunks (the producer pauses with the transport)."""
    try:
        await FileSender().beginFileTransfer(stream, request)
    finally:
        stream.close()
    return b""
