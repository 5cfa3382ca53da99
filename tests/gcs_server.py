"""The tests' Google Cloud Storage server: gcp-storage-emulator, run as its own process.

    python tests/gcs_server.py --host 127.0.0.1 --port PORT

One fidelity fix, made in this server process: real GCS answers every object download with
`x-goog-generation` and `x-goog-metageneration` headers (the object's version), and
gcp-storage-emulator (2026.7) sends neither. tensorstore, which writes orbax's arrays, reads an
object's version from that header to chain its conditional writes (the OCDBT manifest of every
checkpoint); without it, it reads version 0 and its next write fails ("Malformed
StorageGeneration"). The values come from the emulator's own object record.
"""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # noqa: BLE001 - not found: the emulator already answered 404
        return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


objects.download = download_with_generation  # before the server module reads its routes

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    main(["start", "--in-memory", "-q", *sys.argv[1:]])
