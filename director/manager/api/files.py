"""A site's files (relayed to the orchestrator) and its logs."""

from __future__ import annotations

import io
import json
from typing import Any

from director.clients import OrchestratorClient
from director.common.client import connect_websocket, file_digest, stream_body
from director.common.guard import render_error
from director.common.web import path_after, render_json
from director.manager.access import authenticated
from director.manager.api.base import MAX_UPLOAD, APIError, ManagerBase, app, query, read_object
from director.manager.models import Site, User, public_error
from director.manager.openapi import is_set


class FileRoutes(ManagerBase):
    # -- files (relayed to the orchestrator) -----------------------------------------------------

    @staticmethod
    def _path_after(request: Any, name: str) -> str:
        try:
            return path_after(request, f"/api/v1/sites/{name}/files")
        except UnicodeDecodeError:
            raise APIError(400, "bad_path", "paths must be UTF-8") from None

    async def _writable(self, user: User, name: str) -> Site:
        """The site for a file write (as L{site_ready}); 409 while it is being moved."""
        site = await self.site_ready(user, name)
        op = await self.store.active_operation(site.id)
        if op is not None and op.type == "move_site":
            raise APIError(
                409,
                "being_moved",
                "the site is being moved to another server: its files cannot be changed "
                "until the move has finished",
                {"operation": op.to_json()},
            )
        return site

    async def _relay(
        self,
        request: Any,
        method: str,
        site: Site,
        path: str,
        directory: bool = False,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        body_file: Any = None,
        body_digest: str | None = None,
    ) -> bytes:
        """
        The orchestrator's answer to a file call, streamed to the client as it arrives (a
        download is never held whole; a slow client slows the orchestrator's side down).
        """
        response: Any = await self.pool.ready_client_for(site).files_request(
            method,
            site.id,
            path,
            directory=directory,
            json=json_body,
            params=params,
            body_file=body_file,
            body_digest=body_digest,
        )
        if response.code >= 400:
            # Refusals are small JSON: read whole, and told in words for the user.
            body: bytes = await response.content()
            try:
                found = json.loads(body)
                code, detail = str(found["error"]), str(found.get("message", ""))
            except (ValueError, KeyError, TypeError):
                code, detail = "error", ""
            status, public_code, message = public_error(response.code, code, detail)
            if (status, public_code, message) != (response.code, code, detail):
                self.log.warn(
                    "relayed call answered {status}: {body!r}", status=response.code, body=body
                )
            return render_error(request, status, public_code, message)
        request.setResponseCode(response.code)
        for header in (b"content-type", b"content-disposition"):
            values = response.headers.getRawHeaders(header)
            if values:
                request.setHeader(header, values[0])
        if isinstance(response.length, int):
            request.setHeader(b"content-length", str(response.length).encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-store")
        try:
            await stream_body(response, request, self._reactor)
        except Exception as e:
            # The status line has gone out: all that is left is to cut the transfer short.
            self.log.warn("a file transfer broke off: {e}", e=e)
            transport = getattr(request.channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return b""

    @app.route("/api/v1/sites/<name>/files/", methods=["GET"], branch=True)
    @authenticated()
    async def get_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_ready(user, name, change=False)
        path = self._path_after(request, name)
        args = query(request, "get", "/api/v1/sites/{name}/files/{path}")
        params = {"zip": "1"} if is_set(args["zip"]) else None
        return await self._relay(request, "GET", site, path, params=params)

    @app.route("/api/v1/sites/<name>/files/", methods=["PUT"], branch=True)
    @authenticated()
    async def put_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self._writable(user, name)
        path = self._path_after(request, name)
        length = request.getHeader(b"content-length")
        if length and length.isdigit() and int(length) > MAX_UPLOAD:
            raise APIError(413, "too_large", f"uploads are limited to {MAX_UPLOAD} bytes")
        # twisted.web has spooled a large body to a temporary file: it is hashed and sent on
        # from there in chunks, never read into memory whole.
        content = request.content if request.content is not None else io.BytesIO()
        content.seek(0, io.SEEK_END)
        if content.tell() > MAX_UPLOAD:
            raise APIError(413, "too_large", f"uploads are limited to {MAX_UPLOAD} bytes")
        args = query(request, "put", "/api/v1/sites/{name}/files/{path}")
        params = {"mode": args["mode"]} if args["mode"] else {}
        if is_set(args["exclusive"]):
            params["exclusive"] = "1"
        digest = await file_digest(self._reactor, content)
        answer = await self._relay(
            request,
            "PUT",
            site,
            path,
            directory=request.path.endswith(b"/"),
            params=params or None,
            body_file=content,
            body_digest=digest,
        )
        if self._disk is not None:
            self._disk.soon()  # disk_usage_bytes follows the write within seconds
        return answer

    @app.route("/api/v1/sites/<name>/files/", methods=["PATCH"], branch=True)
    @authenticated()
    async def patch_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self._writable(user, name)
        body = read_object(request, {"mode", "move_to"})
        return await self._relay(
            request,
            "PATCH",
            site,
            self._path_after(request, name),
            json_body=body,
        )

    @app.route("/api/v1/sites/<name>/files/", methods=["DELETE"], branch=True)
    @authenticated()
    async def delete_file(self, request: Any, user: User, name: str) -> bytes:
        site = await self._writable(user, name)
        args = query(request, "delete", "/api/v1/sites/{name}/files/{path}")
        params = {"recursive": "1"} if is_set(args["recursive"]) else None
        return await self._relay(
            request,
            "DELETE",
            site,
            self._path_after(request, name),
            params=params,
        )

    # -- logs ----------------------------------------------------------------------------------

    @app.route("/api/v1/sites/<name>/logs", methods=["GET"])
    @authenticated()
    async def logs(self, request: Any, user: User, name: str) -> bytes:
        site = await self.site_for(user, name)
        tail = query(request, "get", "/api/v1/sites/{name}/logs")["tail"] or 100
        if site.type != "dynamic":
            return render_json(request, {"lines": []})
        url = OrchestratorClient.websocket_url(
            self.pool.url_for(site), OrchestratorClient.logs_path(site.id, tail)
        )
        proto = await connect_websocket(self._reactor, self.signer, "orchestrator", url, timeout=10)
        lines: list[str] = []
        from twisted.internet.defer import TimeoutError as Timeout

        try:
            while len(lines) < tail:
                message = await proto.next_message(0.5 if lines else 3)
                lines.append(json.loads(message)["line"])
        except Timeout:
            pass
        finally:
            proto.sendClose(1000)
        return render_json(request, {"lines": lines})
