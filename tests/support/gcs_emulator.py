"""Run gcp-storage-emulator on loopback for the tests.

The emulator is a real HTTP server speaking the GCS JSON API (the same
google-cloud-storage client code paths run as against GCS). It lacks the
object generations the product relies on: preconditions (``ifGenerationMatch``),
which make the manifest publish and the output folder's lock safe against
concurrent writers, and reads of one generation, which pin a build to the
source it validated and a publication to the shard it verified. This launcher
adds them, with GCS's semantics, before starting the server: on uploads and
deletes (412 conditionNotMet; 0 means "must not exist"); on reads, the
object's metadata and its media (412 when the object exists at another
generation; 404 when it does not exist); reads and rewrites of one generation
(``generation``, ``sourceGeneration``: 404 once another generation is live, as
in a bucket without versioning); and rewrites with ``ifSourceGenerationMatch``
and, on their destination, ``ifGenerationMatch`` (412). A precondition is checked first: a read of generation G that must match
G answers 412 once G is replaced. Its HTTP server handles one request at a time, so the check and the
write are atomic, as they are on GCS.

Usage: python tests/support/gcs_emulator.py PORT
"""

from __future__ import annotations

import http.server
import logging
import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _current_generation(storage, bucket: str, name: str) -> int:
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return 0


def _precondition_failed(response) -> None:
    response.status = HTTPStatus.PRECONDITION_FAILED
    message = "At least one of the pre-conditions you specified did not hold."
    response.json(
        {
            "error": {
                "code": 412,
                "message": message,
                "errors": [{"reason": "conditionNotMet", "message": message}],
            }
        }
    )


def _holds(request, storage, bucket: str, name: str | None) -> bool:
    want = request.query.get("ifGenerationMatch")
    if not want or name is None:
        return True
    return _current_generation(storage, bucket, name) == int(want[0])


def _read_holds(request, storage, bucket: str, name: str) -> bool:
    """A read's precondition: only an existing object at another generation fails
    it (a missing one is the handler's 404, as on GCS)."""
    want = request.query.get("ifGenerationMatch")
    if not want:
        return True
    current = _current_generation(storage, bucket, name)
    return current == 0 or current == int(want[0])


def _gone(request, storage, bucket: str, name: str, param: str = "generation") -> bool:
    """A read of one generation (``generation=N``) that is no longer the live one:
    404 on GCS in a bucket without versioning, which keeps no old generations."""
    want = request.query.get(param)
    return bool(want) and _current_generation(storage, bucket, name) != int(want[0])


def _not_found(response) -> None:
    response.status = HTTPStatus.NOT_FOUND
    response.json({"error": {"code": 404, "message": "No such object."}})


_insert = objects.insert
_delete = objects.delete
_get = objects.get
_download = objects.download
_rewrite = objects.rewrite


def insert(request, response, storage, *args, **kwargs):
    upload = (request.query.get("uploadType") or [""])[0]
    name = None
    if "name" in request.query:
        name = request.query["name"][0]
    elif upload == "multipart" and isinstance(request.data, dict):
        name = request.data["meta"].get("name")
    elif upload == "resumable" and isinstance(request.data, dict):
        name = request.data.get("name")
    if not _holds(request, storage, request.params["bucket_name"], name):
        return _precondition_failed(response)
    return _insert(request, response, storage, *args, **kwargs)


def delete(request, response, storage, *args, **kwargs):
    if not _holds(request, storage, request.params["bucket_name"], request.params["object_id"]):
        return _precondition_failed(response)
    return _delete(request, response, storage, *args, **kwargs)


def get(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    if not _read_holds(request, storage, bucket, name):
        return _precondition_failed(response)
    if _gone(request, storage, bucket, name):
        return _not_found(response)
    return _get(request, response, storage, *args, **kwargs)


def download(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    if not _read_holds(request, storage, bucket, name):
        return _precondition_failed(response)
    if _gone(request, storage, bucket, name):
        return _not_found(response)
    return _download(request, response, storage, *args, **kwargs)


def rewrite(request, response, storage, *args, **kwargs):
    """A server-side copy: of ``sourceGeneration`` only (404 once replaced), and
    only if the source is at ``ifSourceGenerationMatch`` (412 otherwise)."""
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    want = request.query.get("ifSourceGenerationMatch")
    if want and _current_generation(storage, bucket, name) not in (0, int(want[0])):
        return _precondition_failed(response)
    dest = (request.params["dest_bucket_name"], request.params["dest_object_id"])
    if not _holds(request, storage, *dest):
        return _precondition_failed(response)
    if _gone(request, storage, bucket, name, "sourceGeneration"):
        return _not_found(response)
    return _rewrite(request, response, storage, *args, **kwargs)


objects.insert = insert
objects.delete = delete
objects.get = get
objects.download = download  # also what get() calls for alt=media
objects.rewrite = rewrite

# Its HTTPServer answers one request at a time and speaks HTTP/1.0 (a connection per
# request); socketserver's default listen backlog of 5 drops the connections of many
# concurrent clients (the build's ranged reads: 64 in flight), which then wait for TCP's
# 1 s retransmission. GCS accepts them all: so does the emulator, with a deep backlog.
http.server.HTTPServer.request_queue_size = 1024

from gcp_storage_emulator.server import create_server  # noqa: E402  (after the patch)


def main() -> None:
    port = int(sys.argv[1])
    logging.basicConfig(level=logging.CRITICAL)
    create_server("127.0.0.1", port, in_memory=True).run()


if __name__ == "__main__":
    main()
